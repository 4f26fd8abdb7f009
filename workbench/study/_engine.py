"""The driver of a study: prepares the study directory, then hands the cells to submitit, keeping at most
``workers`` in flight, and writes the tables when they are done.

Why submitit (docs/studies.md): one small pure-Python package, kept by Meta's research teams, whose local
executor runs each cell in its own process here and whose SLURM executor runs the same function as one job per
cell on a cluster, with logs and tracebacks per job. Ray was tried and left: a 240 MB install that starts a
cluster, writes ~/.ray, and kills its workers with the driver.

Resumption never depends on the engine's memory: the state of a cell is read from its runs' manifests
(``workbench.runs``), so a driver killed with SIGKILL is resumed by running the same command with ``--resume``:
finished runs are skipped, interrupted ones continue from their checkpoints, and a run still being written by a
worker of the killed driver (its lock is held) is waited for, never started twice.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from workbench import WorkbenchError
from workbench.io import atomic_write_json, atomic_write_text, load_yaml_value
from workbench.runs import (
    CELLS_JSON,
    CONFIGS_DIR,
    STUDY_YAML,
    SUBMITIT_DIR,
    RunDir,
    prepare_run_dir,
    write_config,
)

from ._cells import cell_runs, cell_state, read_cells, run_cell
from ._spec import BASELINE, Cell, Study, data_path, expand, load_study, substitute_data

EXECUTORS = ("local", "slurm", "debug")
#: study keys that only shape the tables (no run depends on them): ``--resume`` may change them
SUMMARY_KEYS = ("description", "reference", "pareto", "recommend")
POLL_S = 1.0


def _echo(msg: str) -> None:
    print(msg, flush=True)  # noqa: T201 - the driver's progress


def _yaml_text(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def cell_config(study: Study, cell: Cell, study_dir: Path) -> dict[str, Any]:
    """The resolved training config of a cell: the base config with the cell's grid values and seed."""
    from workbench.training import TrainConfig

    base = substitute_data(dict(study.train), study_dir)
    if study.report_to:
        base["report_to"] = list(study.report_to)
    cfg = TrainConfig.from_dict(base, where=f"{study.path}: train")
    items = [f"{k}={_yaml_text(v)}" for k, v in cell.overrides.items()]
    try:
        cfg = cfg.apply_overrides(items)
    except WorkbenchError as exc:
        raise WorkbenchError(f"{study.path}: cell {cell.id}: {exc}") from None
    return cfg.to_dict()


def _make_data(study: Study, study_dir: Path, echo: Callable[[str], None]) -> None:
    from workbench.data import make_dataset, render_dataset

    for name, spec in study.data.items():
        path = data_path(study_dir, name)
        if path.is_file():
            continue
        rows = make_dataset(spec["make"], seed=int(spec.get("seed", 0)), n=spec.get("n"))
        dropped = 0
        if spec.get("exclude"):
            ex = spec["exclude"]
            seen = {
                _prompt_key(r) for r in make_dataset(ex["make"], seed=int(ex.get("seed", 0)), n=ex.get("n"))
            }
            kept = [r for r in rows if _prompt_key(r) not in seen]
            dropped = len(rows) - len(kept)
            rows = kept
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, render_dataset(spec["make"], rows))
        echo(
            f"data {name}: {len(rows)} rows of {spec['make']} -> {path}"
            + (f" ({dropped} excluded)" if dropped else "")
        )


def _prompt_key(row: dict[str, Any]) -> str:
    msgs = row.get("messages")
    if isinstance(msgs, list):
        return "\n".join(str(m.get("content")) for m in msgs if m.get("role") != "assistant")
    return str(row.get("question") or row.get("prompt") or row)


def prepare_study(
    study_file: str | Path,
    out: str | Path | None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    echo: Callable[[str], None] = _echo,
) -> tuple[Path, Study, list[Cell]]:
    """Check the study file and every cell's config, then create (or reopen) the study directory."""
    study = load_study(study_file)
    resolved = study.resolved()
    # every cell's config is checked before anything is written
    if out is None:
        out = Path("runs") / f"study-{study.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    probe = Path(out).absolute()
    configs = {c.id: cell_config(study, c, probe) for c in expand(study, probe) if c.train}
    path = prepare_run_dir(
        out,
        "study",
        resume=resume,
        overwrite=overwrite,
        inputs=[str(study.path)],
        config=resolved,
        resume_free=SUMMARY_KEYS,
    )
    path = path.resolve()  # manifests and cells.json name absolute paths: each run reproduces from anywhere
    cells = expand(study, path)
    configs = {c.id: cell_config(study, c, path) for c in cells if c.train}
    write_config(path, resolved)
    atomic_write_text(path / STUDY_YAML, yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True))
    (path / CONFIGS_DIR).mkdir(exist_ok=True)
    for cid, cfg in configs.items():
        atomic_write_text(
            path / CONFIGS_DIR / f"{cid}.yaml", yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        )
    atomic_write_json(
        path / CELLS_JSON,
        {"study": study.name, "grid_keys": study.grid_keys, "cells": [c.as_dict() for c in cells]},
    )
    _make_data(study, path, echo)
    return path, study, cells


