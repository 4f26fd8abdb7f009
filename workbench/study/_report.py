"""A study's report: ``report.html`` with ``plotly.min.js`` beside it, readable from a folder with no network.

It reads only the study directory's contract files (``study.yaml``, ``cells.json``, ``results.csv``,
``aggregate.csv``, ``paired.csv``, ``pareto.json`` and the cells' run manifests) and shows:

- the title, the description and the grid: every cell with its grid labels, seed, state and links to its runs;
- one Pareto scatter per ``pareto.json`` plot (points aggregated over seeds, 95% intervals as error bars, the
  front as a step line; clicking a point opens its run folder, or, when it stands for several runs, jumps to
  its row in the table under the plot, which links every run);
- one forest plot of paired differences per (evaluation, set, metric): the rows pooled over seeds bold, the
  per-seed rows faint, a zero line;
- one bar chart per (evaluation, set, metric) of the aggregate by grid values, each seed's value a dot;
- the aggregate table, values with their intervals ("0.123 [0.045, 0.201]").

Every string read from the files (labels come from the user's YAML) is escaped: ``html.escape`` in the page,
``<``, ``>`` and ``&`` as entities in plotly text (plotly draws a subset of HTML, links included). Links to
runs are relative paths inside the study directory; anything else (an absolute path, ``..``, a URL) is shown as
text. A study still running gets a report of what exists so far.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from workbench import WorkbenchError
from workbench.html import ensure_plotly_js, plotly_js_src
from workbench.io import atomic_write_text
from workbench.runs import (
    AGGREGATE_CSV,
    CELLS_DIR,
    CELLS_JSON,
    EVAL_DIR,
    PAIRED_CSV,
    PARETO_JSON,
    RECOMMEND_JSON,
    REPORT_HTML,
    RESULTS_CSV,
    STUDY_YAML,
    read_json,
    read_yaml,
)

from ._cells import cell_states

STATE_COLORS = {
    "done": "#2ca02c",
    "running": "#1f77b4",
    "failed": "#d62728",
    "interrupted": "#ff7f0e",
    "pending": "#999999",
}
_NUMERIC = ("value", "low", "high", "n", "n_seeds", "seed_sd")
_COLUMNS = {
    RESULTS_CSV: ("cell", "seed", "eval", "setting", "set", "metric", "value", "low", "high", "n", "method", "run"),
    AGGREGATE_CSV: ("eval", "setting", "set", "metric", "value", "low", "high", "n_seeds", "seed_sd", "method",
                    "cells", "runs"),
    PAIRED_CSV: ("cell", "reference", "comparison", "seed", "eval", "setting", "set", "metric", "value", "low",
                 "high", "n", "method"),
}  # fmt: skip
_FONT = (
    "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"  # local fonts only
)
_CLICK_JS = """var gd = document.getElementById('{plot_id}');
gd.on('plotly_click', function (ev) {
  var p = ev.points && ev.points[0];
  if (!p || !p.customdata) { return; }
  if (p.customdata[0]) { window.open(p.customdata[0], '_blank'); }
  else if (p.customdata[1]) { window.location.hash = p.customdata[1]; }
});"""


# ---------------------------------------------------------------------------------------- reading
def _read_csv(study: Path, name: str) -> Any:
    """A contract table with its label columns as text and its numbers as floats; None when not written yet."""
    path = study / name
    if not path.is_file():
        return None
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)  # a label "NA" or "null" stays a label
    except pd.errors.EmptyDataError:  # an empty file: nothing to show yet
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # pandas' parser errors are ValueErrors
        raise WorkbenchError(f"cannot read {path}: {' '.join(str(exc).split())[:200]}") from None
    missing = [c for c in _COLUMNS[name] if c not in df.columns]
    if missing:
        raise WorkbenchError(
            f"{path} lacks the column(s) {', '.join(missing)}; a study table has {', '.join(_COLUMNS[name])}"
        )
    for col in _NUMERIC:
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _cell_dir_name(cell_id: object) -> str:
    text = str(cell_id)
    if not text or text in (".", "..") or any(c in text for c in "/\\\0"):
        raise WorkbenchError(
            f"{CELLS_JSON}: cell id '{text}' is not a folder name (one path component, no '/', '\\' or '..')"
        )
    return text


def _eval_names(cell: dict[str, Any]) -> list[str]:
    evals = cell.get("evals") or []
    return [str(e) for e in evals]  # a list of names, or a mapping name -> options


def _read_study(study: Path) -> dict[str, Any]:
    cells_doc = read_json(study / CELLS_JSON)
    if cells_doc is None:
        raise WorkbenchError(
            f"'{study}' is not a study directory: {CELLS_JSON} is missing or unreadable (written by "
            "`workbench study run STUDY.yaml --out DIR`)"
        )
    cells = cells_doc.get("cells")
    if not isinstance(cells, list) or not all(isinstance(c, dict) and "id" in c for c in cells):
        raise WorkbenchError(f"{study / CELLS_JSON}: 'cells' must be a list of objects with an 'id'")
    for c in cells:
        _cell_dir_name(c["id"])
    spec = read_yaml(study / STUDY_YAML) or {}
    pareto = read_json(study / PARETO_JSON) or {}
    plots = pareto.get("plots")
    plots = plots if isinstance(plots, list) else []
    return {
        "name": str(spec.get("name") or cells_doc.get("study") or study.name),
        "description": str(spec.get("description") or ""),
        "grid_keys": [str(k) for k in cells_doc.get("grid_keys") or []],
        "cells": cells,
        "results": _read_csv(study, RESULTS_CSV),
        "aggregate": _read_csv(study, AGGREGATE_CSV),
        "paired": _read_csv(study, PAIRED_CSV),
        "pareto": [p for p in plots if isinstance(p, dict)],
    }


# ---------------------------------------------------------------------------------------- formatting
def _e(text: object) -> str:
    """Text for the page (``html.escape``, quotes included)."""
    return html.escape(str(text), quote=True)


def _plain(text: object) -> str:
    """Text for plotly (which draws ``<b>``, ``<a href>`` and friends): ``&``, ``<`` and ``>`` as entities."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _num(value: Any) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _fmt(value: Any, decimals: int = 3) -> str:
    x = _num(value)
    if x is None:
        return "n/a"
    if decimals == 3 and x != 0 and abs(x) < 0.001:  # a lone tiny number keeps 3 significant digits
        return f"{x:.3g}"
    return f"{x:.{decimals}f}"


