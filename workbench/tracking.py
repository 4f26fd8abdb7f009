"""Experiment trackers for training runs (``report_to:``): TensorBoard, MLflow, Weights & Biases, trackio.

``report_to: [tensorboard, mlflow, wandb, trackio]`` (any subset; each is an optional extra,
``pip install 'em-workbench[tensorboard]'`` and so on, or ``[tracking]`` for all four) feeds every row the
training loop appends to ``metrics.jsonl`` to those trackers, on the main process only. ``metrics.jsonl``
stays the source of truth; the trackers are views of it. Everything works offline and stays inside the run
directory unless the user's environment says otherwise:

- ``tensorboard``: event files in ``<run>/tensorboard/`` (every numeric key of a row is a scalar at the
  row's ``step``, tagged by its key; the resolved config as a text summary ``config`` at step 0).
- ``mlflow``: the store ``MLFLOW_TRACKING_URI`` names, else ``sqlite:///<run>/mlflow.db``; experiment
  ``MLFLOW_EXPERIMENT_NAME`` or ``workbench``; run name = the run directory's name; params = the flattened
  config (values cut to MLflow's length limit); metrics with their step. MLflow's usage telemetry is off
  unless ``MLFLOW_DISABLE_TELEMETRY`` or ``DO_NOT_TRACK`` is set.
- ``wandb``: offline (``<run>/wandb/offline-run-*``, uploaded later by ``wandb sync``) unless the user set
  ``WANDB_MODE``; project ``WANDB_PROJECT`` or ``workbench``; the API key is read by W&B from the
  environment when it goes online and is never written by this module.
- ``trackio``: its SQLite database in ``<run>/trackio/`` (``TRACKIO_DIR`` is set to that before trackio is
  imported, unless the user set it); project ``TRACKIO_PROJECT`` or ``workbench``. trackio 0.43 logs
  locally from a background thread and starts no server (``trackio show`` does, when you ask); two things
  in it reach for the network, and neither happens here: a Space or self-hosted server (only when
  ``TRACKIO_SPACE_ID`` / ``TRACKIO_SERVER_URL`` is set: the user asked) and ``huggingface_hub.whoami``,
  which its ``Run`` calls for the ``_Username`` config entry (a request to the Hub whenever an HF token is
  configured); this tracker replaces that lookup by "no user" while it opens the run. trackio reads
  ``TRACKIO_DIR`` once, when first imported: a second run in the same Python process keeps writing where
  the first did (a warning says so; ``tracking.json`` records the directory actually used).

**Exactly once across resume.** ``<run>/tracking.json`` keeps, per tracker, its run id (MLflow run id, W&B
run id, trackio run) and ``last_step``, the last step it was sent; it is rewritten atomically after every
row, after the tracker has written the row (TensorBoard is flushed; MLflow writes synchronously). A call
that continues the run (``--resume``) reopens the same runs and counts as already sent, per tracker, the
larger of the recorded ``last_step`` and the last step the tracker's own store holds (MLflow and trackio
are asked; TensorBoard and W&B cannot be). Then:

1. the rows of ``metrics.jsonl`` (already cut back to the checkpoint) after that step are sent: rows the
   killed call wrote but did not get to send;
2. during training only rows whose step is after it are sent. Steps computed again after a resume (those
   between the checkpoint and the kill) are not sent twice: the trackers keep the values first sent, which
   are the same numbers wherever the kernels are deterministic (``metrics.jsonl`` holds the recomputed ones);
3. TensorBoard opens a new event file with ``purge_step = last_step + 1``, so readers drop events that
   reached the old file after the last recorded step (a kill between a write and its record).

So every step of ``metrics.jsonl`` reaches every tracker once. W&B offline writes each resumed call into a
new ``offline-run-*`` folder of the same run id (``wandb sync`` them all).

**Failures never stop training.** A tracker that raises (on start, on a row or on close) is reported with
one warning and switched off for the rest of the call; ``metrics.jsonl`` is unaffected, and its
``last_step`` stays at the last row it took, so the next ``--resume`` sends it what it missed.

A tracker is a :class:`Tracker` subclass registered by name (:func:`register_tracker`); :class:`Trackers`
is the fan-out the training loop uses.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from ._errors import MissingPackageError, WorkbenchError
from ._io import atomic_write_json
from .runs import (
    METRICS_JSONL,
    MLFLOW_DB,
    TENSORBOARD_DIR,
    TRACKING_JSON,
    TRACKIO_DIR,
    read_json,
    read_jsonl,
)

__all__ = [
    "TRACKERS",
    "Tracker",
    "Trackers",
    "check_report_to",
    "register_tracker",
    "scalars",
]

log = logging.getLogger(__name__)

DEFAULT_PROJECT = "workbench"
"""The MLflow experiment, W&B project and trackio project when the environment names none."""


class Tracker:
    """One experiment tracker. A subclass sets ``module`` (the package it needs) and ``extra`` (the
    ``em-workbench`` extra that installs it), implements the four methods and is registered with
    :func:`register_tracker`. Any method may raise: :class:`Trackers` turns that into one warning and
    switches the tracker off."""

    name: ClassVar[str] = ""
    module: ClassVar[str] = ""
    extra: ClassVar[str] = ""

    @classmethod
    def available(cls) -> bool:
        """Whether ``module`` can be imported (checked without importing it)."""
        if not cls.module:
            return True
        try:
            return importlib.util.find_spec(cls.module) is not None
        except (ImportError, ValueError):
            return False

    def start(
        self, run_dir: Path, config: Mapping[str, Any], resume: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        """Open the tracker's run for ``run_dir``. ``resume`` is this tracker's entry of ``tracking.json``
        from an earlier call (what ``start`` returned then, plus ``last_step``), None for a new run; only a
        new run records ``config``. Returns what ``tracking.json`` keeps (run ids) to reopen the run."""
        raise NotImplementedError

    def stored_step(self) -> int | None:
        """The last step the tracker's own store holds for this run (None: it cannot tell)."""
        return None

    def log(self, row: Mapping[str, float], step: int) -> None:
        """Record the scalars of one metrics row at ``step``; written (flushed) when this returns."""
        raise NotImplementedError

    def close(self, status: str = "finished") -> None:
        """Close the run; ``status`` is how the call ended: ``finished``, ``stopped`` or ``failed``."""