def _executor(kind: str, folder: Path, options: dict[str, Any]) -> Any:
    import submitit

    if kind not in EXECUTORS:
        raise WorkbenchError(f"--executor '{kind}' is not one of {', '.join(EXECUTORS)}")
    try:
        ex = submitit.AutoExecutor(folder=folder, cluster=kind)
    except (RuntimeError, ValueError, OSError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise WorkbenchError(f"--executor {kind}: {first}") from None
    params: dict[str, Any] = {"timeout_min": 60 * 24 * 7, "name": "workbench-study"}
    params.update(options)
    try:
        ex.update_parameters(**params)
    except (ValueError, TypeError, AssertionError, NameError) as exc:
        first = (str(exc).splitlines() or [""])[0]
        raise WorkbenchError(f"--engine-option: {first}") from None
    return ex


def parse_engine_options(items: Sequence[str]) -> dict[str, Any]:
    """``key=value`` items (values read as YAML) for submitit's ``update_parameters``."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise WorkbenchError(f"--engine-option {item!r}: expected key=value, e.g. slurm_partition=gpu")
        k, v = item.split("=", 1)
        out[k.strip()] = load_yaml_value(v) if v.strip() else None
    return out


def _job_error(job: Any, state: str, study_dir: Path, cell: dict[str, Any]) -> str | None:
    """None when the cell is done, else one line on why, from the runs' manifests or the job's log.

    The driver reads no pickle: the outcome comes from the cell's run manifests (what ``--resume`` trusts too)
    and, for an error outside any run, from the job's text log. (submitit's debug executor runs the cell
    in this process when its result is asked for, so only there is ``result()`` called.)
    """
    if type(job).__name__ == "DebugJob":
        try:
            job.result()
        except Exception as exc:  # the cell's own error, raised in this process
            return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:300]}"
        return None if state == "done" else f"ended with state {state}"
    if state == "done":
        return None
    log = getattr(getattr(job, "paths", None), "stderr", None)
    where = f" (log: {log})" if log else ""
    for name, run, _ in cell_runs(study_dir, cell):
        error = (RunDir(run).manifest() or {}).get("error")
        if error:
            return f"{name}: {str(error)[:400]}{where}"
    lines: list[str] = []
    if log is not None:
        with contextlib.suppress(OSError):
            lines = [ln for ln in Path(log).read_text(errors="replace").splitlines() if ln.strip()]
    tail = next((ln for ln in reversed(lines) if "Error" in ln or "error:" in ln), "")
    if not tail:
        tail = f"the worker ended without finishing the cell (state {state}; killed?)"
    return tail.strip()[:400] + where


def run_study(
    study_file: str | Path,
    out: str | Path | None = None,
    *,
    workers: int = 1,
    executor: str = "local",
    resume: bool = False,
    overwrite: bool = False,
    threads: int | None = None,
    gpus_per_cell: int = 0,
    engine_options: dict[str, Any] | None = None,
    echo: Callable[[str], None] = _echo,
) -> tuple[Path, dict[str, str]]:
    """Run every cell not done yet (at most ``workers`` at once), then write the tables and the report.

    Returns the study directory and the failures (cell id -> one line); the tables hold what finished.
    """
    if workers < 1:
        raise WorkbenchError(f"--workers must be >= 1, got {workers}")
    if gpus_per_cell < 0:
        raise WorkbenchError(f"--gpus-per-cell must be >= 0, got {gpus_per_cell}")
    if out is None:
        out = Path("runs") / f"study-{load_study(study_file).name}-{time.strftime('%Y%m%d-%H%M%S')}"
    # the engine and its options are checked before anything is written (submitit creates its folder later)
    made = [p for p in (Path(out), Path(out) / SUBMITIT_DIR) if not p.exists()]
    try:
        ex = _executor(executor, Path(out).absolute() / SUBMITIT_DIR, dict(engine_options or {}))
        path, study, cells = prepare_study(study_file, out, resume=resume, overwrite=overwrite, echo=echo)
    except WorkbenchError:
        for p in reversed(made):  # submitit made its (empty) folder: a refusal leaves nothing behind
            with contextlib.suppress(OSError):
                p.rmdir()
        raise
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // workers)
    # inherited by the workers (two threads each on 2 cores made decoding 8-20x slower)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if study.report_to:  # the cells' tracker runs are grouped under the study's name (unless the user chose)
        os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", study.name)
        os.environ.setdefault("WANDB_RUN_GROUP", study.name)
        os.environ.setdefault("WANDB_PROJECT", study.name)
    gpu_slots: list[list[int]] = []
    if gpus_per_cell and executor == "local":
        import torch

        n = torch.cuda.device_count()
        if n < gpus_per_cell:
            raise WorkbenchError(f"--gpus-per-cell {gpus_per_cell}: this machine has {n} GPU(s)")
        gpu_slots = [
            list(range(i, i + gpus_per_cell)) for i in range(0, n - gpus_per_cell + 1, gpus_per_cell)
        ]
        workers = min(workers, len(gpu_slots))
    elif gpus_per_cell:
        ex.update_parameters(gpus_per_node=gpus_per_cell)

    by_id = {c["id"]: c for c in read_cells(path)["cells"]}
    states = {cid: cell_state(path, c) for cid, c in by_id.items()}
    done = {cid for cid, s in states.items() if s == "done"}
    echo(
        f"study {study.name}: {len(by_id)} cells ({len(done)} done), {workers} worker(s) on the {executor} "
        f"executor, {threads} thread(s) each -> {path}"
    )
    todo = [cid for cid in by_id if cid not in done]
    failed: dict[str, str] = {}
    in_flight: dict[str, tuple[Any, list[int]]] = {}
    waiting_on_others: set[str] = set()
    from tqdm.auto import tqdm

    bar = tqdm(total=len(by_id), initial=len(done), desc=f"study {study.name}", unit="cell")
    try:
        while todo or in_flight or waiting_on_others:
            # a run still written by a worker of an earlier (killed) driver: wait for it, never start it twice
            for cid in list(waiting_on_others):
                s = cell_state(path, by_id[cid])
                if s != "running":
                    waiting_on_others.discard(cid)
                    if s == "done":
                        done.add(cid)
                        bar.update(1)
                    else:
                        todo.append(cid)
            for cid, (job, slot) in list(in_flight.items()):
                if not job.done():
                    continue
                del in_flight[cid]
                if slot:
                    gpu_slots.append(slot)
                err = _job_error(job, cell_state(path, by_id[cid]), path, by_id[cid])
                if err is None:
                    done.add(cid)
                    bar.update(1)
                else:
                    failed[cid] = err or f"ended with state {cell_state(path, by_id[cid])}"
                    bar.write(f"cell {cid} failed: {failed[cid]}")
            for cid in list(todo):
                if len(in_flight) >= workers:
                    break
                needs = by_id[cid]["needs"]
                if any(n in failed for n in needs):
                    todo.remove(cid)
                    failed[cid] = (
                        f"not run: it needs {', '.join(n for n in needs if n in failed)}, which failed"
                    )
                    bar.write(f"cell {cid} {failed[cid]}")
                    continue
                if not all(n in done for n in needs):
                    continue
                todo.remove(cid)
                if cell_state(path, by_id[cid]) == "running":
                    waiting_on_others.add(cid)
                    bar.write(f"cell {cid}: a run is still being written by another process; waiting for it")
                    continue
                slot: list[int] = []
                if gpu_slots:
                    slot = gpu_slots.pop(0)
                    ex.update_parameters(gpus_per_node=len(slot), visible_gpus=slot)
                job = ex.submit(run_cell, str(path), cid, threads)
                in_flight[cid] = (job, slot)
            if todo and not in_flight and not waiting_on_others:
                stuck = [c for c in todo if not all(n in done for n in by_id[c]["needs"])]
                if stuck and len(stuck) == len(todo):
                    raise WorkbenchError(f"cells {', '.join(stuck)} wait for cells that never ran")
            if in_flight or waiting_on_others:
                time.sleep(POLL_S)
    finally:
        bar.close()
    from ._results import write_tables

    write_tables(path, echo=echo)
    return path, failed


def status_lines(study_dir: str | Path) -> list[str]:
    """The grid with each cell's state and, for a cell that is not done, its runs' states."""
    from workbench.runs import RunDir

    from ._cells import cell_runs, run_state

    study_dir = Path(study_dir)
    info = read_cells(study_dir)
    keys = info["grid_keys"]
    rows = []
    counts: dict[str, int] = {}
    for c in info["cells"]:
        state = cell_state(study_dir, c)
        counts[state] = counts.get(state, 0) + 1
        detail = []
        if state != "done":
            for name, rpath, _ in cell_runs(study_dir, c):
                rs = run_state(rpath)
                err = ((RunDir(rpath).manifest() or {}).get("error") or "") if rs == "failed" else ""
                detail.append(f"{name} {rs}" + (f" ({err})" if err else ""))
        rows.append(
            [
                *(c["values"].get(k, "") for k in keys),
                "-" if c["seed"] is None else str(c["seed"]),
                state,
                "; ".join(detail),
            ]
        )
    head = [*keys, "seed", "state", "runs not done"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head) - 1)]
    lines = [
        ("  ".join(str(v).ljust(w) for v, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]).rstrip()
        for r in [head, *rows]
    ]
    summary = ", ".join(
        f"{counts[s]} {s}" for s in ("done", "running", "failed", "interrupted", "pending") if s in counts
    )
    return [f"study {info['study']} ({study_dir}): {len(info['cells'])} cells: {summary}", *lines]


__all__ = [
    "BASELINE",
    "EXECUTORS",
    "cell_config",
    "parse_engine_options",
    "prepare_study",
    "run_study",
    "status_lines",
]
