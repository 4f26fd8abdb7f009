"""The ``monitor`` training plugin: measures on the main process, writes rows and alerts, may stop the run.

Before the first step, every ``every`` optimizer steps and after the last one it runs one ``measure`` pass,
appends a row to ``<run>/monitor.jsonl``, and turns the alerts it fires into a log line and a row of
``<run>/alerts.jsonl`` (or a clean stop with a checkpoint). On ``--resume`` it keeps the rows up to the
checkpoint's step and the alerts fired by then.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import WorkbenchError
from workbench.io import append_jsonl, atomic_write_json, atomic_write_text
from workbench.runs import read_jsonl
from workbench.training import TrainPlugin

from ._alerts import evaluate_alerts, finite
from ._log import ALERTS_FILE, MONITOR_FILE, PROBES_FILE
from ._measure import Direction, clean, measure
from ._probes import ProbeSet, build_probes
from ._settings import MonitorSettings

if TYPE_CHECKING:
    from workbench.training import TrainContext

log = logging.getLogger("probes.monitor")


class Monitor(TrainPlugin):
    """The ``monitor`` training plugin: measures on the main process, writes rows and alerts, may stop."""

    name = "monitor"
    Settings = MonitorSettings

    def __init__(self, settings: MonitorSettings | dict[str, Any] | None = None) -> None:
        if not isinstance(settings, MonitorSettings):
            settings = MonitorSettings.from_dict(settings)
        super().__init__(settings)
        self.s: MonitorSettings = settings
        self.probes = ProbeSet()
        self.dirs: list[Direction] = []
        self.history: list[dict[str, Any]] = []
        self.fired: set[str] = set()
        self._mark = time.perf_counter()
        self.run_dir: Path | None = None

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, ctx: TrainContext) -> None:
        from .._vector import PersonaVector

        self.run_dir = Path(ctx.run_dir)
        lm = ctx.lm
        for i, vp in enumerate(self.s.vectors):
            key = f"monitor.vectors.{i}"
            try:
                vec = PersonaVector.load(vp.path, statistic=vp.statistic, fingerprint=lm.fingerprint)
            except WorkbenchError as exc:
                raise WorkbenchError(f"{key}.path: {exc}") from None
            name = vp.name or vec.trait
            for layer in vp.layers:
                if layer >= lm.n_layers:
                    raise WorkbenchError(
                        f"{key}.layers: layer {layer} is out of range for this {lm.n_layers}-layer model"
                    )
                v = vec.layer(layer).float()
                norm = float(v.norm())
                if not math.isfinite(norm) or norm == 0:
                    raise WorkbenchError(f"{key}: the '{name}' vector is zero at layer {layer}")
                self.dirs.append(Direction(name, layer, v / norm))  # stays on the CPU, with the statistics
        seen = [(d.name, d.layer) for d in self.dirs]
        if len(set(seen)) != len(seen):
            raise WorkbenchError(f"monitor.vectors: two vectors share a name and layer: {seen}; set 'name'")
        self.probes = build_probes(ctx, self.s)
        known = self.expected_signals()
        for i, rule in enumerate(self.s.alerts):
            if not any(fnmatch.fnmatchcase(sig, rule.signal) for sig in known):
                raise WorkbenchError(
                    f"monitor.alerts.{i}.signal: '{rule.signal}' matches none of this monitor's signals "
                    f"({', '.join(known) or 'none'})"
                )
        if ctx.is_main:
            atomic_write_json(
                self.run_dir / PROBES_FILE,
                {"settings": self.s.to_dict(), "signals": known, "probes": self.probes.described},
            )
        log.info("monitor: every %d steps; signals %s; probes %s", self.s.every, known, self.probes.described)

    def expected_signals(self) -> list[str]:
        out = [f"proj/{d.name}/L{d.layer}" for d in self.dirs] if self.probes.ref_prompts else []
        if self.probes.gen_prompts:
            out += [f"gen_proj/{d.name}/L{d.layer}" for d in self.dirs]
        if self.probes.pairs:
            out += ["pref_gap", "pref_share"]
        if self.probes.indomain_rows:
            out.append("indomain_loss")
        if self.probes.indomain_pairs:
            out.append("indomain_gap")
        return out

    # -- the loop's hooks ------------------------------------------------------------------------
    def on_train_start(self, ctx: TrainContext, step: int) -> None:
        self._mark = time.perf_counter()
        if not ctx.is_main:
            return
        assert self.run_dir is not None
        self.history = [r for r in read_jsonl(self.run_dir / MONITOR_FILE) if r.get("step", 0) <= step]
        alerts = [a for a in read_jsonl(self.run_dir / ALERTS_FILE) if a.get("step", 0) <= step]
        _rewrite(self.run_dir / MONITOR_FILE, self.history)
        _rewrite(self.run_dir / ALERTS_FILE, alerts)
        self.fired = {f"{a.get('rule_id')}@{a.get('signal')}" for a in alerts}
        if not any(r.get("step") == step for r in self.history):
            self._measure(ctx, step)

    def on_step_end(self, ctx: TrainContext, step: int) -> None:
        if not ctx.is_main:
            return
        if step % self.s.every == 0 or step == ctx.total_steps:
            self._measure(ctx, step)

    def _measure(self, ctx: TrainContext, step: int) -> None:
        assert self.run_dir is not None
        t0 = time.perf_counter()
        train_seconds = t0 - self._mark
        rec = measure(ctx, self.probes, self.dirs, self.s)
        t1 = time.perf_counter()
        row: dict[str, Any] = {"step": step, **{k: clean(v) for k, v in rec.values.items()}}
        row["sd"] = {k: clean(v) for k, v in rec.sd.items()}
        row["n"] = rec.n
        row["monitor_seconds"] = round(t1 - t0, 4)
        row["train_seconds"] = round(train_seconds, 4) if step > 0 and self.history else 0.0
        append_jsonl(self.run_dir / MONITOR_FILE, row)
        self.history.append(row)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in row.items() if k in rec.values and finite(v))
        log.info("monitor step %d (%.1f s): %s", step, t1 - t0, shown)
        for alert in evaluate_alerts(self.s.alerts, self.history, self.fired):
            append_jsonl(self.run_dir / ALERTS_FILE, alert)
            log.warning("monitor alert (%s) at step %d: %s", alert["action"], step, alert["message"])
            if alert["action"] == "stop":
                ctx.request_stop(alert["message"], by="monitor")
        self._mark = time.perf_counter()


def _rewrite(path: Path, rows: list[dict[str, Any]]) -> None:
    if path.exists() or rows:
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