TRACKERS: dict[str, type[Tracker]] = {}
"""The registered trackers by name (``report_to`` accepts these)."""


def register_tracker(name: str, cls: type[Tracker] | None = None) -> Any:
    """Register a :class:`Tracker` subclass under ``name``; a name registered already is refused. Usable
    as ``register_tracker("x", XTracker)`` or as the decorator ``@register_tracker("x")``."""

    def add(c: type[Tracker]) -> type[Tracker]:
        if not (isinstance(c, type) and issubclass(c, Tracker)):
            raise WorkbenchError(f"register_tracker: {name!r} must be a Tracker subclass, got {c!r}")
        if name in TRACKERS:
            raise WorkbenchError(f"tracker '{name}' is already registered ({TRACKERS[name].__qualname__})")
        c.name = name
        TRACKERS[name] = c
        return c

    return add(cls) if cls is not None else add


def check_report_to(names: Sequence[str], where: str = "config") -> None:
    """Refuse, with one line naming ``report_to``, a name that is not a registered tracker (listing the
    accepted ones) or whose package is not installed (naming the extra to install)."""
    for name in names:
        cls = TRACKERS.get(name)
        if cls is None:
            raise WorkbenchError(
                f"{where}: 'report_to': unknown tracker {name!r} (known: {', '.join(sorted(TRACKERS))})"
            )
        if not cls.available():
            raise MissingPackageError(
                cls.module, f"pip install 'em-workbench[{cls.extra}]'", f"'report_to: {name}' in {where}"
            )


def scalars(row: Mapping[str, Any]) -> dict[str, float]:
    """The numeric entries of a metrics row, ``step`` aside (None values and flags are left out)."""
    return {
        str(k): float(v)
        for k, v in row.items()
        if k != "step" and isinstance(v, int | float) and not isinstance(v, bool)
    }


