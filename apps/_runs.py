"""What the explorer reads from run directories: the run root, artifact discovery and small file readers.

No Streamlit here (unit-tested on its own). Every path the user can choose goes through ``resolve_inside``
and every file the pages open goes through ``inside`` (the readers take the root for that): a symbolic link,
to a file or a directory, that resolves outside the run root is never followed, so the explorer never reads
outside the run root it was started on. Model specs go through ``check_model_spec``.

File names, the confinement checks, the tolerant readers and which command made a run come from
``workbench.runs`` (the owner of the run directory): this module adds the explorer's view on top.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench import DEFAULT_MODEL, WorkbenchError, runs
from workbench.runs import (
    ADAPTER_DIR,
    ANALYSIS_JSON,
    CONFIG_YAML,
    GATES_FILE,
    METRICS_JSONL,
    RANKED_JSONL,
    SUMMARY_JSON,
    SWEEP_CSV,
    RunDir,
)

ROOT_ENV = "WORKBENCH_RUN_ROOT"
RUN_ENV = "WORKBENCH_RUN_DIR"
MODELS_ENV = "WORKBENCH_APP_MODELS"
"""Extra model specs the explorer may load, one a line (``--model`` of ``workbench app`` sets them)."""
NETWORK_ENV = "WORKBENCH_APP_ALLOW_NETWORK"
"""``1``: the explorer may reach the model hub (``--allow-network``); otherwise it runs offline."""
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
MAKE_RUNS_HINT = (
    "Make runs first: `make demo` (or `workbench demo`) writes one into runs/, and `workbench extract-vector`, "
    "`sweep`, `train`, `eval` and `screen` write theirs with `--out runs/<name>`."
)
SMALL_N = 30
"""Estimates resting on fewer rows than this get a caveat on the Runs page."""
MAX_TREE_ENTRIES = 10_000
"""How many entries of an adapter or model folder are checked for links leaving the root."""
STATISTICS = ("response_avg", "prompt_avg", "prompt_last", "response_last")
"""The persona-vector statistics, in the order the pages offer them."""
MAX_DEPTH = runs.MAX_DEPTH
"""How deep below the chosen directory artifacts are looked for."""
MARKERS = (CONFIG_YAML, METRICS_JSONL, SUMMARY_JSON, SWEEP_CSV, RANKED_JSONL, ANALYSIS_JSON, GATES_FILE)


# ---------------------------------------------------------------------------------------- root and paths
@dataclass(frozen=True)
class Options:
    """The explorer's start-up options: run root, directory to open, allowed model specs, network."""

    root: Path
    run: Path | None = None
    models: tuple[str, ...] = ()
    allow_network: bool = False


def parse_options(argv: Sequence[str] | None = None) -> Options:
    """``--run-root`` / ``--run-dir`` / ``--model`` (repeatable) / ``--allow-network`` from the script
    arguments, else the environment (``WORKBENCH_RUN_ROOT``, ``WORKBENCH_RUN_DIR``, ``WORKBENCH_APP_MODELS``
    one spec a line, ``WORKBENCH_APP_ALLOW_NETWORK=1``), else ``./runs``, no extra model, offline."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run-root", default=None)
    parser.add_argument("--run-dir", default=None)
    parser.add_argument("--model", action="append", default=[])
    parser.add_argument("--allow-network", action="store_true")
    args, _ = parser.parse_known_args(list(argv) if argv is not None else [])
    root = args.run_root or os.environ.get(ROOT_ENV) or "runs"
    run = args.run_dir or os.environ.get(RUN_ENV) or None
    models = [m.strip() for m in args.model] or [
        line.strip() for line in os.environ.get(MODELS_ENV, "").splitlines()
    ]
    network = args.allow_network or os.environ.get(NETWORK_ENV, "").strip().lower() in ("1", "true", "yes")
    return Options(
        root=Path(root).expanduser().resolve(),
        run=Path(run).expanduser() if run else None,
        models=tuple(dict.fromkeys(m for m in models if m)),
        allow_network=bool(network),
    )


def parse_args(argv: Sequence[str] | None = None) -> tuple[Path, Path | None]:
    """``(run root, directory to open)`` of :func:`parse_options`."""
    opts = parse_options(argv)
    return opts.root, opts.run


def resolve_inside(root: Path, value: str | os.PathLike[str]) -> Path:
    """``value`` (relative to ``root``, or absolute) resolved; refused when it leaves ``root``."""
    root = Path(root).resolve()
    raw = Path(str(value).strip() or ".").expanduser()
    path = (raw if raw.is_absolute() else root / raw).resolve()
    if path != root and root not in path.parents:
        raise WorkbenchError(
            f"'{value}' is outside the run root '{root}'; the explorer only reads inside the directory "
            "it was started on"
        )
    return path


def rel(root: Path, path: Path) -> str:
    """``path`` relative to ``root`` ("." for the root itself)."""
    try:
        text = str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
    return text or "."


def inside(root: Path, path: str | os.PathLike[str]) -> Path | None:
    """``path`` with every symbolic link resolved, when that stays inside ``root``; else None.

    The one check before the explorer opens or lists anything (``workbench.runs.within``): a link (to a
    file or a directory) whose target lies outside the run root gives None, as do link loops and
    unreadable paths.
    """
    return runs.within(root, path)


def inside_file(root: Path, path: str | os.PathLike[str]) -> Path | None:
    """:func:`inside` for a regular file that exists (None for a missing file, a directory or a link out)."""
    return runs.within_file(root, path)


def inside_tree(root: Path, folder: str | os.PathLike[str]) -> Path | None:
    """``folder`` resolved when it and everything below it stay inside ``root`` (links included).

    Used for folders that another library reads whole (LoRA adapters, model folders): a single file linked
    from outside the root refuses the folder. None as well for a missing folder or one with more than
    ``MAX_TREE_ENTRIES`` entries.
    """
    return runs.within_tree(root, folder, MAX_TREE_ENTRIES)


# ---------------------------------------------------------------------------------------- small readers
def _checked(path: Path, root: Path | None) -> Path | None:
    """``path`` itself without a root; with one, :func:`inside_file` (None: treat the file as missing)."""
    return Path(path) if root is None else inside_file(root, path)


def read_json(path: Path, root: Path | None = None) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing, unreadable or (given ``root``) links outside it."""
    real = _checked(path, root)
    return runs.read_json(real) if real is not None else None


