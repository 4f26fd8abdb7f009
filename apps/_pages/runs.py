"""Runs: training curves with the EM monitor's signals and alerts, EM evaluation metrics with intervals, and the
Pareto front across runs."""

from __future__ import annotations

import os
from pathlib import Path

import streamlit as st

from apps import _charts, _runs, _ui
from workbench.runs import ALERTS_JSONL, MONITOR_JSON, MONITOR_JSONL, TRAIN_SUMMARY_JSON, RunDir

ALERT_COLORS = {"warn": "#ff7f0e", "stop": "#d62728"}


def _default_signals(signals: list[str]) -> list[str]:
    """A first view: one projection per vector, the general preference gap and the in-domain behaviour."""
    picked: list[str] = []
    for prefix in ("proj/", "gen_proj/"):
        seen = set()
        for s in signals:
            if s.startswith(prefix) and s.split("/")[1] not in seen:
                seen.add(s.split("/")[1])
                picked.append(s)
        if picked:
            break
    picked += [s for s in ("pref_gap", "indomain_gap", "indomain_loss") if s in signals]
    return picked[:5]


def _monitor_figure(metrics: dict, logs: dict, shown: list[str]):
    """The loss curves with the monitor's signals below them (shared steps) and the alerts as markers."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = ["loss", *shown]
    fig = make_subplots(
        rows=len(panels),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[_charts.plain(p) for p in panels],
        vertical_spacing=0.06,
    )
    for i, (run, log) in enumerate(logs.items()):
        name = _charts.plain(run)
        color = _charts.PALETTE[i % len(_charts.PALETTE)]
        loss = [
            (r["step"], r["loss"]) for r in metrics.get(run, []) if isinstance(r.get("loss"), (int, float))
        ]
        fig.add_trace(go.Scatter(x=[p[0] for p in loss], y=[p[1] for p in loss], mode="lines", name=name,
                                 legendgroup=name, line={"color": color}), row=1, col=1)  # fmt: skip
        for r, sig in enumerate(shown, start=2):
            pts = log.curve(sig)
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                     name=name, legendgroup=name, showlegend=False, line={"color": color}),
                          row=r, col=1)  # fmt: skip
        for alert in log.alerts:
            action = str(alert.get("action", "warn"))
            color_a = ALERT_COLORS.get(action, ALERT_COLORS["warn"])
            fig.add_vline(x=alert.get("step"), line_dash="dot", line_color=color_a, row="all", col=1)
            sig = alert.get("signal")
            if sig in shown and isinstance(alert.get("value"), (int, float)):
                fig.add_trace(
                    go.Scatter(
                        x=[alert.get("step")], y=[alert["value"]], mode="markers", name=f"alert ({action})",
                        showlegend=False, hovertext=[_charts.plain(f"{run}: {alert.get('message', '')}")],
                        hoverinfo="text",
                        marker={"symbol": "x", "size": 13, "color": color_a},
                    ),
                    row=panels.index(sig) + 1, col=1,
                )  # fmt: skip
    fig.update_xaxes(title_text="optimizer step", row=len(panels), col=1)
    fig.update_layout(
        title="EM monitor: loss and monitored signals (dotted lines and x: alerts; orange warn, red stop)",
        template="plotly_white", height=220 * len(panels) + 100, margin={"t": 70, "b": 40},
    )  # fmt: skip
    return fig


# what probes.monitor.read_monitor opens in a run folder (no bare string here: Streamlit would show it)
MONITOR_FILES = (MONITOR_JSONL, ALERTS_JSONL, MONITOR_JSON, TRAIN_SUMMARY_JSON)


def _monitor_section(picked: list[Path], metrics: dict) -> None:
    """Monitor curves of the chosen runs that have ``monitor.jsonl`` (nothing but a hint for the others).

    A run whose monitor files link outside the run root is left out (``read_monitor`` would follow them).
    """
    monitored = []
    for p in picked:
        if not (p / MONITOR_JSONL).exists():
            continue
        if all(ctx.file(p / f) is not None or not os.path.lexists(p / f) for f in MONITOR_FILES):
            monitored.append(p)
        else:
            st.warning(f"{_ui.code(ctx.rel(p))}: monitor files link outside the run root; not read.")
    if not monitored:
        st.caption("No EM monitor curves for these runs: add a `monitor:` block to the training config "
                   "(docs/monitor.md).")  # fmt: skip
        return
    from probes.monitor import read_monitor

    st.subheader("EM monitor")
    logs = {ctx.rel(p): read_monitor(p) for p in monitored}
    signals: list[str] = []
    for log in logs.values():
        signals += [s for s in log.signals if s not in signals]
    shown = st.multiselect("Monitor signals", signals, default=_default_signals(signals), key="runs_monitor")
    st.plotly_chart(_monitor_figure(metrics, logs, shown), key="runs_monitor_chart")
    alerts = [
        {"run": name, "step": a.get("step"), "action": a.get("action"), "signal": a.get("signal"),
         "value": a.get("value"), "threshold": a.get("threshold"), "message": a.get("message")}
        for name, log in logs.items()
        for a in log.alerts
    ]  # fmt: skip
    if alerts:
        st.dataframe(alerts, hide_index=True)
    else:
        st.caption("No monitor alert in these runs.")
    notes = []
    for name, log in logs.items():
        share = log.overhead()["share"]
        if share is not None:
            notes.append(f"{_ui.code(name)}: monitoring took {100 * share:.1f}% of the training time")
    if notes:
        st.caption("; ".join(notes))


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _estimate_rows(found: dict[str, dict]) -> list[dict[str, object]]:
    """The table of an evaluation's metrics: value, interval and its method, n, and the caveat."""
    rows = []
    for k, v in found.items():
        empty = v["value"] is None or v["n"] == 0
        rows.append(
            {
                "metric": k,
                "value": _fmt(v["value"]),
                "95% interval": f"[{_fmt(v['low'])}, {_fmt(v['high'])}]"
                if v["interval"] and not empty
                else "n/a",
                "interval method": v["method"] or ("none" if not v["interval"] else "not recorded"),
                "n": "n/a" if v["n"] is None or v["n"] == 0 else str(v["n"]),
                "caveat": _runs.estimate_note(v),
                "better": "higher" if _runs.higher_is_better(k) else "lower",
            }
        )
    return rows


