"""Run directories: one folder per command, with its resolved config; never silently reused, wiped or shared.

Rules (docs/reliability.md, promise 3):

- A command writes into a directory that is new, empty, or holds only what a failed command left before
  producing any result (``run.json``, ``config.yaml``, ``.lock`` and empty folders). Anything else needs
  ``--resume`` (continue it) or ``--overwrite`` (empty it first), never both.
- ``--resume`` needs a directory that exists and is not empty, and refuses settings that differ from the
  run's saved ``config.yaml`` (naming the keys).
- ``--overwrite`` empties only a run directory a workbench command made (it holds ``run.json``, or
  ``config.yaml`` for runs made before ``run.json`` existed), never one that holds an input of the command,
  the working directory, one of its parents, the home directory or a git checkout.
- While a command writes a run directory it holds an exclusive ``flock`` on ``<run>/.lock`` (which holds its
  PID); a second writer is refused naming that PID. The OS drops the lock when the process ends, even when it
  is killed, so a stale ``.lock`` file never blocks anything.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sys
import time
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from ._errors import WorkbenchError
from ._io import atomic_write_json, atomic_write_text

try:  # POSIX; elsewhere run directories are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
"""The lock file inside a run directory (``flock``-ed while a command writes the run; holds its PID)."""
MANIFEST_NAME = "run.json"
"""Written when a command creates (or first reuses) a run directory: marks it as a workbench run."""
_LEFTOVERS = (MANIFEST_NAME, "config.yaml")  # what a command writes before its first result

# path (realpath) -> open file descriptor holding the flock (None where the filesystem has no flock)
_HELD: dict[str, int | None] = {}


def prepare_run_dir(
    out: str | Path | None,
    command: str,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[Any] = (),
    config: Mapping[str, Any] | None = None,
    resume_free: Collection[str] = (),
) -> Path:
    """Create (or reopen with ``resume``) a run directory and lock it for this process.

    ``inputs`` are the command's input paths (anything else in it is ignored, see :func:`input_paths`):
    ``overwrite`` refuses to empty a directory holding one. With ``resume`` and ``config`` (the new resolved
    config), keys that differ from the saved ``config.yaml`` are refused, except those in ``resume_free``.
    The rules are in this module's docstring. The lock is released when the process ends or by
    :func:`unlock_run_dir`.
    """
    if overwrite and resume:
        raise WorkbenchError("--overwrite and --resume contradict each other; pass one of them")
    if out is None and resume:
        raise WorkbenchError("--resume needs --out: the run directory to continue")
    path = Path(out) if out else _default_path(command)
    inputs = list(inputs)
    check_run_dir(
        path, overwrite=overwrite, resume=resume, inputs=inputs, config=config, resume_free=resume_free
    )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkbenchError(f"cannot create run directory '{path}': {exc.strerror or exc}") from None
    newly_locked = lock_run_dir(path)
    try:  # the checks again, now that no other writer can change the directory
        state = check_run_dir(
            path, overwrite=overwrite, resume=resume, inputs=inputs, config=config, resume_free=resume_free
        )
        if state == "wipe":
            _empty(path)
        elif state == "resume":
            clean_stale_temp(path)
        if state != "resume" or not (path / MANIFEST_NAME).exists():
            atomic_write_json(
                path / MANIFEST_NAME,
                {"command": command, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "pid": os.getpid(),
                 "workbench": _version()},
            )  # fmt: skip
    except BaseException:
        if newly_locked:
            unlock_run_dir(path)
        raise
    return path


def check_run_dir(
    out: str | Path,
    *,
    overwrite: bool = False,
    resume: bool = False,
    inputs: Iterable[Any] = (),
    config: Mapping[str, Any] | None = None,
    resume_free: Collection[str] = (),
) -> str:
    """Raise the ``WorkbenchError`` :func:`prepare_run_dir` would, without touching anything.

    Returns what it would do: ``"new"`` (use the directory as it is), ``"resume"`` or ``"wipe"``. Commands
    call it before slow work (loading a model) so a refusal comes at once.
    """
    if overwrite and resume:
        raise WorkbenchError("--overwrite and --resume contradict each other; pass one of them")
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise WorkbenchError(f"run directory '{path}' exists and is a file")
    if resume:
        if not path.is_dir() or not any(p.name != LOCK_NAME for p in path.iterdir()):
            what = "is empty" if path.is_dir() else "does not exist"
            raise WorkbenchError(
                f"--resume: run directory '{path}' {what}, so there is nothing to continue; check --out "
                "or start the run without --resume"
            )
        if config is not None and not leftovers_only(path):
            _check_resume_config(path, config, resume_free)
        return "resume"
    if overwrite and path.exists():
        _refuse_to_wipe(path)
    if not path.exists() or leftovers_only(path):
        return "new"
    if not overwrite:
        raise WorkbenchError(
            f"run directory '{path}' already exists and is not empty; pass --resume to continue it "
            "or --overwrite to replace it"
        )
    for inp in input_paths(inputs):
        if _inside(inp, path):
            raise WorkbenchError(
                f"refusing to --overwrite '{path}': it holds '{inp}', an input of this command; move the "
                "input out of it or give --out another directory"
            )
    if not any((path / name).is_file() for name in _LEFTOVERS):
        raise WorkbenchError(
            f"refusing to --overwrite '{path}': it holds no {MANIFEST_NAME} or config.yaml, so no workbench "
            "command made it; give --out a new directory (or empty this one yourself)"
        )
    return "wipe"


def check_output_files(
    targets: Iterable[str | Path], *, overwrite: bool = False, inputs: Iterable[Any] = (), flag: str = "--out"
) -> None:
    """Refuse to write files that exist (unless ``overwrite``) or that are inputs of the command (ever).

    For commands whose ``--out`` is a file rather than a run directory; call it before any slow work.
    A target counts as an input when it is one, or lies inside an input folder (a model folder).
    """
    ins = input_paths(inputs)
    for target in map(Path, targets):
        if target.is_dir():
            raise WorkbenchError(f"{flag} '{target}' is a directory; give the path of a file to write")
        if not target.exists() and not target.is_symlink():
            continue
        for inp in ins:
            if _inside(target, inp):
                raise WorkbenchError(
                    f"refusing to write '{target}': it would replace '{inp}', an input of this command; "
                    f"give {flag} another path"
                )
        if not overwrite:
            raise WorkbenchError(
                f"'{target}' already exists; pass --overwrite to replace it or give {flag} another path"
            )


def leftovers_only(path: str | Path) -> bool:
    """Whether ``path`` holds nothing but what a command writes before producing any result.

    That is the lock file, empty folders and, in a directory with a ``run.json`` (one a workbench command
    made), ``run.json`` and ``config.yaml``. Such a directory is reused without ``--resume``/``--overwrite``:
    it is what a command that failed early (a bad model spec, a missing file) leaves behind.
    """
    root = Path(path)
    ours = (root / MANIFEST_NAME).is_file()
    for p in root.rglob("*"):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(root).parts
        if rel == (LOCK_NAME,) or (ours and len(rel) == 1 and rel[0] in _LEFTOVERS):
            continue
        return False
    return True


def input_paths(values: Iterable[Any]) -> list[Path]:
    """The existing files and folders named by ``values`` (strings or paths, also inside lists and dicts).

    Values that are not paths on disk (model specs such as ``random:tiny-llama``, shipped dataset names,
    numbers) are skipped, so a command can pass its whole resolved config.
    """
    found: list[Path] = []

    def walk(v: Any) -> None:
        if isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, list | tuple | set):
            for x in v:
                walk(x)
        elif isinstance(v, str | os.PathLike) and str(v).strip() and "\n" not in str(v):
            try:
                if Path(v).exists():
                    found.append(Path(v))
            except (OSError, ValueError):  # a name too long for the filesystem, a NUL byte
                pass

    walk(list(values))
    return found


def _inside(inner: Path, outer: Path) -> bool:
    """``inner`` is ``outer`` or lies under it, by its written path or by its real one (symlinks followed)."""
    out_abs, out_real = Path(os.path.abspath(outer)), outer.resolve()
    for p in (Path(os.path.abspath(inner)), inner.resolve()):
        for o in (out_abs, out_real):
            if p == o or o in p.parents:
                return True
    return False


def _default_path(command: str) -> Path:
    base = Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():  # two commands started in the same second get their own folders
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def _empty(path: Path) -> None:
    for child in path.iterdir():
        if child.name == LOCK_NAME:  # held by this process: removing it would let a second writer in
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _refuse_to_wipe(path: Path) -> None:
    real = path.resolve()
    cwd = Path.cwd().resolve()
    if real == cwd or real in cwd.parents or real == Path.home().resolve() or (real / ".git").exists():
        raise WorkbenchError(
            f"refusing to --overwrite '{path}': it is the working directory, one of its parents, the home "
            "directory or a git checkout; give --out a dedicated run directory"
        )


def _check_resume_config(path: Path, config: Mapping[str, Any], free: Collection[str]) -> None:
    saved = path / "config.yaml"
    if not saved.is_file():
        return
    try:
        old = yaml.safe_load(saved.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise WorkbenchError(
            f"--resume: cannot read the run's saved {saved} ({type(exc).__name__})"
        ) from None
    diff = config_diff(old, dict(config), free)
    if diff:
        raise WorkbenchError(
            f"--resume: the config differs from the run's saved {saved} at: {', '.join(diff[:8])}; resume "
            "with the same settings (or start a new run in another --out)"
        )


def config_diff(old: Any, new: Any, free: Collection[str] = (), prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two configs, skipping those in ``free``.

    Top-level keys missing from ``old`` are skipped (configs saved by an older version lack newer keys).
    """
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = set(old) | (set(new) if prefix else set())
        out: list[str] = []
        for k in sorted(keys, key=str):
            key = f"{prefix}{k}"
            if key in free:
                continue
            out.extend(config_diff(old.get(k), new.get(k), free, key + "."))
        return out
    if isinstance(old, list | tuple) and isinstance(new, list | tuple):
        old, new = list(old), list(new)
    return [] if old == new else [prefix.rstrip(".")]