def _estimate(value: Any, low: Any, high: Any) -> str:
    """``0.123 [0.045, 0.201]``; the value alone when there is no interval; ``n/a`` without a value.

    Three decimals, more when the interval is narrower than 0.01 (so its width keeps two digits).
    """
    v, lo, hi = _num(value), _num(low), _num(high)
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return _fmt(v)
    width = hi - lo
    decimals = 3 if width <= 0 else max(3, min(8, 1 - math.floor(math.log10(width))))
    return f"{_fmt(v, decimals)} [{_fmt(lo, decimals)}, {_fmt(hi, decimals)}]"


def _span_est(value: Any, low: Any, high: Any) -> str:
    return f'<span class="est">{_e(_estimate(value, low, high))}</span>'


def _href(rel: object, study: Path) -> str | None:
    """A relative link to a folder of the study (``None`` for anything that is not one: absolute, ``..``,
    a URL, a missing folder)."""
    text = str(rel).strip()
    if not text or "\\" in text or "\0" in text:
        return None
    path = PurePosixPath(text)
    if path.is_absolute() or ".." in path.parts or ":" in path.parts[0]:
        return None
    if not (study / path).is_dir():
        return None
    return quote(path.as_posix(), safe="/=,+-._~") + "/"


def _link(rel: object, study: Path, label: object | None = None) -> str:
    href = _href(rel, study)
    text = _e(rel if label is None else label)
    return f'<a href="{_e(href)}">{text}</a>' if href else text


def _combo_parts(values: dict[str, Any], keys: list[str]) -> list[str]:
    """``["key=label", ...]`` of a grid combination; ``["base"]`` for the baseline."""
    if keys and all(str(values.get(k)) == "base" for k in keys):
        return ["base"]
    return [f"{k}={values.get(k, '')}" for k in keys]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "x"


# ---------------------------------------------------------------------------------------- figures
def _figure_div(fig: Any, div_id: str, *, clickable: bool = False) -> str:
    fig.update_layout(template="plotly_white", font={"family": _FONT})
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,  # loaded once in the page's head, from the study directory
            div_id=div_id,
            post_script=_CLICK_JS if clickable else None,
            config={"displaylogo": False, "responsive": True},
        )
    )


