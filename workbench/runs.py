"""Run directories: one folder per command, with its resolved config; never silently overwritten."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from ._errors import WorkbenchError
from ._io import atomic_write_text


def prepare_run_dir(
    out: str | Path | None, command: str, *, overwrite: bool = False, resume: bool = False
) -> Path:
    """Create (or reopen with ``resume``) a run directory.

    An existing non-empty directory is refused unless ``overwrite`` (its contents are removed) or
    ``resume`` (kept, and the command continues where it stopped).
    """
    path = Path(out) if out else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"run directory '{path}' exists and is a file")
    if path.exists() and any(path.iterdir()):
        if resume:
            return path
        if not overwrite:
            raise WorkbenchError(
                f"run directory '{path}' already exists and is not empty; pass --resume to continue it "
                "or --overwrite to replace it"
            )
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Save the fully resolved config next to the results, so the run can be repeated."""
    target = run_dir / "config.yaml"
    atomic_write_text(target, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return target