# ---------------------------------------------------------------------------------------- the lock
def lock_run_dir(path: str | Path) -> bool:
    """Take the run directory's lock for this process; False if this process already holds it.

    Raises a ``WorkbenchError`` naming the holder's PID when another process holds it.
    """
    key = os.path.realpath(path)
    if key in _HELD:
        return False
    if fcntl is None:  # pragma: no cover - Windows
        _HELD[key] = None
        return True
    lock = Path(key) / LOCK_NAME
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise WorkbenchError(f"cannot write run directory '{path}': {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise WorkbenchError(
                f"run directory '{path}' is in use by process {holder or '(unknown PID)'} (it holds "
                f"{Path(path) / LOCK_NAME}); wait for it to finish or give --out another directory"
            ) from None
        log.warning("cannot lock %s (%s); two commands writing it at once would not be stopped", lock, exc)
        _HELD[key] = None
        return True
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _HELD[key] = fd
    return True


def unlock_run_dir(path: str | Path) -> None:
    """Release this process's lock on a run directory (a no-op if it holds none)."""
    fd = _HELD.pop(os.path.realpath(path), None)
    if fd is not None:
        try:
            os.ftruncate(fd, 0)
        except OSError:
            pass
        os.close(fd)  # closing drops the flock


def holds_run_lock(path: str | Path | None) -> bool:
    """Whether this process holds the lock of run directory ``path``."""
    return path is not None and os.path.realpath(path) in _HELD


def held_run_locks() -> set[str]:
    """The run directories (real paths) whose locks this process holds."""
    return set(_HELD)


def release_run_locks(keep: Collection[str] = ()) -> None:
    """Release the run-directory locks this process holds, except those in ``keep`` (real paths).

    ``workbench.cli.main`` calls it when a command ends, keeping the locks its caller held before.
    """
    for key in list(_HELD):
        if key not in keep:
            unlock_run_dir(key)


def _read_pid(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return text if text.isdigit() else ""


def _version() -> str:
    mod = sys.modules.get("workbench._version")
    if mod is None:
        from . import _version as mod
    return str(getattr(mod, "__version__", "?"))


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