class Trackers:
    """The trackers of one run, fed the rows of ``metrics.jsonl`` exactly once across resume (see the
    module docstring for the rule).

    >>> with Trackers(["tensorboard"], run_dir, config.to_dict()) as trackers:  # doctest: +SKIP
    ...     trackers.log({"step": 1, "loss": 2.3})

    ``start`` opens every tracker and sends the ``metrics.jsonl`` rows each has not had yet; ``log`` sends
    one row (the loop calls it right after appending the row to ``metrics.jsonl``); ``close`` closes them.
    """

    def __init__(self, names: Sequence[str], run_dir: str | Path, config: Mapping[str, Any]):
        self.names = list(dict.fromkeys(names))
        self.run_dir = Path(run_dir)
        self.config = dict(config)
        self._open: dict[str, Tracker] = {}
        self._state: dict[str, dict[str, Any]] = {}
        self._save_failed = False

    @property
    def active(self) -> list[str]:
        """The trackers that are open (not switched off by a failure)."""
        return list(self._open)

    def last_step(self, name: str) -> int:
        """The last step tracker ``name`` was sent (0: none)."""
        return int(self._state.get(name, {}).get("last_step") or 0)

    def start(self) -> Trackers:
        saved = read_json(self.run_dir / TRACKING_JSON) or {}
        self._state = {k: dict(v) for k, v in saved.items() if isinstance(v, dict)}
        for name in self.names:
            entry = self._state.get(name)
            tracker = TRACKERS[name]()
            try:
                kept = tracker.start(self.run_dir, self.config, entry)
            except Exception as exc:  # a tracker never stops training
                self._fail(name, tracker, "could not start", exc)
                continue
            recorded = _step(entry.get("last_step")) if entry else None
            try:
                stored = tracker.stored_step()
            except Exception as exc:
                log.warning("report_to: %s: cannot read the last step it holds (%s)", name, _why(exc))
                stored = None
            last = max((s for s in (recorded, stored) if s is not None), default=0)
            self._state[name] = {**(kept or {}), "last_step": last}
            self._open[name] = tracker
        self._save()
        for row in read_jsonl(self.run_dir / METRICS_JSONL):  # rows written but not sent before a kill
            self.log(row)
        return self

    def log(self, row: Mapping[str, Any]) -> None:
        """Send one metrics row to every open tracker that has not had its step yet."""
        step = _step(row.get("step"))
        if step is None or not self._open:
            return
        values = scalars(row)
        sent = False
        for name, tracker in list(self._open.items()):
            if step <= self.last_step(name):
                continue
            try:
                tracker.log(values, step)
            except Exception as exc:
                self._fail(name, tracker, f"failed at step {step}", exc)
                continue
            self._state[name]["last_step"] = step
            sent = True
        if sent:
            self._save()

    def close(self, status: str = "finished") -> None:
        """Close every open tracker (``status``: ``finished``, ``stopped`` or ``failed``)."""
        for name, tracker in list(self._open.items()):
            try:
                tracker.close(status)
            except Exception as exc:
                log.warning("report_to: %s could not close its run (%s)", name, _why(exc))
        self._open.clear()
        self._save()

    def __enter__(self) -> Trackers:
        return self.start()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        self.close("finished" if kind is None else "failed")

    def _fail(self, name: str, tracker: Tracker, what: str, exc: BaseException) -> None:
        log.warning(
            "report_to: %s %s (%s); it is off for the rest of this call (metrics.jsonl is unaffected; "
            "--resume sends it what it missed)",
            name,
            what,
            _why(exc),
        )
        self._open.pop(name, None)
        with contextlib.suppress(Exception):
            tracker.close("failed")

    def _save(self) -> None:
        try:
            atomic_write_json(self.run_dir / TRACKING_JSON, self._state)
        except OSError as exc:
            if not self._save_failed:
                log.warning("report_to: cannot write %s (%s)", self.run_dir / TRACKING_JSON, _why(exc))
            self._save_failed = True