def read_jsonl(path: Path, root: Path | None = None) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (unreadable lines, such as one cut by a crash, are skipped); no rows
    when the file is missing or (given ``root``) links outside it."""
    real = _checked(path, root)
    return runs.read_jsonl(real) if real is not None else []


def read_yaml(path: Path, root: Path | None = None) -> dict[str, Any] | None:
    """A YAML mapping (``safe_load``), or None like :func:`read_json`."""
    real = _checked(path, root)
    return runs.read_yaml(real) if real is not None else None


def artifact_kind(path: Path) -> str:
    """The workbench artifact kind in a safetensors header ("" for a foreign or unreadable file)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # damaged or foreign files are simply not artifacts
        return ""
    return str(meta.get("workbench.kind", ""))


def mtime(path: Path) -> float:
    """Modification time, used to key caches (0 when missing)."""
    try:
        return Path(path).stat().st_mtime
    except OSError:
        return 0.0


# ---------------------------------------------------------------------------------------- discovery
@dataclass
class Found:
    """Artifacts found under one directory (paths are absolute and resolved; lists are sorted).

    ``outside`` lists the links that were not followed because their target lies outside the run root
    (not counted as artifacts).
    """

    vectors: list[Path] = field(default_factory=list)  # persona_vector .safetensors files
    sweeps: list[Path] = field(default_factory=list)  # folders with sweep summary.json / sweep.csv
    gates: list[Path] = field(default_factory=list)  # gates .safetensors files
    analyses: list[Path] = field(default_factory=list)  # gate analysis.json files
    trainings: list[Path] = field(default_factory=list)  # folders with metrics.jsonl
    evals: list[Path] = field(default_factory=list)  # folders with an eval summary.json
    screens: list[Path] = field(default_factory=list)  # folders with ranked.jsonl + screen summary.json
    adapters: list[Path] = field(default_factory=list)  # PEFT adapter folders
    outside: list[Path] = field(default_factory=list)  # links leaving the run root, not followed

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items() if k != "outside"}