def _pareto_figure(
    plot: dict[str, Any], points: list[dict[str, Any]], anchors: list[str], study: Path
) -> Any:
    import plotly.graph_objects as go

    def axis(name: str) -> tuple[str, bool]:
        found = plot.get(name)
        spec: dict[str, Any] = found if isinstance(found, dict) else {}
        label = str(spec.get("label") or spec.get("key") or name)
        maximize = bool(spec.get("maximize", True))
        return f"{label} ({'higher' if maximize else 'lower'} is better)", maximize

    (x_title, x_max), (y_title, _) = axis("x"), axis("y")
    fig = go.Figure()
    shown = [i for i, p in enumerate(points) if _num(p.get("x")) is not None and _num(p.get("y")) is not None]
    for on_front, name, color, size in (
        (False, "dominated", "#9a9a9a", 10),
        (True, "on the front", "#d62728", 13),
    ):
        idx = [i for i in shown if bool(points[i].get("on_front")) == on_front]
        if not idx:
            continue
        hover = []
        for i in idx:
            p = points[i]
            runs = [str(r) for r in p.get("runs") or []]
            cells = ", ".join(str(c) for c in p.get("cells") or [])
            hover.append(
                f"<b>{_plain(p.get('label', ''))}</b><br>x {_plain(_estimate(p.get('x'), p.get('x_low'), p.get('x_high')))}"
                f"<br>y {_plain(_estimate(p.get('y'), p.get('y_low'), p.get('y_high')))}<br>cells: {_plain(cells)}"
                f"<br>click: {'open its run' if len(runs) == 1 else f'its {len(runs)} runs in the table'}"
            )
        fig.add_trace(
            go.Scatter(
                x=[_num(points[i]["x"]) for i in idx],
                y=[_num(points[i]["y"]) for i in idx],
                mode="markers+text",
                text=[_plain(points[i].get("label", "")) for i in idx],
                textposition="top center",
                name=name,
                marker={"size": size, "color": color},
                error_x={"type": "data", "symmetric": False, "array": [_err(points[i], "x", "high") for i in idx],
                         "arrayminus": [_err(points[i], "x", "low") for i in idx], "thickness": 1},
                error_y={"type": "data", "symmetric": False, "array": [_err(points[i], "y", "high") for i in idx],
                         "arrayminus": [_err(points[i], "y", "low") for i in idx], "thickness": 1},
                customdata=[[_single_run(points[i], study), anchors[i]] for i in idx],
                hovertext=hover,
                hoverinfo="text",
            )
        )  # fmt: skip
    front = sorted(
        (i for i in shown if points[i].get("on_front")),
        key=lambda i: (_num(points[i]["x"]), _num(points[i]["y"])),
    )
    if len(front) > 1:  # the staircase bounding the dominated region
        fig.add_trace(
            go.Scatter(
                x=[_num(points[i]["x"]) for i in front],
                y=[_num(points[i]["y"]) for i in front],
                mode="lines",
                line={"color": "#d62728", "width": 1.5, "dash": "dot", "shape": "vh" if x_max else "hv"},
                name="Pareto front",
                hoverinfo="skip",
            )
        )  # fmt: skip
    fig.update_xaxes(title_text=_plain(x_title))
    fig.update_yaxes(title_text=_plain(y_title))
    fig.update_layout(
        title=_plain(plot.get("title") or "Pareto front"), height=480, margin={"t": 60, "b": 50}
    )
    return fig


def _err(point: dict[str, Any], axis: str, side: str) -> float:
    """The length of one side of a point's error bar (0 where the bound is missing)."""
    v, bound = _num(point.get(axis)), _num(point.get(f"{axis}_{side}"))
    return 0.0 if v is None or bound is None else abs(bound - v)


def _error_bars(values: Any, lows: Any, highs: Any) -> dict[str, Any]:
    """Plotly error bars from value, low and high columns (no bar where a bound is missing)."""
    rows = [(_num(v), _num(lo), _num(hi)) for v, lo, hi in zip(values, lows, highs, strict=True)]
    return {
        "type": "data",
        "symmetric": False,
        "array": [0.0 if v is None or hi is None else abs(hi - v) for v, _, hi in rows],
        "arrayminus": [0.0 if v is None or lo is None else abs(v - lo) for v, lo, _ in rows],
    }


