"""``workbench monitor RUN_DIR``: the EM monitor's curves of a finished, stopped or running training run.

A typer-compatible command function; ``workbench/cli.py`` registers it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer


def _num(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.4g}"


def format_summary(log: Any, pattern: str | None = None) -> list[str]:
    """The lines ``workbench monitor`` prints for a ``MonitorLog``."""
    import fnmatch

    lines = []
    state = {"finished": "finished", "stopped": "stopped by an alert", "running": "running (or interrupted)"}
    last = log.rows[-1]["step"] if log.rows else None
    total = f" of {log.total_steps}" if log.total_steps else ""
    lines.append(
        f"run: {log.run_dir}  [{state.get(log.status, log.status)}; last monitored step {last}{total}]"
    )
    if not log.rows:
        lines.append("no monitor rows yet (is there a `monitor:` block in the run's config.yaml?)")
        return lines
    over = log.overhead()
    share = over["share"]
    every = f"every {log.every} steps, " if log.every else ""
    lines.append(
        f"monitor: {len(log.rows)} measurements ({every}{over['seconds_per_pass']:.2f} s per pass); "
        f"{over['monitor_seconds']:.1f} s monitoring vs {over['train_seconds']:.1f} s training"
        + (f" = {100 * share:.1f}% overhead" if share is not None else "")
    )
    rows = [r for r in log.summary() if pattern is None or fnmatch.fnmatchcase(r["signal"], pattern)]
    width = max([len("signal")] + [len(r["signal"]) for r in rows])
    head = (
        f"{'signal':<{width}}  {'start':>9}  {'min':>9}  {'max':>9}  {'last':>9}  {'change':>9}  first alert"
    )
    lines.append(head)
    lines.append("-" * len(head))
    for r in rows:
        alert = "-" if r["first_alert_step"] is None else f"step {r['first_alert_step']}"
        lines.append(
            f"{r['signal']:<{width}}  {_num(r['start']):>9}  {_num(r['min']):>9}  {_num(r['max']):>9}  "
            f"{_num(r['last']):>9}  {_signed(r['change']):>9}  {alert}"
        )
    if log.alerts:
        lines.append(f"alerts ({len(log.alerts)}):")
        for a in log.alerts:
            lines.append(f"  step {a.get('step')}: {a.get('action', 'warn')}: {a.get('message', a)}")
    else:
        lines.append("alerts: none")
    return lines


def _signed(x: Any) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:+.4g}"


def monitor(
    run_dir: Annotated[Path, typer.Argument(help="A training run directory (with monitor.jsonl).")],
    signal: Annotated[
        str | None, typer.Option("--signal", "-s", help="Only signals matching this glob, e.g. 'proj/*'.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the summary, alerts and overhead as one JSON object.")
    ] = False,
) -> None:
    """Summary of the EM monitor's curves: per signal start / min / max / last and the first alert step."""
    from ._log import read_monitor

    log = read_monitor(run_dir)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "run_dir": str(log.run_dir),
                    "status": log.status,
                    "every": log.every,
                    "total_steps": log.total_steps,
                    "signals": log.summary(),
                    "alerts": log.alerts,
                    "overhead": log.overhead(),
                },
                indent=2,
            )
        )
        return
    for line in format_summary(log, signal):
        typer.echo(line)
