"""What a worker does for one cell: its fine-tune, then its evaluations, each an ordinary ``workbench`` command
(so each run's manifest holds the command that reproduces it alone). Finished runs are skipped; a run that
was interrupted is continued with ``--resume``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any

from workbench import WorkbenchError
from workbench.runs import CELLS_DIR, CELLS_JSON, CONFIGS_DIR, RunDir, is_locked, lock_run_dir, unlock_run_dir

from ._spec import eval_dir, train_dir

CELL_STATES = ("done", "running", "failed", "interrupted", "pending")


def read_cells(study_dir: str | Path) -> dict[str, Any]:
    """``cells.json`` of a study (``{"study", "grid_keys", "cells": [...]}``)."""
    path = Path(study_dir) / CELLS_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkbenchError(
            f"'{study_dir}' is not a study directory: cannot read {CELLS_JSON} ({exc})"
        ) from None


def run_state(path: Path) -> str:
    """``done`` / ``running`` / ``failed`` / ``interrupted`` / ``pending`` of one run directory."""
    if not path.is_dir() or not any(path.iterdir()):
        return "pending"
    run = RunDir(path)
    status = run.status
    if status == "finished":
        return "done"
    if status == "running":
        return "running"
    if status == "failed":
        return "failed"
    return "interrupted"  # killed, stopped (a stop file or signal) or made before the manifest


def cell_runs(study_dir: str | Path, cell: dict[str, Any]) -> list[tuple[str, Path, list[str]]]:
    """``(name, run directory, workbench arguments)`` of every run of a cell, in the order they run."""
    study_dir = Path(study_dir)
    runs: list[tuple[str, Path, list[str]]] = []
    if cell["train"]:
        cfg = study_dir / CONFIGS_DIR / f"{cell['id']}.yaml"
        tdir = train_dir(study_dir, cell["id"])
        procs = int(cell.get("processes") or 1)
        if procs > 1:  # the documented multi-process launch (docs/training.md)
            argv = [
                "torchrun",
                "--standalone",
                "--nproc_per_node",
                str(procs),
                "-m",
                "workbench.training._launch",
            ]
            runs.append(("train", tdir, [*argv, str(cfg), "--out", str(tdir), "--quiet"]))
        else:
            runs.append(("train", tdir, ["train", str(cfg), "--out", str(tdir)]))
    for ename, args in cell["evals"].items():
        edir = eval_dir(study_dir, cell["id"], ename)
        runs.append((f"eval:{ename}", edir, ["eval", *args, "--out", str(edir)]))
    return runs


def cell_dir(study_dir: str | Path, cid: str) -> Path:
    return Path(study_dir) / CELLS_DIR / cid


def cell_state(study_dir: str | Path, cell: dict[str, Any]) -> str:
    """A cell is ``running`` while a worker holds its lock (``cells/<id>/.lock``), ``done`` when all its runs
    are, else ``failed`` / ``interrupted`` when one is."""
    if is_locked(cell_dir(study_dir, cell["id"])):
        return "running"
    return combine_states([run_state(path) for _, path, _ in cell_runs(study_dir, cell)])


def combine_states(states: list[str]) -> str:
    """A cell's state from its runs' states: ``failed`` / ``running`` / ``interrupted`` when one run is,
    ``done`` when all are, ``interrupted`` when some are done, else ``pending``."""
    for s in ("failed", "running", "interrupted"):
        if s in states:
            return s
    if states and all(s == "done" for s in states):
        return "done"
    return "interrupted" if "done" in states else "pending"


def cell_states(study_dir: str | Path) -> dict[str, str]:
    """Cell id -> ``done`` | ``running`` | ``failed`` | ``interrupted`` | ``pending``, from the runs' manifests."""
    return {c["id"]: cell_state(study_dir, c) for c in read_cells(study_dir)["cells"]}


def _workbench(argv: list[str], run: Path) -> None:
    """Run one ``workbench`` command in this process, as the console script does; a failure raises with the
    error its manifest recorded."""
    from workbench.cli import main

    old = sys.argv
    sys.argv = ["workbench", *argv]
    try:
        main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            why = (RunDir(run).manifest() or {}).get("error") or f"exit code {exc.code}"
            raise WorkbenchError(f"workbench {argv[0]} ({run}): {why}") from None
    finally:
        sys.argv = old


def _torchrun(argv: list[str], run: Path) -> None:
    """Run a multi-process training (``torchrun ...``) as a child of this worker."""
    import subprocess

    cmd = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        why = (RunDir(run).manifest() or {}).get("error") or f"exit code {done.returncode}"
        raise WorkbenchError(f"torchrun training ({run}): {why}")


def run_cell(study_dir: str, cell_id: str, threads: int = 1) -> str:
    """Run (or continue) one cell; called in a worker process by the engine. Returns the cell id."""
    with contextlib.suppress(Exception):
        import torch

        torch.set_num_threads(max(1, int(threads)))
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    cells = {c["id"]: c for c in read_cells(study_dir)["cells"]}
    cell = cells[cell_id]
    folder = cell_dir(study_dir, cell_id)
    folder.mkdir(parents=True, exist_ok=True)
    lock_run_dir(folder)  # the whole cell is this worker's: another driver's worker waits for it
    try:
        _run_cell_runs(study_dir, cell)
    finally:
        unlock_run_dir(folder)
    return cell_id


def _run_cell_runs(study_dir: str, cell: dict[str, Any]) -> None:
    cell_id = cell["id"]
    for name, path, argv in cell_runs(study_dir, cell):
        state = run_state(path)
        if state == "done":
            continue
        if state == "running":
            raise WorkbenchError(f"cell {cell_id}: {name} run '{path}' is being written by another process")
        extra = ["--resume"] if state != "pending" else []
        if argv[0] == "torchrun":
            print(f"[{cell_id}] {name}: {' '.join(argv)}", flush=True)  # noqa: T201 - the job's log
            _torchrun(argv + extra, path)
        else:
            print(f"[{cell_id}] {name}: workbench {' '.join(argv)}", flush=True)  # noqa: T201 - the job's log
            _workbench(argv + extra, path)