def _single_run(point: dict[str, Any], study: Path) -> str:
    runs = [str(r) for r in point.get("runs") or []]
    return (_href(runs[0], study) or "") if len(runs) == 1 else ""


def _forest_figure(rows: Any, keys: list[str], title: str) -> Any:
    """Paired differences with their intervals: pooled rows (seed ``all``) bold, per-seed rows faint.

    A row is named by its comparison, the grid values the comparison does not name and the setting; the
    per-seed rows of a comparison come first, then its pooled row.
    """
    import plotly.graph_objects as go

    def group(r: Any) -> str:
        comparison = str(r["comparison"])
        rest = [f"{k}={r[k]}" for k in keys if k in r.index and f"{k}=" not in comparison]
        setting = str(r["setting"])
        return comparison + (f" ({', '.join(rest)})" if rest else "") + (f" [{setting}]" if setting else "")

    rows = rows.assign(
        _pooled=rows["seed"].astype(str) == "all", _group=[group(r) for _, r in rows.iterrows()]
    )
    order = {g: i for i, g in enumerate(dict.fromkeys(rows["_group"]))}
    rows = rows.assign(_order=rows["_group"].map(order))
    rows = rows.sort_values(["_order", "_pooled", "seed"], kind="stable")
    labels = []
    for _, r in rows.iterrows():
        lab = _plain(f"{r['_group']}, all seeds" if r["_pooled"] else f"{r['_group']}, seed {r['seed']}")
        labels.append(f"<b>{lab}</b>" if r["_pooled"] else lab)
    rows = rows.assign(_label=labels)
    fig = go.Figure()
    for pooled, name, color, size, opacity in ((False, "per seed", "#7f7f7f", 7, 0.4),
                                               (True, "pooled over seeds", "#1f1f1f", 11, 1.0)):  # fmt: skip
        part = rows[rows["_pooled"] == pooled]
        if part.empty:
            continue
        v, lo, hi = part["value"], part["low"], part["high"]
        fig.add_trace(
            go.Scatter(
                x=[_num(x) for x in v],
                y=list(part["_label"]),
                mode="markers",
                name=name,
                opacity=opacity,
                marker={"size": size, "color": color, "symbol": "diamond" if pooled else "circle"},
                error_x=_error_bars(v, lo, hi),
                hovertext=[
                    _plain(f"{r['cell']} minus {r['reference']}: {_estimate(r['value'], r['low'], r['high'])}, "
                           f"n = {_fmt_int(r['n'])} items, {r['method']}")
                    for _, r in part.iterrows()
                ],
                hoverinfo="text",
            )
        )  # fmt: skip
    fig.add_vline(x=0, line_dash="dash", line_color="#444444")
    fig.update_yaxes(categoryorder="array", categoryarray=labels, autorange="reversed")
    fig.update_xaxes(title_text="difference (cell minus reference, same items), 95% interval")
    fig.update_layout(title=_plain(title), height=140 + 28 * len(labels), margin={"t": 60, "b": 50})
    return fig


def _fmt_int(value: Any) -> str:
    x = _num(value)
    return "n/a" if x is None else str(int(x))


