"""Plotly figures of what the packages computed (presentation only; plotly is imported inside each function).

Plotly renders a subset of HTML in every text it draws (``<a href>`` included), so each string that comes
from a run directory (run and metric names, statistics, tokens) goes through :func:`plain` first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def plain(text: object) -> str:
    """``text`` as literal plotly text: ``&``, ``<`` and ``>`` as entities, so no tag (link) is drawn."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _layout(fig: Any, title: str, height: int = 380) -> Any:
    fig.update_layout(title=title, template="plotly_white", height=height, margin={"t": 60, "b": 40})
    return fig


def norms_figure(norms: Mapping[str, Sequence[float]]) -> Any:
    """L2 norm per layer of each statistic of a persona vector."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (stat, values) in enumerate(norms.items()):
        fig.add_trace(
            go.Scatter(
                x=list(range(len(values))),
                y=list(values),
                mode="lines+markers",
                name=plain(stat),
                line={"color": PALETTE[i % len(PALETTE)]},
            )
        )
    fig.update_xaxes(title_text="layer (blocks.{l}.hook_resid_post)", dtick=1)
    fig.update_yaxes(title_text="L2 norm")
    return _layout(fig, "Vector norm per layer")


def projection_histogram(groups: Mapping[str, Sequence[float]], layer: int) -> Any:
    """Overlaid histograms of answer projections, one per group (e.g. positive / negative)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, (name, values) in enumerate(groups.items()):
        fig.add_trace(
            go.Histogram(x=list(values), name=name, opacity=0.6, marker={"color": PALETTE[i % len(PALETTE)]})
        )
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(title_text=f"mean projection of the answer onto the unit vector (layer {layer})")
    fig.update_yaxes(title_text="answers")
    return _layout(fig, f"Projections of positive vs negative answers, layer {layer}")


def sweep_figure(cells: Sequence[Mapping[str, Any]], recommended: int | None, labels: tuple[str, str]) -> Any:
    """Trait and coherence against alpha, one line per layer (the recommended layer drawn thicker)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=labels)
    layers = sorted({int(c["layer"]) for c in cells})
    for i, layer in enumerate(layers):
        for col, key in ((1, "trait"), (2, "coherence")):
            pts = sorted(
                (float(c["alpha"]), c.get(key))
                for c in cells
                if int(c["layer"]) == layer and c.get(key) is not None
            )
            fig.add_trace(
                go.Scatter(
                    x=[a for a, _ in pts],
                    y=[v for _, v in pts],
                    mode="lines+markers",
                    name=f"layer {layer}" + (" (recommended)" if layer == recommended else ""),
                    legendgroup=str(layer),
                    showlegend=col == 1,
                    line={"color": PALETTE[i % len(PALETTE)], "width": 3.5 if layer == recommended else 1.5},
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="steering coefficient alpha")
    return _layout(fig, f"Steering sweep (recommended layer: {recommended})", height=420)


def token_heatmap(rows: Sequence[tuple[str, Sequence[str], Sequence[float]]], layer: int) -> Any:
    """One heatmap row per answer: projection of each answer token, with the token shown in the cell."""
    import plotly.graph_objects as go

    width = max((len(v) for _, _, v in rows), default=0)
    z, text, names = [], [], []
    for name, tokens, values in rows:
        pad = width - len(values)
        z.append([float(v) for v in values] + [None] * pad)
        text.append([plain(t.replace("\n", "\\n")) for t in tokens] + [""] * pad)
        names.append(plain(name))
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=list(range(width)),
            y=names,
            text=text,
            texttemplate="%{text}" if width <= 24 else None,  # longer answers: tokens on hover only
            colorscale="RdBu",
            reversescale=True,
            zmid=0.0,
            colorbar={"title": "projection"},
            hovertemplate="token %{x}: %{text}<br>projection %{z:.3f}<extra>%{y}</extra>",
        )
    )
    fig.update_xaxes(title_text="answer token")
    fig.update_yaxes(autorange="reversed")  # first answer on top
    return _layout(fig, f"Per-token projection onto the vector (layer {layer})", height=160 + 60 * len(rows))


def loss_figure(runs: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str]) -> Any:
    """Training curves: one panel per metric key, one line per run."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    keys = list(keys) or ["loss"]
    fig = make_subplots(
        rows=len(keys),
        cols=1,
        shared_xaxes=True,
        subplot_titles=[plain(k) for k in keys],
        vertical_spacing=0.08,
    )
    for i, (name, rows) in enumerate(runs.items()):
        color = PALETTE[i % len(PALETTE)]
        for r, key in enumerate(keys, start=1):
            pts = [
                (row["step"], row[key])
                for row in rows
                if isinstance(row.get(key), (int, float)) and "step" in row
            ]
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="lines+markers",
                    name=plain(name),
                    legendgroup=plain(name),
                    showlegend=r == 1,
                    line={"color": color},
                ),
                row=r,
                col=1,
            )
    fig.update_xaxes(title_text="optimizer step", row=len(keys), col=1)
    return _layout(fig, "Training curves", height=260 * len(keys) + 80)