st.title("Runs")
ctx = _ui.require_context()

# ------------------------------------------------------------------------------------------ training
st.header("Training curves")
if not ctx.found.trainings:
    st.info(
        f"No training run (metrics.jsonl) under {_ui.code(ctx.rel(ctx.scope))}. Start one with "
        "`workbench train CONFIG.yaml`."
    )
else:
    by_name = {ctx.rel(p): p for p in ctx.found.trainings}
    chosen = st.multiselect("Training runs", list(by_name), default=list(by_name)[:6], key="runs_trainings")
    picked = [by_name[n] for n in chosen]
    metrics = {ctx.rel(p): RunDir(p, root=ctx.root).metrics() for p in picked}
    keys: list[str] = []
    for rows in metrics.values():
        for row in rows:
            for k, v in row.items():
                if (
                    k not in ("step", "epoch", "examples", "seconds")
                    and k not in keys
                    and isinstance(v, (int, float))
                ):
                    keys.append(k)
    if not picked:
        st.info("Pick at least one training run.")
    elif not any(metrics.values()):
        st.info("The chosen runs have not logged any step yet.")
    else:
        default = [k for k in ("loss", "eval_loss") if k in keys] or keys[:1]
        shown = st.multiselect("Quantities", keys, default=default, key="runs_keys")
        st.plotly_chart(_charts.loss_figure(metrics, shown), key="runs_loss")
        table = []
        for p in picked:
            summary = RunDir(p, root=ctx.root).train_summary() or {}
            last = (metrics[ctx.rel(p)] or [{}])[-1]
            table.append(
                {
                    "run": ctx.rel(p),
                    "steps logged": len(metrics[ctx.rel(p)]),
                    "last step": last.get("step"),
                    "last loss": last.get("loss"),
                    "final eval loss": summary.get("final_eval_loss"),
                    "finished": summary.get("finished", False),
                    "stopped at step": summary.get("stopped_at_step"),
                    "trainable parameters": summary.get("trainable_parameters"),
                }
            )
        st.dataframe(table, hide_index=True)
        _monitor_section(picked, metrics)