def _bars_figure(agg: Any, res: Any, keys: list[str], title: str) -> Any:
    """The aggregate (mean over seeds) per grid combination with its interval; each seed's value a dot."""
    import plotly.graph_objects as go

    settings = list(dict.fromkeys(str(s) for s in agg["setting"]))
    multi = len(settings) > 1

    def xs(frame: Any) -> Any:
        labels = (
            ["<br>".join(_plain(x) for x in _combo_parts(dict(r), keys)) for _, r in frame[keys].iterrows()]
            if keys
            else ["all"] * len(frame)
        )
        if multi:
            return [[_plain(s or "(none)") for s in frame["setting"]], labels]
        return labels

    v, lo, hi = agg["value"], agg["low"], agg["high"]
    fig = go.Figure(
        go.Bar(
            x=xs(agg),
            y=[_num(x) for x in v],
            name="mean over seeds",
            marker={"color": "#9ecae1"},
            error_y=_error_bars(v, lo, hi),
            hovertext=[_plain(f"{_estimate(r['value'], r['low'], r['high'])}, {_fmt_int(r['n_seeds'])} seed(s), "
                              f"seed sd {_fmt(r['seed_sd'])}, {r['method']}") for _, r in agg.iterrows()],
            hoverinfo="text",
        )
    )  # fmt: skip
    if res is not None and not res.empty:
        seeded = res[res["seed"].astype(str).str.strip() != ""]
        if not seeded.empty:
            fig.add_trace(
                go.Scatter(
                    x=xs(seeded),
                    y=[_num(x) for x in seeded["value"]],
                    mode="markers",
                    name="each seed",
                    marker={"size": 8, "color": "#08306b", "line": {"width": 1, "color": "white"}},
                    hovertext=[_plain(f"seed {r['seed']}: {_fmt(r['value'])} ({r['cell']})") for _, r in seeded.iterrows()],
                    hoverinfo="text",
                )
            )  # fmt: skip
    fig.update_layout(title=_plain(title), height=420, margin={"t": 60, "b": 80}, barmode="overlay")
    return fig