def _walk(top: Path, depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Directories under ``top`` (``top`` included), skipping hidden, checkpoint and adapter folders and
    every symbolically linked directory (``workbench.runs.walk_dirs``)."""
    return runs.walk_dirs(top, depth)


def _artifact_files(folder: Path, root: Path, outside: list[Path]) -> dict[str, Path]:
    """The marker and ``.safetensors`` files of ``folder`` that resolve inside ``root``, by name (resolved).

    A link whose target is outside the root is left out and noted in ``outside``.
    """
    out: dict[str, Path] = {}
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return out
    for entry in entries:
        if entry.name not in MARKERS and not entry.name.endswith(".safetensors"):
            continue
        real = inside_file(root, entry)
        if real is not None:
            out[entry.name] = real
        elif entry.is_symlink():
            outside.append(entry)
    return out


def scan(top: Path, root: Path | None = None) -> Found:
    """Every artifact the pages can show, under ``top`` (at most ``MAX_DEPTH`` folders deep).

    Only files and folders that resolve inside ``root`` (default: ``top``) are looked at; links leaving it
    are listed in ``Found.outside`` and otherwise ignored.
    """
    root = Path(root if root is not None else top).resolve()
    found = Found()
    for folder in _walk(Path(top)):
        if inside(root, folder) is None:
            continue
        files = _artifact_files(folder, root, found.outside)
        # the manifest says which command made the run; runs made before it are sniffed (RunDir.kind)
        kind = RunDir(folder, root=root).kind if SUMMARY_JSON in files or SWEEP_CSV in files else ""
        if kind == "eval" and SUMMARY_JSON in files:
            found.evals.append(folder)
        elif kind == "sweep" or (SWEEP_CSV in files and kind not in ("eval", "screen")):
            found.sweeps.append(folder)
        elif kind == "screen" and SUMMARY_JSON in files and RANKED_JSONL in files:
            found.screens.append(folder)
        if METRICS_JSONL in files:
            found.trainings.append(folder)
        if ANALYSIS_JSON in files:
            found.analyses.append(files[ANALYSIS_JSON])
        adapter = folder / ADAPTER_DIR
        if (adapter / "adapter_config.json").exists():
            real = inside_tree(root, adapter)
            if real is not None:
                found.adapters.append(real)
            else:
                found.outside.append(adapter)
        for name, real in files.items():
            if not name.endswith(".safetensors"):
                continue
            art = artifact_kind(real)
            if art == "persona_vector":
                found.vectors.append(real)
            elif art == "gates":
                found.gates.append(real)
    for key in found.__dict__:
        setattr(found, key, list(dict.fromkeys(getattr(found, key))))
    return found


def list_run_dirs(root: Path) -> list[Path]:
    """The root and every folder under it that holds a run artifact (the sidebar's choices)."""
    out = [Path(root).resolve()]
    for folder in _walk(out[0]):
        if folder == out[0]:
            continue
        if _artifact_files(folder, out[0], []):
            out.append(folder)
    return out


def _config_model(folder: Path, root: Path) -> str | None:
    cfg = RunDir(folder, root=root).config()
    if cfg and isinstance(cfg.get("model"), str) and cfg["model"].strip():
        return cfg["model"].strip()
    return None


def model_spec_for(folder: Path, root: Path) -> str | None:
    """The ``model`` of the nearest ``config.yaml`` from ``folder`` up to ``root`` (None if there is none)."""
    root = Path(root).resolve()
    here = Path(folder).resolve()
    while True:
        if root not in here.parents and here != root:
            return None
        spec = _config_model(here, root)
        if spec:
            return spec
        if here == root:
            return None
        here = here.parent


def find_model_spec(folder: Path, root: Path) -> str | None:
    """The model of the nearest ``config.yaml`` at or above ``folder``, else of the first one below it."""
    spec = model_spec_for(folder, root)
    if spec:
        return spec
    for sub in _walk(Path(folder)):
        spec = _config_model(sub, root)
        if spec:
            return spec
    return None


def rows_path(vector_file: Path) -> Path:
    """Where ``extract-vector`` writes its per-answer rows: ``<stem>_rows.jsonl`` beside the vector."""
    return vector_file.with_name(f"{vector_file.stem}_rows.jsonl")


# ---------------------------------------------------------------------------------------- models
def check_model_spec(spec: str, root: Path, allowed: Sequence[str] = ()) -> str:
    """The spec to hand to ``load_model`` when the explorer may load it; ``WorkbenchError`` otherwise.

    Allowed: a spec given on the explorer's command line (``workbench app --model SPEC``, exactly as
    given), the embedded default (``workbench.DEFAULT_MODEL``), ``random:<shape>`` (random weights: nothing is read),
    and a model folder inside the run root (relative to the root, or absolute) with no link leaving the
    root, returned as its absolute path. Anything else (another folder on disk, a hub id from a run's
    ``config.yaml``) is refused before anything is read or downloaded.
    """
    text = str(spec).strip()
    if not text:
        raise WorkbenchError("the model spec is empty")
    if text in allowed or text == DEFAULT_MODEL or text.startswith("random:"):
        return text
    raw = Path(text).expanduser()
    real = inside(root, raw if raw.is_absolute() else Path(root) / raw)
    if real is not None and real.is_dir():
        if inside_tree(root, real) is None:
            raise WorkbenchError(
                f"model folder '{text}' links to files outside the run root (or holds more than "
                f"{MAX_TREE_ENTRIES} entries); the explorer does not load it"
            )
        return str(real)
    raise WorkbenchError(
        f"model '{text}' is not allowed here: the explorer loads only {DEFAULT_MODEL}, random:<shape>, a "
        f"model folder inside the run root, and the specs given when it was started (workbench app "
        f"RUN_DIR --model SPEC)"
    )


# ---------------------------------------------------------------------------------------- eval summaries
LOWER_IS_BETTER = (
    "misaligned",
    "incoherent",
    "sycophancy",
    "preference_gap",
    "preferring_misaligned",
    "loss",
)


def higher_is_better(metric: str) -> bool:
    """Direction of a metric by its name (rates of bad behaviour and losses: lower is better)."""
    return not any(word in metric for word in LOWER_IS_BETTER)


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(float(value)) else None


def _estimate(value: Any) -> dict[str, Any] | None:
    """An estimate as ``{value, low, high, n, method, interval, unclassified}``; None if not a metric.

    ``value``/``low``/``high`` are None where the file has ``null`` (no data) or NaN; a bare number is a
    point estimate (``interval`` False, ``n`` None).
    """
    if isinstance(value, dict) and "value" in value:
        n = _finite(value.get("n"))
        low, high = _finite(value.get("low")), _finite(value.get("high"))
        return {
            "value": _finite(value.get("value")),
            "low": low,
            "high": high,
            "n": int(n) if n is not None and n >= 0 else 0,
            "method": str(value.get("method") or ""),
            "interval": low is not None and high is not None,
            "unclassified": int(_finite(value.get("unclassified")) or 0),
        }
    number = _finite(value)
    if number is None:
        return None
    return {"value": number, "low": None, "high": None, "n": None, "method": "", "interval": False,
            "unclassified": 0}  # fmt: skip


def eval_metrics(summary: dict[str, Any], *, with_empty: bool = False) -> dict[str, dict[str, Any]]:
    """``{"<set>/<metric>": estimate}`` (see ``_estimate``) from an eval ``summary.json``.

    Estimates without a value (no data: ``null`` or NaN in the file) are left out unless ``with_empty``.
    """
    out: dict[str, dict[str, Any]] = {}
    sets = summary.get("sets") if isinstance(summary, dict) else None
    for set_name, result in (sets if isinstance(sets, dict) else {}).items():
        if not isinstance(result, dict):
            continue
        for key, value in result.items():
            if key in ("rows", "kind", "judge", "per_question", "by_category"):
                continue
            est = _estimate(value)
            if est is not None and (with_empty or est["value"] is not None):
                out[f"{set_name}/{key}"] = est
    return out


def estimate_note(est: dict[str, Any]) -> str:
    """A caveat for the Runs page table ("" when the estimate needs none)."""
    notes = []
    n = est.get("n")
    if est.get("value") is None or n == 0:
        notes.append("no data (n = 0)")
    elif n is None:
        notes.append("point value, no interval or n recorded")
    elif n < SMALL_N:
        notes.append(f"small sample (n = {n} < {SMALL_N}): the interval is rough")
    if est.get("interval") and est.get("value") is not None and n:
        if est["low"] == est["high"] and est.get("method") != "wilson":
            notes.append("zero-width interval (no or only events; no Wilson bound recorded)")
        if est.get("method") == "wilson":
            notes.append("Wilson bound: treats answers as independent")
    elif est.get("value") is not None and n:
        notes.append("no interval recorded")
    if est.get("unclassified"):
        notes.append(f"{est['unclassified']} unclassified replies left out")
    return "; ".join(notes)


def _number(text: str) -> float | int | None:
    if not isinstance(text, str) or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_sweep(folder: Path, root: Path | None = None) -> dict[str, Any] | None:
    """A sweep's ``summary.json`` (cells, recommended layer, rule, config), or its cells from ``sweep.csv``.

    Given ``root``, files linking outside it are treated as missing.
    """
    run = RunDir(folder, root=root)
    summary = run.summary()
    if summary is not None and run.kind == "sweep":
        return summary
    path = _checked(folder / SWEEP_CSV, root)
    if path is None or not path.is_file():
        return None
    import csv

    try:
        with open(path, encoding="utf-8", newline="") as fh:
            cells = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    cells = [c for c in cells if c.get("layer") is not None and c.get("alpha") is not None]
    if not cells:
        return None
    return {"recommended_layer": None, "rule": "", "gains": {}, "config": {}, "cells": cells}