# ------------------------------------------------------------------------------------------ evaluations
st.header("EM evaluation")
summaries = {ctx.rel(p): RunDir(p, root=ctx.root).summary() or {} for p in ctx.found.evals}
per_run = {name: _runs.eval_metrics(s) for name, s in summaries.items()}
if not summaries:
    st.info(f"No evaluation (summary.json from `workbench eval`) under {_ui.code(ctx.rel(ctx.scope))}.")
else:
    name = st.selectbox("Evaluation", list(summaries), key="runs_eval")
    summary = summaries[name]
    c = st.columns(3)
    c[0].metric("Model", _ui.md(summary.get("model")))
    adapter = summary.get("adapter")
    c[1].metric("Adapter", "none" if not adapter else _ui.md(Path(str(adapter)).parent.name or str(adapter)))
    c[2].metric("Judge", _ui.md(summary.get("judge")))
    found = _runs.eval_metrics(summary, with_empty=True)
    if not found:
        st.info("This evaluation has no metric yet.")
    else:
        if per_run[name]:
            st.plotly_chart(_charts.estimates_figure(per_run[name]), key="runs_estimates")
        st.dataframe(_estimate_rows(found), hide_index=True)
        small = [k for k, v in found.items() if v["n"] is not None and v["n"] < _runs.SMALL_N]
        if small:
            st.warning(
                f"Caveat: {len(small)} of {len(found)} metrics rest on fewer than {_runs.SMALL_N} rows "
                f"(n = 0 shown as n/a): {', '.join(_ui.code(k) for k in small)}. Their intervals are rough "
                "(a Wilson bound treats answers as independent, so it is narrower than a clustered design "
                "really allows); evaluate more questions or samples before comparing runs."
            )
        st.caption(
            "Intervals are 95%: cluster bootstrap over questions for judged answers, paired bootstrap for the "
            "preference gap, Wilson for a rate with no or only events (see each metric's interval method)."
        )

# ------------------------------------------------------------------------------------------ pareto
st.header("Pareto front: task performance vs general alignment")
names = sorted({m for found in per_run.values() for m in found})
if len(per_run) < 1 or len(names) < 2:
    st.info(
        "The Pareto plot needs evaluations with at least two metrics (e.g. an exact-match task set and a "
        "free-form or preference set) under the chosen directory."
    )
else:
    from workbench.metrics import pareto_front

    task_default = next((n for n in names if "accuracy" in n), names[0])
    align_default = next((n for n in names if n != task_default and not _runs.higher_is_better(n)), names[-1])
    c = st.columns(2)
    x = c[0].selectbox("Task performance (x)", names, index=names.index(task_default), key="runs_x")
    y = c[1].selectbox("General alignment (y)", names, index=names.index(align_default), key="runs_y")
    points = [
        (run, found[x]["value"], found[y]["value"])
        for run, found in per_run.items()
        if x in found and y in found
    ]
    if not points:
        st.info(f"No evaluation has both {_ui.code(x)} and {_ui.code(y)}.")
    else:
        maximize = (_runs.higher_is_better(x), _runs.higher_is_better(y))
        front = pareto_front([(p[1], p[2]) for p in points], maximize=maximize)
        label = {True: "higher is better", False: "lower is better"}
        st.plotly_chart(
            _charts.pareto_figure(
                points, front, f"{x} ({label[maximize[0]]})", f"{y} ({label[maximize[1]]})"
            ),
            key="runs_pareto",
        )
        st.caption(
            f"On the front: {', '.join(_ui.code(points[i][0]) for i in front)} ({len(points)} runs plotted)."
        )