# ---------------------------------------------------------------------------------------- sections
def _table(header: list[str], rows: list[list[str]], cls: str = "", ids: list[str] | None = None) -> str:
    """An HTML table; ``header`` is escaped here, the cells arrive as HTML (already escaped)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join(
        (f'<tr id="{_e(ids[i])}">' if ids else "<tr>") + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
        for i, r in enumerate(rows)
    )
    return f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'


def _grid_section(data: dict[str, Any], states: dict[str, str], study: Path) -> str:
    keys = data["grid_keys"]
    counts: dict[str, int] = {}
    rows = []
    for cell in data["cells"]:
        cid = str(cell["id"])
        state = states.get(cid, "pending")
        counts[state] = counts.get(state, 0) + 1
        values = cell.get("values") if isinstance(cell.get("values"), dict) else {}
        cdir = f"{CELLS_DIR}/{cid}"
        runs = ([_link(f"{cdir}/train", study, "train")] if cell.get("train") else []) + [
            _link(f"{cdir}/{EVAL_DIR}/{e}", study, e) for e in _eval_names(cell)
        ]
        seed = cell.get("seed")
        rows.append([_e(cid), *[_e(values.get(k, "")) for k in keys], _e("" if seed is None else seed),
                     f'<span class="state" style="background:{STATE_COLORS.get(state, "#999")}">{_e(state)}</span>',
                     " ".join(runs)])  # fmt: skip
    order = [*STATE_COLORS, *(s for s in counts if s not in STATE_COLORS)]
    summary = ", ".join(f"{counts[s]} {_e(s)}" for s in order if s in counts)
    return (
        f'<h2 id="grid">Grid</h2><p>{len(data["cells"])} cells: {summary}. Grid keys: '
        f"{', '.join(f'<code>{_e(k)}</code>' for k in keys) or 'none'}.</p>"
        + _table(["cell", *keys, "seed", "state", "runs"], rows)
    )


def _pareto_section(data: dict[str, Any], study: Path) -> tuple[str, int]:
    if not data["pareto"]:
        return "", 0
    parts = ['<h2 id="pareto">Pareto fronts</h2>']
    for k, plot in enumerate(data["pareto"]):
        points = [p for p in plot.get("points") or [] if isinstance(p, dict)]
        anchors = [f"row-pareto-{k}-{i}" for i in range(len(points))]
        parts.append(_figure_div(_pareto_figure(plot, points, anchors, study), f"pareto-{k}", clickable=True))
        rows = []
        for p in points:
            runs = "<br>".join(_link(r, study) for r in p.get("runs") or [])
            rows.append([_e(p.get("label", "")),
                         _span_est(p.get("x"), p.get("x_low"), p.get("x_high")),
                         _span_est(p.get("y"), p.get("y_low"), p.get("y_high")),
                         "yes" if p.get("on_front") else "", _e(", ".join(map(str, p.get("cells") or []))), runs])  # fmt: skip
        x = plot.get("x") if isinstance(plot.get("x"), dict) else {}
        y = plot.get("y") if isinstance(plot.get("y"), dict) else {}
        parts.append(_table(["point", f"x: {x.get('key', '')}", f"y: {y.get('key', '')}", "on front", "cells",
                             "runs"], rows, "points", anchors))  # fmt: skip
    return "".join(parts), len(data["pareto"])


def _metric_groups(df: Any) -> list[tuple[tuple[str, str, str], Any]]:
    """``((eval, set, metric), rows)`` in the order the table first names them."""
    return [
        ((str(e), str(s), str(m)), g) for (e, s, m), g in df.groupby(["eval", "set", "metric"], sort=False)
    ]


def _paired_section(data: dict[str, Any]) -> tuple[str, int]:
    df = data["paired"]
    if df is None or df.empty:
        return "", 0
    parts = ['<h2 id="paired">Paired differences</h2><p>Each cell minus its reference cell (same seed) on the '
             "same items; bold rows pool the items of every seed, faint rows are single seeds.</p>"]  # fmt: skip
    keys = [k for k in data["grid_keys"] if k in df.columns]
    groups = _metric_groups(df)
    for k, ((ename, set_name, metric), g) in enumerate(groups):
        title = f"{ename} / {set_name} / {metric}: paired differences"
        parts.append(_figure_div(_forest_figure(g, keys, title), f"forest-{k}-{_slug(metric)}"))
    return "".join(parts), len(groups)


def _bars_section(data: dict[str, Any]) -> tuple[str, int]:
    agg, res, keys = data["aggregate"], data["results"], data["grid_keys"]
    if agg is None or agg.empty:
        return "", 0
    keys = [k for k in keys if k in agg.columns]
    parts = ['<h2 id="bars">Metrics by grid values</h2><p>Bars: mean over seeds with its interval; dots: each '
             "seed's value.</p>"]  # fmt: skip
    groups = _metric_groups(agg)
    for k, ((ename, set_name, metric), g) in enumerate(groups):
        sub = None
        if res is not None:
            sub = res[(res["eval"] == ename) & (res["set"] == set_name) & (res["metric"] == metric)]
        parts.append(_figure_div(_bars_figure(g, sub, keys, f"{ename} / {set_name} / {metric}"),
                                 f"bars-{k}-{_slug(metric)}"))  # fmt: skip
    return "".join(parts), len(groups)


def _aggregate_table(data: dict[str, Any], study: Path) -> str:
    agg = data["aggregate"]
    if agg is None or agg.empty:
        return ""
    keys = [k for k in data["grid_keys"] if k in agg.columns]
    rows = []
    for _, r in agg.iterrows():
        runs = "<br>".join(_link(x, study) for x in str(r["runs"]).split(";") if x)
        rows.append([*[_e(r[k]) for k in keys], _e(r["eval"]), _e(r["setting"]), _e(r["set"]), _e(r["metric"]),
                     _span_est(r["value"], r["low"], r["high"]), _e(_fmt_int(r["n_seeds"])),
                     _e(_fmt(r["seed_sd"])), _e(r["method"]), runs])  # fmt: skip
    header = [*keys, "eval", "setting", "set", "metric", "value [95% interval]", "seeds", "seed sd", "method",
              "runs"]  # fmt: skip
    return '<h2 id="table">Aggregate over seeds</h2>' + _table(header, rows, "aggregate")


_CSS = f"""body{{font-family:{_FONT};max-width:1200px;margin:1em auto;padding:0 1em;color:#222}}
.scroll{{overflow-x:auto;margin:0.5em 0 1.5em}}table{{border-collapse:collapse;font-size:0.9em}}td,th{{border:1px solid #ccc;padding:3px 7px;
vertical-align:top;text-align:left}}th{{background:#f3f3f3}}.state{{color:white;padding:1px 6px;border-radius:3px}}
tr:target{{background:#fff3b0}}code{{background:#f3f3f3;padding:0 3px}}nav a{{margin-right:1em}}
.missing{{color:#a33}}.est{{white-space:nowrap}}"""


def _recommend_section(study: Path) -> str:
    """``recommend.json``: the recommended setting per grid group, with every setting's target and costs."""
    recs = _read_json_list(study / RECOMMEND_JSON)
    if not recs:
        return ""
    parts = ['<h2 id="recommend">Recommended settings</h2><p>Per grid group: among the settings that remove at '
             "least the required share of the shift in the target (the fine-tune's value minus the base model's; "
             "100%: as good as the base model), the one with the smallest cost: the sum over the cost metrics of "
             "the distance to the base model's value, each divided by that metric's range over the settings.</p>"]  # fmt: skip
    for rec in recs:
        if not isinstance(rec, dict) or not isinstance(rec.get("settings"), dict):
            continue
        costs = [k for k in (rec.get("baseline") or {})]
        header = ["setting", f"target {rec.get('target', '')}", "shift removed", *costs, "cost"]
        rows = []
        for name, vals in rec["settings"].items():
            mark = " (recommended)" if name == rec.get("recommended") else ""
            removed = _num(vals.get("removed"))
            share = "" if removed is None else f"{removed:.0%}"
            rows.append([_e(f"{name}{mark}"), _e(_fmt(vals.get("target"))), _e(share), *[_e(_fmt(vals.get(c))) for c in costs],
                         _e(_fmt(vals.get("cost")))])  # fmt: skip
        rows.append([_e("base model"), _e(_fmt(rec.get("goal"))), "100%",
                     *[_e(_fmt((rec.get("baseline") or {}).get(c))) for c in costs], ""])  # fmt: skip
        group = ", ".join(f"{k}={v}" for k, v in rec.items() if k not in _REC_KEYS)
        parts.append(
            f"<h3>{_e(group or 'all')}: {_e(rec.get('recommended'))}</h3><p>{_e(rec.get('reason'))}</p>"
        )
        parts.append(_table(header, rows, "recommend"))
    return "".join(parts)


_REC_KEYS = {
    "settings_of",
    "recommended",
    "removes_shift",
    "reason",
    "target",
    "goal",
    "settings",
    "baseline",
}


def _read_json_list(path: Path) -> list[Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def write_report(study_dir: str | os.PathLike[str]) -> Path:
    """Write ``<study_dir>/report.html`` (and ``plotly.min.js`` beside it); returns the report's path.

    Reads only the study directory's files (see the module docstring); a study still running gets a report of
    what exists so far. Raises ``WorkbenchError`` when ``cells.json`` is missing or a table is malformed.
    """
    study = Path(study_dir)
    data = _read_study(study)
    states = cell_states(study)
    target = study / REPORT_HTML
    ensure_plotly_js(study)  # plotly.min.js beside the report
    src = plotly_js_src(target)

    pareto, n_pareto = _pareto_section(data, study)
    paired, n_forest = _paired_section(data)
    bars, n_bars = _bars_section(data)
    recommended = _recommend_section(study)
    missing = [n for n, key in ((RESULTS_CSV, "results"), (AGGREGATE_CSV, "aggregate"), (PAIRED_CSV, "paired"))
               if data[key] is None] + ([PARETO_JSON] if not (study / PARETO_JSON).is_file() else [])  # fmt: skip
    note = (
        f'<p class="missing">Not written yet: {", ".join(_e(m) for m in missing)} (the study has not finished, '
        "or it has nothing to show there).</p>"
        if missing
        else ""
    )
    nav = " ".join(
        f'<a href="#{a}">{t}</a>'
        for a, t, show in (
            ("grid", "Grid", True),
            ("pareto", "Pareto fronts", n_pareto),
            ("paired", "Paired differences", n_forest),
            ("bars", "Metrics", n_bars),
            ("recommend", "Recommended", bool(recommended)),
            ("table", "Aggregate table", data["aggregate"] is not None),
        )  # fmt: skip
        if show
    )
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Study {_e(data["name"])}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<script src="{_e(src)}" charset="utf-8"></script>
<style>{_CSS}</style></head><body>
<h1>Study: {_e(data["name"])}</h1>
<p>{_e(data["description"])}</p>
<nav>{nav}</nav>
{note}
{_grid_section(data, states, study)}
{pareto}
{paired}
{bars}
{recommended}
{_aggregate_table(data, study)}
<p><small>Written by <code>workbench study</code> from {_e(CELLS_JSON)}, {_e(RESULTS_CSV)}, {_e(AGGREGATE_CSV)},
{_e(PAIRED_CSV)} and {_e(PARETO_JSON)}; plotly.js is loaded from {_e(src)} beside this file.</small></p>
</body></html>
"""
    atomic_write_text(target, page)
    return target