def estimates_figure(metrics: Mapping[str, Mapping[str, Any]]) -> Any:
    """Point estimates with their 95% intervals (horizontal error bars; none where no interval was recorded).

    The hover names each interval's method and ``n``; estimates without a value are left out.
    """
    import plotly.graph_objects as go

    names = [n for n in metrics if metrics[n].get("value") is not None]
    vals = [metrics[n]["value"] for n in names]

    def _bar(n: str, side: str) -> float:
        m = metrics[n]
        bound = m.get(side)
        return 0.0 if bound is None else abs(bound - m["value"])

    def _hover(n: str) -> str:
        m = metrics[n]
        count = "n/a" if m.get("n") is None else str(m["n"])
        return plain(f"n = {count}, interval: {m.get('method') or 'not recorded'}")

    fig = go.Figure(
        go.Scatter(
            x=vals,
            y=[plain(n) for n in names],
            mode="markers",
            marker={"size": 10, "color": PALETTE[0]},
            error_x={
                "type": "data",
                "symmetric": False,
                "array": [_bar(n, "high") for n in names],
                "arrayminus": [_bar(n, "low") for n in names],
            },
            text=[_hover(n) for n in names],
            hovertemplate="%{y}: %{x:.3f} (%{text})<extra></extra>",
        )
    )
    fig.update_xaxes(title_text="estimate with its 95% interval (method and n in the table)")
    return _layout(fig, "Evaluation metrics", height=140 + 40 * len(names))


def pareto_figure(
    points: Sequence[tuple[str, float, float]], front: Sequence[int], x_label: str, y_label: str
) -> Any:
    """Runs as points (task performance vs alignment); the Pareto front joined by a line."""
    import plotly.graph_objects as go

    on = set(front)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[p[1] for i, p in enumerate(points) if i not in on],
            y=[p[2] for i, p in enumerate(points) if i not in on],
            text=[plain(p[0]) for i, p in enumerate(points) if i not in on],
            mode="markers+text",
            textposition="top center",
            name="dominated",
            marker={"size": 10, "color": "#999999"},
        )
    )
    best = sorted((points[i] for i in front), key=lambda p: (p[1], p[2]))
    fig.add_trace(
        go.Scatter(
            x=[p[1] for p in best],
            y=[p[2] for p in best],
            text=[plain(p[0]) for p in best],
            mode="lines+markers+text",
            textposition="top center",
            name="Pareto front",
            marker={"size": 12, "color": PALETTE[1]},
        )
    )
    fig.update_xaxes(title_text=plain(x_label))
    fig.update_yaxes(title_text=plain(y_label))
    return _layout(fig, "Pareto front across runs", height=460)


def screen_histogram(diffs: Sequence[float], threshold: float | None, mean: float | None, layer: Any) -> Any:
    """Histogram of projection differences with the flag threshold and the mean marked."""
    import plotly.graph_objects as go

    fig = go.Figure(
        go.Histogram(x=list(diffs), nbinsx=max(10, min(60, len(diffs) // 2 or 1)), name="examples")
    )
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="red", annotation_text="flag threshold")
    if mean is not None:
        fig.add_vline(x=mean, line_color="gray", annotation_text="mean")
    fig.update_xaxes(title_text="projection difference (example's response - base model's answer)")
    fig.update_yaxes(title_text="examples")
    return _layout(fig, plain(f"Projection differences, layer {layer}"))
