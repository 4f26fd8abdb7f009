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
- ``run.json`` (the manifest) says which command made the run and how it ended; the names of every file a
  run holds are the constants below, and :class:`RunDir` / :func:`find_runs` read runs back (docs/runs.md).
- While a command writes a run directory it holds an exclusive ``flock`` on ``<run>/.lock`` (which holds its
  PID); a second writer is refused naming that PID. The OS drops the lock when the process ends, even when it
  is killed, so a stale ``.lock`` file never blocks anything.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from ._errors import WorkbenchError
from ._io import atomic_write_json, atomic_write_text, one_line

try:  # POSIX; elsewhere run directories are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------- the names
# Every file and folder a run directory can hold; nothing outside this module spells them (docs/runs.md).
LOCK_NAME = ".lock"
"""The lock file inside a run directory (``flock``-ed while a command writes the run; holds its PID)."""
RUN_JSON = "run.json"
"""The manifest: command, argv, version, start/end times and status (see :func:`prepare_run_dir`)."""
MANIFEST_NAME = RUN_JSON  # the older spelling, kept
CONFIG_YAML = "config.yaml"
"""The fully resolved config of the command (:func:`write_config`)."""
METRICS_JSONL = "metrics.jsonl"
"""Training: one JSON row per logged step (the source of truth for every tracker)."""
TRAIN_SUMMARY_JSON = "train_summary.json"
"""Training: the final state (``finished``, ``stopped_by``, ``final_eval_loss``, ...)."""
SUMMARY_JSON = "summary.json"
"""``eval``, ``sweep`` and ``screen`` results; three shapes, told apart by the manifest's command."""
EVAL_DIR = "eval"
"""``eval``: one ``<set>.jsonl`` of judged answers per question set."""
ADAPTER_DIR = "adapter"
"""Training: the PEFT LoRA adapter folder."""
CHECKPOINTS_DIR = "checkpoints"
"""Training: resumable checkpoints (``step-NNNNNN``)."""
GATES_FILE = "gates.safetensors"
"""Training with ``gates:``: the trained alignment gates."""
VECTORS_DIR = "vectors"
"""The demo (and studies): persona vectors, ``<trait>.safetensors`` with ``<trait>_rows.jsonl``."""
REPORT_HTML = "report.html"
"""The demo's offline report."""
PLOTS_HTML = "plots.html"
"""Training: one panel per logged quantity."""
MONITOR_JSONL = "monitor.jsonl"
"""Training with ``monitor:``: one row of signals per monitor pass."""
ALERTS_JSONL = "alerts.jsonl"
"""Training with ``monitor:``: one row per alert that fired."""
MONITOR_JSON = "monitor.json"
"""Training with ``monitor:``: the monitor's settings and probe set."""
SWEEP_CSV = "sweep.csv"
"""``sweep``: one row per (layer, alpha) cell."""
RANKED_JSONL = "ranked.jsonl"
"""``screen``: the examples ranked by projection difference."""
ANSWERS_JSON = "answers.json"
"""``gate --prompt``: the answers with gates off, as trained and at the chosen alpha."""
ANALYSIS_JSON = "analysis.json"
"""``gate analyze``: per-layer gate statistics."""
# experiment trackers (``report_to:``; workbench/tracking.py): their offline stores inside the run directory
TENSORBOARD_DIR = "tensorboard"
"""``report_to: [tensorboard]``: the TensorBoard event files."""
MLFLOW_DB = "mlflow.db"
"""``report_to: [mlflow]``: the local MLflow store (SQLite) unless ``MLFLOW_TRACKING_URI`` names another."""
WANDB_DIR = "wandb"
"""``report_to: [wandb]``: W&B's offline run folder (``wandb sync`` uploads it later)."""
TRACKIO_DIR = "trackio"
"""``report_to: [trackio]``: trackio's local database."""
TRACKING_JSON = "tracking.json"
"""What each tracker was sent so far (run ids, last step), so a resumed run sends nothing twice."""
# a study (``workbench study run``; workbench/study/): a run directory of ordinary runs plus its tables
STUDY_YAML = "study.yaml"
"""The study file as given, with its paths made absolute (what ``--resume`` compares against)."""
CELLS_JSON = "cells.json"
"""The study's cells: id, grid values, seed, what each needs, its training config and evaluations."""
CONFIGS_DIR = "configs"
"""A study's resolved training config per cell (``configs/<cell>.yaml``)."""
CELLS_DIR = "cells"
"""A study's cells: ``cells/<cell>/train`` (a train run) and ``cells/<cell>/eval/<name>`` (eval runs)."""
SUBMITIT_DIR = ".submitit"
"""The engine's job folders (logs, pickled job states) of a study."""
RESULTS_CSV = "results.csv"
"""A study's tidy table: one row per cell x evaluation x setting x set x metric."""
RESULTS_PARQUET = "results.parquet"
"""The same table as Parquet."""
AGGREGATE_CSV = "aggregate.csv"
"""A study's table aggregated over seeds."""
PAIRED_CSV = "paired.csv"
"""Paired differences between cells on the same items (each cell minus its reference)."""
PARETO_JSON = "pareto.json"
RECOMMEND_JSON = "recommend.json"
"""A study's recommended setting per grid group (``recommend:``; e.g. the gate alpha that removes the shift)."""
"""The study's Pareto plots: axes, points (with their runs) and which are on the front."""
KINDS = ("train", "eval", "gate", "sweep", "screen", "demo", "study")
"""The commands that make a run directory (the manifest's ``command``)."""
STATUSES = ("running", "finished", "stopped", "failed")
"""A manifest's ``status``: ``stopped`` is a run that ended early and can be resumed."""
_LEFTOVERS = (RUN_JSON, CONFIG_YAML)  # what a command writes before its first result
_SKIP_DIRS = {ADAPTER_DIR, CHECKPOINTS_DIR, "judge_cache", "__pycache__", "node_modules"}
MAX_DEPTH = 4
"""How deep below a root :func:`find_runs` looks."""

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

    Writes the manifest ``run.json`` (``command``, ``argv``, ``workbench`` version, ``created``, ``started``,
    ``ended``, ``status`` ``running``, ``pid``; on ``--resume`` the first command and creation time are kept
    and ``resumed`` counts the continuations). :func:`end_run` records how the command ended;
    ``workbench.cli.main`` calls it for every command, ``workbench.training.train`` for its own runs.
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
        _start_manifest(path, command, keep=state == "resume")
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
            f"refusing to --overwrite '{path}': it holds no {RUN_JSON} or {CONFIG_YAML}, so no workbench "
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
    saved = path / CONFIG_YAML
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
def is_locked(path: str | Path) -> bool:
    """Whether a process (this one or another) holds the lock of the directory ``path`` now."""
    if fcntl is None:  # pragma: no cover - Windows
        return False
    if os.path.realpath(path) in _HELD:
        return True
    try:
        fd = os.open(Path(path) / LOCK_NAME, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True  # another process holds it
    finally:
        os.close(fd)  # drops the probe's shared lock
    return False


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
    _STARTED.discard(os.path.realpath(path))  # its end can no longer be recorded: another writer may come
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


def release_run_locks(
    keep: Collection[str] = (), status: str | None = None, error: str | None = None
) -> None:
    """Release the run-directory locks this process holds, except those in ``keep`` (real paths).

    ``workbench.cli.main`` calls it when a command ends, keeping the locks its caller held before; with
    ``status`` it first ends the manifests of the runs it started (:func:`end_run`).
    """
    for key in list(_HELD):
        if key not in keep:
            if status is not None:
                end_run(key, status, error)
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
    target = run_dir / CONFIG_YAML
    atomic_write_text(target, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return target


# ---------------------------------------------------------------------------------------- the manifest
_STARTED: set[str] = set()  # real paths of the runs whose manifest this process started and not yet ended


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _start_manifest(path: Path, command: str, *, keep: bool) -> None:
    """Write ``run.json`` with status ``running``; on ``--resume`` keep the first command and creation time."""
    now = _now()
    manifest: dict[str, Any] = {
        "command": command, "argv": list(sys.argv), "workbench": _version(), "created": now, "started": now,
        "ended": None, "status": "running", "pid": os.getpid(),
    }  # fmt: skip
    old = read_manifest(path) if keep else None
    if old:
        manifest["command"] = str(old.get("command") or command)
        manifest["created"] = str(old.get("created") or now)
        before = old.get("resumed")
        manifest["resumed"] = (before if isinstance(before, int) and before >= 0 else 0) + 1
    atomic_write_json(path / RUN_JSON, manifest)
    _STARTED.add(os.path.realpath(path))


def end_run(path: str | Path, status: str = "finished", error: str | None = None) -> bool:
    """Record the end of a run this process started: ``status`` (see ``STATUSES``) and the end time.

    Rewrites ``run.json`` atomically; call it before :func:`unlock_run_dir`. Returns False (and writes
    nothing) for a run this process did not start with :func:`prepare_run_dir`, has already ended or has
    unlocked. A failed write is logged, never raised, so it cannot hide the command's own outcome.
    """
    if status not in STATUSES:
        raise WorkbenchError(f"run status '{status}' is not one of {', '.join(STATUSES)}")
    key = os.path.realpath(path)
    if key not in _STARTED:
        return False
    _STARTED.discard(key)
    manifest = read_manifest(key) or {}
    manifest.update(status=status, ended=_now())
    if error:
        manifest["error"] = one_line(str(error), 300)
    else:
        manifest.pop("error", None)
    try:
        atomic_write_json(Path(key) / RUN_JSON, manifest)
    except OSError as exc:
        log.warning("cannot record the end of run %s: %s", key, exc)
    return True


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The ``run.json`` of run directory ``path`` (None when missing or unreadable)."""
    return read_json(Path(path) / RUN_JSON)


# ---------------------------------------------------------------------------------------- tolerant readers
def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object, or None when the file is missing, unreadable or holds something else."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file; lines that do not parse (the last one, cut by a crash) are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, ValueError):
        return []
    rows: list[dict[str, Any]] = []
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


def read_yaml(path: str | Path) -> dict[str, Any] | None:
    """A YAML mapping (``safe_load``), or None like :func:`read_json`."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError, yaml.YAMLError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------------- confinement
def within(root: str | Path, path: str | os.PathLike[str]) -> Path | None:
    """``path`` with every symbolic link resolved, when that stays inside ``root``; else None.

    A link (to a file or a directory) whose target lies outside ``root`` gives None, as do link loops and
    unreadable paths. The explorer's confinement (``apps/_runs.inside``) is this check.
    """
    try:
        real_root = Path(root).resolve()
        real = Path(path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    return real if real == real_root or real_root in real.parents else None


def within_file(root: str | Path, path: str | os.PathLike[str]) -> Path | None:
    """:func:`within` for a regular file that exists (None for a missing file, a directory or a link out)."""
    real = within(root, path)
    return real if real is not None and real.is_file() else None


def within_tree(root: str | Path, folder: str | os.PathLike[str], max_entries: int = 10_000) -> Path | None:
    """``folder`` resolved when it and everything below it stay inside ``root`` (links included); None as
    well for a missing folder or one with more than ``max_entries`` entries."""
    real = within(root, folder)
    if real is None or not real.is_dir():
        return None
    seen = 0
    for here, dirs, files in os.walk(real, followlinks=False):
        for name in [*dirs, *files]:
            seen += 1
            if seen > max_entries or within(root, Path(here) / name) is None:
                return None
    return real


def walk_dirs(top: str | Path, depth: int = MAX_DEPTH) -> Iterator[Path]:
    """Directories under ``top`` (``top`` included, at most ``depth`` levels down), skipping hidden,
    adapter and checkpoint folders and every symbolically linked directory (so no link is followed out of
    the root and no loop is walked)."""
    top = Path(top)
    yield top
    if depth <= 0:
        return
    try:
        children = sorted(p for p in top.iterdir() if not p.is_symlink() and p.is_dir())
    except OSError:
        return
    for child in children:
        if child.name.startswith(".") or child.name in _SKIP_DIRS:
            continue
        yield from walk_dirs(child, depth - 1)


# ---------------------------------------------------------------------------------------- the read side
_RUN_MARKERS = (RUN_JSON, CONFIG_YAML, METRICS_JSONL, SUMMARY_JSON, TRAIN_SUMMARY_JSON)


def summary_kind(summary: Mapping[str, Any] | None) -> str:
    """FALLBACK for runs made before ``run.json``: which command wrote a ``summary.json``, by its keys.

    ``eval``, ``sweep``, ``screen`` or ``""``. Runs with a manifest are told apart by its ``command``.
    """
    if not summary:
        return ""
    if isinstance(summary.get("sets"), dict):
        return "eval"
    if "cells" in summary and "recommended_layer" in summary:
        return "sweep"
    if "dataset_score" in summary and "n_flagged" in summary:
        return "screen"
    return ""


class RunDir:
    """One run directory, read through the names above.

    With ``root``, every file is opened only when it resolves inside ``root`` (a link out of it reads as a
    missing file), as the explorer needs. Readers never raise on a damaged or missing file: they return
    None or no rows.
    """

    def __init__(self, path: str | Path, *, root: str | Path | None = None) -> None:
        self.path = Path(path)
        self.root = Path(root).resolve() if root is not None else None

    def __repr__(self) -> str:
        return f"RunDir('{self.path}', kind='{self.kind}')"

    def __fspath__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RunDir) and os.path.realpath(self.path) == os.path.realpath(other.path)

    def __hash__(self) -> int:
        return hash(os.path.realpath(self.path))

    def file(self, name: str) -> Path | None:
        """The file ``name`` of the run when it exists (and, given ``root``, resolves inside it)."""
        p = self.path / name
        if self.root is not None:
            return within_file(self.root, p)
        return p if p.is_file() else None

    def _json(self, name: str) -> dict[str, Any] | None:
        p = self.file(name)
        return read_json(p) if p is not None else None

    def manifest(self) -> dict[str, Any] | None:
        """``run.json`` (None for runs made before the manifest)."""
        return self._json(RUN_JSON)

    @property
    def kind(self) -> str:
        """The command that made the run (``train``, ``eval``, ...; ``""`` when unknown).

        From ``run.json``; runs made before it fall back to :meth:`sniffed_kind`.
        """
        command = (self.manifest() or {}).get("command")
        if isinstance(command, str) and command:
            return command
        return self.sniffed_kind()

    def sniffed_kind(self) -> str:
        """FALLBACK for runs without ``run.json``: the ``command`` key of ``config.yaml`` (eval, screen, sweep,
        gate, demo write one), else the shape of ``summary.json`` (:func:`summary_kind`), else ``train``
        when ``metrics.jsonl`` or ``train_summary.json`` is there."""
        command = (self.config() or {}).get("command")
        if isinstance(command, str) and command in KINDS:
            return command
        kind = summary_kind(self.summary())
        if kind:
            return kind
        if self.file(METRICS_JSONL) or self.file(TRAIN_SUMMARY_JSON):
            return "train"
        return ""

    @property
    def status(self) -> str | None:
        """The manifest's status; a ``running`` run whose lock nobody holds reads ``interrupted`` (killed).

        None for runs made before the manifest.
        """
        manifest = self.manifest()
        if not manifest:
            return None
        status = str(manifest.get("status") or "running")
        if status == "running" and not self._locked():
            return "interrupted"
        return status

    def _locked(self) -> bool:
        lock = self.file(LOCK_NAME)
        return lock is not None and is_locked(self.path)

    def config(self) -> dict[str, Any] | None:
        """``config.yaml``."""
        p = self.file(CONFIG_YAML)
        return read_yaml(p) if p is not None else None

    def metrics(self) -> list[dict[str, Any]]:
        """The rows of ``metrics.jsonl`` (a line cut by a crash is skipped)."""
        p = self.file(METRICS_JSONL)
        return read_jsonl(p) if p is not None else []

    def summary(self) -> dict[str, Any] | None:
        """``summary.json`` (eval, sweep or screen; :attr:`kind` says which)."""
        return self._json(SUMMARY_JSON)

    def train_summary(self) -> dict[str, Any] | None:
        """``train_summary.json``."""
        return self._json(TRAIN_SUMMARY_JSON)

    def artifacts(self) -> dict[str, list[Path]]:
        """What the run holds, by kind; kinds with nothing are left out.

        ``adapter`` (a PEFT folder with ``adapter_config.json``), ``gates``, ``vectors`` (``vectors/*.safetensors``),
        ``eval`` (``eval/<set>.jsonl``), ``reports`` (``*.html``), ``monitor`` (its files), ``checkpoints``.
        """
        out: dict[str, list[Path]] = {}
        adapter = self.path / ADAPTER_DIR
        if (adapter / "adapter_config.json").exists():
            ok = within_tree(self.root, adapter) if self.root is not None else adapter
            if ok is not None:
                out["adapter"] = [adapter]
        found = {
            "gates": [GATES_FILE],
            "vectors": self._listed(VECTORS_DIR, ".safetensors"),
            "eval": self._listed(EVAL_DIR, ".jsonl"),
            "reports": [p.name for p in self._children(self.path) if p.name.endswith(".html")],
            "monitor": [MONITOR_JSONL, ALERTS_JSONL, MONITOR_JSON],
        }
        for key, names in found.items():
            files = [self.path / n for n in names if self.file(n) is not None]
            if files:
                out[key] = files
        ckpt = [
            p
            for p in self._children(self.path / CHECKPOINTS_DIR)
            if p.is_dir() and p.name.startswith("step-")
        ]
        if self.root is not None:
            ckpt = [p for p in ckpt if within(self.root, p) is not None]
        if ckpt:
            out["checkpoints"] = ckpt
        return out

    @staticmethod
    def _children(folder: Path) -> list[Path]:
        try:
            return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        except OSError:
            return []

    def _listed(self, sub: str, suffix: str) -> list[str]:
        if self.root is not None and within(self.root, self.path / sub) is None:
            return []
        return [f"{sub}/{p.name}" for p in self._children(self.path / sub) if p.name.endswith(suffix)]


def is_run_dir(path: str | Path, root: str | Path | None = None) -> bool:
    """Whether ``path`` holds a run's manifest, config, metrics or summary (inside ``root``, if given)."""
    run = RunDir(path, root=root)
    return any(run.file(name) is not None for name in _RUN_MARKERS)


def find_runs(root: str | Path, max_depth: int = MAX_DEPTH) -> list[RunDir]:
    """The run directories under ``root`` (``root`` included), at most ``max_depth`` folders deep.

    Linked directories are never walked and files are read only where they resolve inside ``root``, so
    nothing outside ``root`` is read. Runs inside runs (the demo's ``train/``) are found too.
    """
    top = Path(root)
    real_root = top.resolve()
    return [
        RunDir(d, root=real_root)
        for d in walk_dirs(top, max_depth)
        if within(real_root, d) is not None and is_run_dir(d, real_root)
    ]