def _step(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _why(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


@contextlib.contextmanager
def _env(**values: str) -> Iterator[None]:
    """Set environment variables for the block (an import that reads them), then restore them."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim.lr": 1e-5, "data.0.path": ...}``: nested mappings (and lists of mappings) by dotted key."""
    out: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(_flatten(v, key + "."))
        elif isinstance(v, list | tuple) and v and all(isinstance(x, Mapping) for x in v):
            for i, x in enumerate(v):
                out.update(_flatten(x, f"{key}.{i}."))
        else:
            out[key] = v
    return out


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


# ---------------------------------------------------------------------------------------- TensorBoard
@register_tracker("tensorboard")
class TensorBoardTracker(Tracker):
    """Event files in ``<run>/tensorboard/`` through ``torch.utils.tensorboard.SummaryWriter``."""

    module = "tensorboard"
    extra = "tensorboard"

    def start(
        self, run_dir: Path, config: Mapping[str, Any], resume: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        import yaml
        from torch.utils.tensorboard import SummaryWriter

        logdir = Path(run_dir) / TENSORBOARD_DIR
        purge = None
        if resume is not None:
            purge = (_step(resume.get("last_step")) or 0) + 1
            _after_event_files(logdir)
        self.writer = SummaryWriter(log_dir=str(logdir), purge_step=purge)
        if resume is None:
            text = yaml.safe_dump(dict(config), sort_keys=False, allow_unicode=True)
            self.writer.add_text("config", "```yaml\n" + text + "```", 0)
        self.writer.flush()
        return {}

    def log(self, row: Mapping[str, float], step: int) -> None:
        for key, value in row.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self, status: str = "finished") -> None:
        self.writer.close()


def _after_event_files(logdir: Path, limit: float = 2.0) -> None:
    """Wait (at most ``limit`` s) until the clock is past the second of the newest event file: readers take
    the files in name order, and the name starts with that second (then host and process id), so the new
    file (the one holding the purge) must sort after the old ones."""
    newest = None
    for p in logdir.glob("events.out.tfevents.*"):
        parts = p.name.split(".")
        if len(parts) > 3 and parts[3].isdigit():
            newest = max(newest or 0, int(parts[3]))
    deadline = time.time() + limit
    while newest is not None and int(time.time()) <= newest and time.time() < deadline:
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------- MLflow
_MLFLOW_STATUS = {"finished": "FINISHED", "stopped": "KILLED", "failed": "FAILED"}


@register_tracker("mlflow")
class MLflowTracker(Tracker):
    """An MLflow run through ``MlflowClient`` (no global active run)."""

    module = "mlflow"
    extra = "mlflow"

    def start(
        self, run_dir: Path, config: Mapping[str, Any], resume: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        if "mlflow" not in sys.modules and not (
            os.environ.get("MLFLOW_DISABLE_TELEMETRY") or os.environ.get("DO_NOT_TRACK")
        ):  # MLflow sends usage telemetry unless told not to (read once, at import): offline by default
            with _env(MLFLOW_DISABLE_TELEMETRY="true"):
                import mlflow  # noqa: F401
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(Path(run_dir) / MLFLOW_DB).resolve()}"
        self.client = MlflowClient(tracking_uri=uri)
        run_id = (resume or {}).get("run_id")
        if isinstance(run_id, str) and run_id:
            try:
                run = self.client.get_run(run_id)
            except MlflowException as exc:
                log.warning("report_to: mlflow: run %s not found (%s); starting a new run", run_id, _why(exc))
            else:
                self.run_id = run_id
                self.client.update_run(run_id, status="RUNNING")
                return {"run_id": run_id, "experiment_id": run.info.experiment_id}
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_PROJECT
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            experiment_id = experiment.experiment_id
        else:
            try:
                experiment_id = self.client.create_experiment(name)
            except MlflowException:  # created meanwhile by another run sharing the store
                again = self.client.get_experiment_by_name(name)
                if again is None:
                    raise
                experiment_id = again.experiment_id
        run = self.client.create_run(
            experiment_id,
            run_name=Path(run_dir).name,
            tags={"workbench.run_dir": str(Path(run_dir).resolve())},
        )
        self.run_id = run.info.run_id
        self._log_params(config)
        return {"run_id": self.run_id, "experiment_id": experiment_id}

    def _log_params(self, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        try:
            from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH
        except ImportError:  # pragma: no cover - older MLflow
            MAX_PARAM_VAL_LENGTH, MAX_PARAMS_TAGS_PER_BATCH = 500, 100
        params = [Param(_mlflow_key(k), _text(v)[:MAX_PARAM_VAL_LENGTH]) for k, v in _flatten(config).items()]
        for i in range(0, len(params), MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(self.run_id, params=params[i : i + MAX_PARAMS_TAGS_PER_BATCH])

    def stored_step(self) -> int | None:
        run = self.client.get_run(self.run_id)
        steps = [m.step for key in run.data.metrics for m in self.client.get_metric_history(self.run_id, key)]
        return max(steps, default=None)

    def log(self, row: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), v, now, step) for k, v in row.items()]
        self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, status: str = "finished") -> None:
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(status, "FINISHED"))


def _mlflow_key(key: str) -> str:
    """MLflow accepts letters, digits and ``_ - . space / :`` in names; anything else becomes ``_``."""
    return re.sub(r"[^\w\-. /:]", "_", key)[:250]


