"""Run directories: one folder per command, with its resolved config; never silently overwritten."""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ._errors import WorkbenchError
from ._io import atomic_write_text

log = logging.getLogger(__name__)


def prepare_run_dir(
    out: str | Path | None, command: str, *, overwrite: bool = False, resume: bool = False
) -> Path:
    """Create (or reopen with ``resume``) a run directory.

    An existing non-empty directory is refused unless ``overwrite`` (its contents are removed) or
    ``resume`` (kept, and the command continues where it stopped; temporary files left by a killed
    write are removed first). ``overwrite`` never empties the working directory, one of its parents,
    the home directory or a folder holding a ``.git`` (a mistyped ``--out`` must not wipe a project).
    """
    if overwrite and resume:
        raise WorkbenchError("--overwrite and --resume contradict each other; pass one of them")
    path = Path(out) if out else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"run directory '{path}' exists and is a file")
    if path.exists() and any(path.iterdir()):
        if resume:
            clean_stale_temp(path)
            return path
        if not overwrite:
            raise WorkbenchError(
                f"run directory '{path}' already exists and is not empty; pass --resume to continue it "
                "or --overwrite to replace it"
            )
        _refuse_to_wipe(path)
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def _refuse_to_wipe(path: Path) -> None:
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents or real == Path.home().resolve() or (real / ".git").exists():
        raise WorkbenchError(
            f"refusing to --overwrite '{path}': it is the working directory, one of its parents, the home "
            "directory or a git checkout; give --out a dedicated run directory"
        )


def clean_stale_temp(run_dir: str | Path) -> list[Path]:
    """Remove what a killed write leaves in a run directory; returns the removed paths.

    These are the temporary files of atomic writes (``.<name>.<random>.tmp``), half-written checkpoints
    (``checkpoints/.tmp-step-*``) and adapters (``.adapter.tmp``). Finished files are never touched: a
    write only becomes visible through its final rename. Call it only while no process writes the run.
    """
    removed: list[Path] = []
    for p in sorted(Path(run_dir).rglob(".*"), key=lambda q: len(q.parts), reverse=True):
        name = p.name
        stale = (name.endswith(".tmp") and (p.is_file() or p.is_dir())) or (
            p.is_dir() and name.startswith(".tmp-step-")
        )
        if not stale or p.is_symlink():
            continue
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        removed.append(p)
    if removed:
        log.info("removed %d temporary file(s) left by an interrupted write in %s", len(removed), run_dir)
    return removed


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Save the fully resolved config next to the results, so the run can be repeated."""
    target = run_dir / "config.yaml"
    atomic_write_text(target, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return target
