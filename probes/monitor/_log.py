"""The monitor's files in a run directory and their reader (behind ``workbench monitor`` and the explorer).

``<run>/monitor.json`` holds the settings, signal names and probe sets; ``<run>/monitor.jsonl`` one row per
measurement; ``<run>/alerts.jsonl`` one row per alert. The names are ``workbench.runs``' (``docs/runs.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench import RunDir, WorkbenchError
from workbench.runs import ALERTS_JSONL, MONITOR_JSON, MONITOR_JSONL, read_json, read_jsonl

from ._alerts import finite, signal_names

MONITOR_FILE = MONITOR_JSONL
ALERTS_FILE = ALERTS_JSONL
PROBES_FILE = MONITOR_JSON


@dataclass
class MonitorLog:
    """What a run directory holds of the monitor: rows, alerts and the run's state."""

    run_dir: Path
    rows: list[dict[str, Any]]
    alerts: list[dict[str, Any]]
    every: int | None = None
    total_steps: int | None = None
    status: str = "running"  # finished, stopped, running

    @property
    def signals(self) -> list[str]:
        out: list[str] = []
        for r in self.rows:
            for k in signal_names(r):
                if k not in out:
                    out.append(k)
        return out

    def curve(self, signal: str) -> list[tuple[int, float]]:
        """``(step, value)`` points of one signal."""
        return [(int(r["step"]), float(r[signal])) for r in self.rows if finite(r.get(signal))]

    def summary(self) -> list[dict[str, Any]]:
        """Per signal: start, min, max, last, change (last - start), points, first alert step."""
        out = []
        for sig in self.signals:
            pts = self.curve(sig)
            if not pts:
                continue
            vals = [v for _, v in pts]
            first = min((a["step"] for a in self.alerts if a.get("signal") == sig), default=None)
            out.append(
                {
                    "signal": sig,
                    "start": vals[0],
                    "min": min(vals),
                    "max": max(vals),
                    "last": vals[-1],
                    "change": vals[-1] - vals[0],
                    "last_step": pts[-1][0],
                    "points": len(pts),
                    "first_alert_step": first,
                }
            )
        return out

    def overhead(self) -> dict[str, float | None]:
        """Monitor seconds over training seconds, and the mean seconds of one pass."""
        mon = sum(float(r.get("monitor_seconds") or 0.0) for r in self.rows)
        train = sum(float(r.get("train_seconds") or 0.0) for r in self.rows)
        passes = len(self.rows)
        return {
            "monitor_seconds": mon,
            "train_seconds": train,
            "share": mon / train if train > 0 else None,
            "seconds_per_pass": mon / passes if passes else None,
        }


def read_monitor(run_dir: str | Path) -> MonitorLog:
    """The monitor rows and alerts of a finished, stopped or running training run."""
    run = Path(run_dir)
    if not run.is_dir():
        raise WorkbenchError(f"run directory '{run}' does not exist")
    rd = RunDir(run)
    rows = read_jsonl(run / MONITOR_FILE)
    alerts = read_jsonl(run / ALERTS_FILE)
    every = None
    probes = read_json(run / PROBES_FILE)
    if probes:
        every = (probes.get("settings") or {}).get("every")
    summary = rd.train_summary() or {}
    status = "running"
    if summary.get("finished"):
        status = "finished"
    elif summary.get("stopped_by"):
        status = "stopped"
    return MonitorLog(run, rows, alerts, every, summary.get("steps"), status)