# ---------------------------------------------------------------------------------------- W&B
@register_tracker("wandb")
class WandbTracker(Tracker):
    """A W&B run, offline unless ``WANDB_MODE`` says otherwise."""

    module = "wandb"
    extra = "wandb"

    def start(
        self, run_dir: Path, config: Mapping[str, Any], resume: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        import wandb

        project = os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT
        kwargs: dict[str, Any] = {
            "project": project,
            "name": Path(run_dir).name,
            "config": dict(config),
            "settings": wandb.Settings(console="off"),  # our stdout stays ours
        }
        if not os.environ.get("WANDB_MODE"):
            kwargs["mode"] = "offline"  # no network unless the user asked for it
        if not os.environ.get("WANDB_DIR"):
            kwargs["dir"] = str(Path(run_dir))  # W&B adds the folder wandb/ (runs.WANDB_DIR)
        run_id = (resume or {}).get("id")
        if isinstance(run_id, str) and run_id:
            kwargs.update(id=run_id, resume="allow")
        self.run = wandb.init(**kwargs)
        return {"id": self.run.id, "project": project}

    def log(self, row: Mapping[str, float], step: int) -> None:
        self.run.log(dict(row), step=step)

    def close(self, status: str = "finished") -> None:
        self.run.finish(exit_code=1 if status == "failed" else 0)


# ---------------------------------------------------------------------------------------- trackio
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _import_trackio(target: Path) -> Any:
    """trackio, imported with ``TRACKIO_DIR`` set to ``target`` unless the user set it (trackio reads it
    once, at import; the variable is restored afterwards)."""
    if "trackio" not in sys.modules and not os.environ.get("TRACKIO_DIR"):
        with _env(TRACKIO_DIR=str(target)):
            import trackio
    else:
        import trackio
    return trackio


@register_tracker("trackio")
class TrackioTracker(Tracker):
    """A trackio run in its local SQLite store; no server, no dashboard, no system-metrics thread."""

    module = "trackio"
    extra = "trackio"

    def start(
        self, run_dir: Path, config: Mapping[str, Any], resume: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        target = (Path(run_dir) / TRACKIO_DIR).resolve()
        user_dir = os.environ.get("TRACKIO_DIR")
        trackio = _import_trackio(target)
        used = Path(trackio.utils.TRACKIO_DIR)
        if not user_dir and used.resolve() != target:
            log.warning(
                "report_to: trackio writes to %s, not %s: it was imported earlier in this process and reads "
                "TRACKIO_DIR only then",
                used,
                target,
            )
        self.project = os.environ.get("TRACKIO_PROJECT") or DEFAULT_PROJECT
        self.run_name = Path(run_dir).name
        with self._quiet():
            self.run = trackio.init(
                project=self.project,
                name=self.run_name,
                config=dict(config),
                resume="allow" if resume is not None else "never",
                embed=False,
                auto_log_gpu=False,
                auto_log_cpu=False,
            )
        self.trackio = trackio
        return {"dir": str(used), "project": self.project, "run": self.run_name, "run_id": str(self.run.id)}

    @contextlib.contextmanager
    def _quiet(self) -> Iterator[None]:
        """trackio prints to stdout and asks the Hub who the user is: its prints go to the log instead,
        and the user is "unknown" (no request) unless the run goes to a Space or server the user named."""
        buf = io.StringIO()
        with contextlib.ExitStack() as stack:
            stack.enter_context(contextlib.redirect_stdout(buf))
            run_module = sys.modules.get("trackio.run")
            local = not (os.environ.get("TRACKIO_SPACE_ID") or os.environ.get("TRACKIO_SERVER_URL"))
            if local and run_module is not None and hasattr(run_module, "_get_default_namespace"):
                from unittest import mock

                stack.enter_context(mock.patch.object(run_module, "_get_default_namespace", _no_user))
            try:
                yield
            finally:
                for line in _ANSI.sub("", buf.getvalue()).splitlines():
                    if line.strip():
                        log.info("trackio: %s", line.strip())

    def stored_step(self) -> int | None:
        from trackio.sqlite_storage import SQLiteStorage

        step = SQLiteStorage.get_max_step_for_run(self.project, self.run_name, run_id=str(self.run.id))
        return int(step) if step is not None else None

    def log(self, row: Mapping[str, float], step: int) -> None:
        self.run.log(dict(row), step=step)

    def close(self, status: str = "finished") -> None:
        with self._quiet():
            self.run.finish()
        current = getattr(getattr(self.trackio, "context_vars", None), "current_run", None)
        if current is not None and current.get() is self.run:
            current.set(None)  # as trackio.finish() does: nothing left for trackio's exit hook


def _no_user() -> str:
    raise LookupError("workbench: no Hub request for the trackio user name")
