"""What the explorer reads from run directories: the run root, artifact discovery and small file readers.

No Streamlit here (unit-tested on its own). Every path the user can choose goes through ``resolve_inside``:
the explorer never reads outside the run root it was started on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench import WorkbenchError

ROOT_ENV = "WORKBENCH_RUN_ROOT"
RUN_ENV = "WORKBENCH_RUN_DIR"
DEFAULT_MODEL = "smollm2-135m"
STATISTICS = ("response_avg", "prompt_avg", "prompt_last")
"""The persona-vector statistics, in the order the pages offer them."""
MAX_DEPTH = 4
"""How deep below the chosen directory artifacts are looked for."""
SKIP_DIRS = {"adapter", "checkpoints", "judge_cache", "__pycache__", "node_modules"}
MARKERS = (
    "config.yaml",
    "metrics.jsonl",
    "summary.json",
    "sweep.csv",
    "ranked.jsonl",
    "analysis.json",
    "gates.safetensors",
)


# ---------------------------------------------------------------------------------------- root and paths
def parse_args(argv: Sequence[str] | None = None) -> tuple[Path, Path | None]:
    """``--run-root`` / ``--run-dir`` from the script arguments, else the environment, else ``./runs``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--run-root", default=None)
    parser.add_argument("--run-dir", default=None)
    args, _ = parser.parse_known_args(list(argv) if argv is not None else [])
    root = args.run_root or os.environ.get(ROOT_ENV) or "runs"
    run = args.run_dir or os.environ.get(RUN_ENV) or None
    return Path(root).expanduser().resolve(), (Path(run).expanduser() if run else None)


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


# ---------------------------------------------------------------------------------------- small readers
def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file (unreadable lines, such as one cut by a crash, are skipped)."""
    rows: list[dict[str, Any]] = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return rows
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            rows.append(obj)
    return rows


def read_yaml(path: Path) -> dict[str, Any] | None:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


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
    """Artifacts found under one directory (paths are absolute; lists are sorted)."""

    vectors: list[Path] = field(default_factory=list)  # persona_vector .safetensors files
    sweeps: list[Path] = field(default_factory=list)  # folders with sweep summary.json / sweep.csv
    gates: list[Path] = field(default_factory=list)  # gates .safetensors files
    analyses: list[Path] = field(default_factory=list)  # gate analysis.json files
    trainings: list[Path] = field(default_factory=list)  # folders with metrics.jsonl
    evals: list[Path] = field(default_factory=list)  # folders with an eval summary.json
    screens: list[Path] = field(default_factory=list)  # folders with ranked.jsonl + screen summary.json
    adapters: list[Path] = field(default_factory=list)  # PEFT adapter folders

    def counts(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.__dict__.items()}


def _walk(top: Path, depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Directories under ``top`` (``top`` included), skipping hidden, checkpoint and adapter folders."""
    yield top
    if depth <= 0:
        return
    try:
        children = sorted(p for p in top.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return
    for child in children:
        if child.name.startswith(".") or child.name in SKIP_DIRS:
            continue
        yield from _walk(child, depth - 1)


def summary_kind(summary: dict[str, Any] | None) -> str:
    """Which command wrote a ``summary.json``: ``eval``, ``sweep``, ``screen`` or ``""``."""
    if not summary:
        return ""
    if isinstance(summary.get("sets"), dict):
        return "eval"
    if "cells" in summary and "recommended_layer" in summary:
        return "sweep"
    if "dataset_score" in summary and "n_flagged" in summary:
        return "screen"
    return ""


def scan(top: Path) -> Found:
    """Every artifact the pages can show, under ``top`` (at most ``MAX_DEPTH`` folders deep)."""
    found = Found()
    for folder in _walk(Path(top)):
        try:
            names = {p.name for p in folder.iterdir()}
        except OSError:
            continue
        kind = summary_kind(read_json(folder / "summary.json")) if "summary.json" in names else ""
        if kind == "eval":
            found.evals.append(folder)
        elif kind == "sweep" or ("sweep.csv" in names and kind == ""):
            found.sweeps.append(folder)
        elif kind == "screen" and "ranked.jsonl" in names:
            found.screens.append(folder)
        if "metrics.jsonl" in names:
            found.trainings.append(folder)
        if "analysis.json" in names:
            found.analyses.append(folder / "analysis.json")
        adapter = folder / "adapter"
        if (adapter / "adapter_config.json").exists():
            found.adapters.append(adapter)
        for name in sorted(names):
            if not name.endswith(".safetensors"):
                continue
            art = artifact_kind(folder / name)
            if art == "persona_vector":
                found.vectors.append(folder / name)
            elif art == "gates":
                found.gates.append(folder / name)
    return found


def list_run_dirs(root: Path) -> list[Path]:
    """The root and every folder under it that holds a run artifact (the sidebar's choices)."""
    out = [Path(root).resolve()]
    for folder in _walk(Path(root).resolve()):
        if folder == out[0]:
            continue
        try:
            names = {p.name for p in folder.iterdir()}
        except OSError:
            continue
        if names & set(MARKERS) or any(n.endswith(".safetensors") for n in names):
            out.append(folder)
    return out


def model_spec_for(folder: Path, root: Path) -> str | None:
    """The ``model`` of the nearest ``config.yaml`` from ``folder`` up to ``root`` (None if there is none)."""
    root = Path(root).resolve()
    here = Path(folder).resolve()
    while True:
        cfg = read_yaml(here / "config.yaml")
        if cfg and isinstance(cfg.get("model"), str) and cfg["model"].strip():
            return cfg["model"].strip()
        if here == root or root not in here.parents:
            return None
        here = here.parent


def rows_path(vector_file: Path) -> Path:
    """Where ``extract-vector`` writes its per-answer rows: ``<stem>_rows.jsonl`` beside the vector."""
    return vector_file.with_name(f"{vector_file.stem}_rows.jsonl")


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


def _estimate(value: Any) -> dict[str, float] | None:
    if isinstance(value, dict) and "value" in value:
        v = value.get("value")
        if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)):
            return {
                "value": float(v),
                "low": float(value.get("low", v)),
                "high": float(value.get("high", v)),
                "n": int(value.get("n", 0) or 0),
                "interval": True,
            }
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(float(value)):
        return {"value": float(value), "low": float(value), "high": float(value), "n": 0, "interval": False}
    return None


