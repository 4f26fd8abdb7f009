"""Per-run training plots: ``plots.html`` with one panel per logged quantity (plotly, imported lazily)."""

from __future__ import annotations

import logging
from pathlib import Path

from workbench._html import write_figure_html
from workbench.runs import METRICS_JSONL, PLOTS_HTML, RunDir

log = logging.getLogger(__name__)

_SKIP = {"step", "epoch", "examples", "seconds"}


def write_plots(run_dir: str | Path) -> Path | None:
    """Write ``<run_dir>/plots.html`` from ``metrics.jsonl``; returns its path (None without plotly)."""
    run_dir = Path(run_dir)
    run = RunDir(run_dir)
    if run.file(METRICS_JSONL) is None:
        return None
    rows = run.metrics()  # a line cut by a crash is skipped
    keys: list[str] = []
    for r in rows:
        for k, v in r.items():
            if k not in _SKIP and k not in keys and isinstance(v, int | float):
                keys.append(k)
    try:
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots
    except ImportError:
        log.warning("plotly is not installed; no plots.html for %s", run_dir)
        return None
    if not keys:
        return None
    fig = make_subplots(rows=len(keys), cols=1, shared_xaxes=True, subplot_titles=keys, vertical_spacing=0.02)
    for i, k in enumerate(keys, start=1):
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), int | float)]
        fig.add_trace(
            go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers", name=k),
            row=i,
            col=1,
        )
    fig.update_layout(height=220 * len(keys), showlegend=False, title=f"training metrics: {run_dir.name}")
    fig.update_xaxes(title_text="step", row=len(keys), col=1)
    out = run_dir / PLOTS_HTML
    write_figure_html(fig, out)  # plotly.min.js beside it (or in the enclosing run directory)
    return out