def eval_metrics(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{"<set>/<metric>": {value, low, high, n}}`` from an eval ``summary.json`` (point estimates too)."""
    out: dict[str, dict[str, float]] = {}
    for set_name, result in (summary.get("sets") or {}).items():
        if not isinstance(result, dict):
            continue
        for key, value in result.items():
            if key in ("rows", "kind", "judge", "per_question", "by_category"):
                continue
            est = _estimate(value)
            if est is not None:
                out[f"{set_name}/{key}"] = est
    return out


def find_model_spec(folder: Path, root: Path) -> str | None:
    """The model of the nearest ``config.yaml`` at or above ``folder``, else of the first one below it."""
    spec = model_spec_for(folder, root)
    if spec:
        return spec
    for sub in _walk(Path(folder)):
        cfg = read_yaml(sub / "config.yaml")
        if cfg and isinstance(cfg.get("model"), str) and cfg["model"].strip():
            return cfg["model"].strip()
    return None


def _number(text: str) -> float | int | None:
    if text in ("", None):
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return int(value) if value.is_integer() and "." not in text and "e" not in text.lower() else value


def read_sweep(folder: Path) -> dict[str, Any] | None:
    """A sweep's ``summary.json`` (cells, recommended layer, rule, config), or its cells from ``sweep.csv``."""
    summary = read_json(folder / "summary.json")
    if summary_kind(summary) == "sweep":
        return summary
    path = folder / "sweep.csv"
    if not path.exists():
        return None
    import csv

    with open(path, encoding="utf-8", newline="") as fh:
        cells = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    cells = [c for c in cells if c.get("layer") is not None and c.get("alpha") is not None]
    if not cells:
        return None
    return {"recommended_layer": None, "rule": "", "gains": {}, "config": {}, "cells": cells}
