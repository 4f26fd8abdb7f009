"""Studies: a study's grid with each cell's state, its results table, its Pareto plots and its paired
differences (the files `workbench study run` writes); every run a cell made opens on the Runs page.

Everything is read through ``workbench.runs.RunDir`` / the explorer's confinement (``root=`` the run root): a
file that links out of the run root reads as missing. Nothing is computed here but the table filters.
"""

from __future__ import annotations

import math
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlencode

import streamlit as st

from apps import _charts, _runs, _ui
from workbench.runs import (
    AGGREGATE_CSV,
    CELLS_DIR,
    CELLS_JSON,
    EVAL_DIR,
    PAIRED_CSV,
    PARETO_JSON,
    REPORT_HTML,
    RESULTS_CSV,
    STUDY_YAML,
    RunDir,
    find_runs,
)
from workbench.study import combine_states

RUNS_URL = "runs"  # the Runs page's url_path in apps/explorer.py; its sidebar opens the directory in ?run=
STATES = ("done", "running", "failed", "interrupted", "pending")
COLUMNS = {  # what the page reads of each table (docs/studies.md has them all)
    RESULTS_CSV: ("eval", "metric", "value", "low", "high"),
    AGGREGATE_CSV: ("eval", "metric", "value", "low", "high"),
    PAIRED_CSV: ("seed", "value", "low", "high"),
}


@st.cache_data(ttl=5, show_spinner=False)
def _study_dirs(scope: str, root: str) -> list[str]:
    """Studies (runs of kind ``study``) under ``scope`` and the study ``scope`` lies in, if any."""
    found = [str(r.path) for r in find_runs(scope) if RunDir(r.path, root=root).kind == "study"]
    here, top = Path(scope), Path(root)
    for folder in (here, *here.parents):
        if folder != top and top not in folder.parents:
            break
        if RunDir(folder, root=root).kind == "study":
            found.insert(0, str(folder))
            break
    return list(dict.fromkeys(found))


def _table(study: RunDir, name: str) -> Any:
    """A study table (labels kept as text: a label "NA" stays "NA"); None when missing or linked out."""
    path = study.file(name)
    if path is None:
        return None
    import pandas as pd

    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        st.warning(f"{_ui.code(name)} is not readable: {_ui.code(exc)}")
        return None
    missing = [c for c in COLUMNS[name] if c not in df.columns]
    if missing:
        st.warning(f"{_ui.code(name)} lacks the column(s) {_ui.code(', '.join(missing))}; not shown.")
        return None
    for col in ("value", "low", "high", "n", "n_seeds", "seed_sd"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def _folder(study: Path, rel: str) -> Path | None:
    """``study/rel`` when ``rel`` is a relative path to a folder inside the study and the run root."""
    parts = PurePosixPath(str(rel)).parts
    if not parts or PurePosixPath(str(rel)).is_absolute() or ".." in parts or "\\" in str(rel):
        return None
    real = _runs.inside(ctx.root, study.joinpath(*parts))
    return real if real is not None and real.is_dir() else None


def _state(run: Path | None) -> str:
    """One run's state from its manifest (``workbench.study``'s rule: finished is done, killed is interrupted)."""
    if run is None or not any(run.iterdir()):
        return "pending"
    status = RunDir(run, root=ctx.root).status
    return {"finished": "done", "running": "running", "failed": "failed"}.get(status or "", "interrupted")


def _cell_runs(study: Path, cell: dict[str, Any]) -> list[tuple[str, str, Path | None]]:
    """``(name, path relative to the study, folder or None)`` of each run of a cell, in the order they run."""
    cid = str(cell.get("id", ""))
    if not cid or "/" in cid or "\\" in cid or cid in (".", ".."):
        return []
    names = (["train"] if cell.get("train") else []) + [f"eval:{e}" for e in cell.get("evals") or []]
    out = []
    for name in names:
        rel = f"{CELLS_DIR}/{cid}/train" if name == "train" else f"{CELLS_DIR}/{cid}/{EVAL_DIR}/{name[5:]}"
        out.append((name, rel, _folder(study, rel)))
    return out


def _cell_state(study: Path, cell: dict[str, Any]) -> str:
    return combine_states([_state(folder) for _, _, folder in _cell_runs(study, cell)])


def _run_links(study: Path, runs: list[tuple[str, str]]) -> None:
    """One row per run: its name and path (plain text) and a link opening it on the Runs page in a new tab
    (``runs?run=<path relative to the run root>``, which the sidebar picks up)."""
    for name, rel in runs:
        folder = _folder(study, rel)
        c = st.columns([1, 4, 2])
        c[0].text(name)
        c[1].text(rel)
        if folder is None:
            c[2].caption("not written yet")
        else:
            c[2].link_button("Open on the Runs page", f"{RUNS_URL}?{urlencode({'run': ctx.rel(folder)})}")


def _estimate(row: Any) -> str:
    """``0.123 [0.045, 0.201]`` (more decimals when the interval is narrower than 0.01), as in report.html."""
    v, lo, hi = (row[c] if row[c] == row[c] else None for c in ("value", "low", "high"))
    if v is None:
        return "n/a"
    if lo is None or hi is None:
        return f"{v:.3f}"
    d = 3 if hi - lo <= 0 else max(3, min(8, 1 - math.floor(math.log10(hi - lo))))
    return f"{v:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]"


st.title("Studies")
ctx = _ui.require_context()

paths = [Path(p) for p in _study_dirs(str(ctx.scope), str(ctx.root))]
if not paths:
    st.info(
        f"No study under {_ui.code(ctx.rel(ctx.scope))}. Run one with `workbench study run STUDY.yaml --out "
        "runs/<name>` (docs/studies.md)."
    )
    st.stop()

folder = _ui.pick_path(ctx, "Study", paths, "studies_dir")
assert folder is not None
study = RunDir(folder, root=ctx.root)
doc = ctx.read_json(folder / CELLS_JSON)
if not doc or not isinstance(doc.get("cells"), list):
    st.info(f"{_ui.code(ctx.rel(folder))} has no {CELLS_JSON} yet: the study has not expanded its grid.")
    st.stop()
spec = _runs.read_yaml(folder / STUDY_YAML, ctx.root) or {}
keys = [str(k) for k in doc.get("grid_keys") or []]
cells = [c for c in doc["cells"] if isinstance(c, dict)]

st.header(_ui.md(spec.get("name") or doc.get("study") or folder.name))
if spec.get("description"):
    st.caption(_ui.code(spec["description"]))
if study.file(REPORT_HTML):
    st.caption(f"Offline report: {_ui.code(ctx.rel(folder / REPORT_HTML))} (open it in a browser).")

# ------------------------------------------------------------------------------------------ grid
st.subheader("Grid")
states = {str(c.get("id")): _cell_state(folder, c) for c in cells}
counts = st.columns(len(STATES))
for i, s in enumerate(STATES):
    counts[i].metric(s.capitalize(), sum(1 for v in states.values() if v == s))
grid = []
for c in cells:
    values = c.get("values") if isinstance(c.get("values"), dict) else {}
    grid.append(
        {
            "cell": str(c.get("id")),
            **{k: str(values.get(k, "")) for k in keys},
            "seed": "" if c.get("seed") is None else str(c.get("seed")),
            "state": states[str(c.get("id"))],
            "runs": len(_cell_runs(folder, c)),
        }
    )
st.dataframe(grid, hide_index=True)
ids = [g["cell"] for g in grid]
cell_id = st.selectbox("Cell", ids, key="studies_cell")
chosen = next(c for c in cells if str(c.get("id")) == cell_id)
_run_links(folder, [(n, rel) for n, rel, _ in _cell_runs(folder, chosen)])

# ------------------------------------------------------------------------------------------ results
st.subheader("Results")
results = _table(study, RESULTS_CSV)
if results is None or results.empty:
    st.info(f"No {_ui.code(RESULTS_CSV)} yet: it is written when the cells' evaluations finish.")
else:
    c = st.columns(2)
    evals = sorted(set(results["eval"]))
    metrics = sorted(set(results["metric"]))
    pick_evals = c[0].multiselect("Evaluations", evals, default=evals, key="studies_evals")
    pick_metrics = c[1].multiselect("Metrics", metrics, default=metrics, key="studies_metrics")
    shown = results[results["eval"].isin(pick_evals) & results["metric"].isin(pick_metrics)]
    shown = shown.assign(**{"value [95% interval]": [_estimate(r) for _, r in shown.iterrows()]})
    st.dataframe(shown, hide_index=True)
    agg = _table(study, AGGREGATE_CSV)
    if agg is not None and not agg.empty:
        st.caption("Over seeds (aggregate.csv):")
        agg = agg[agg["eval"].isin(pick_evals) & agg["metric"].isin(pick_metrics)]
        agg = agg.assign(**{"value [95% interval]": [_estimate(r) for _, r in agg.iterrows()]})
        st.dataframe(agg, hide_index=True)

# ------------------------------------------------------------------------------------------ pareto
st.subheader("Pareto fronts")
pareto = ctx.read_json(folder / PARETO_JSON) or {}
plots = [p for p in pareto.get("plots") or [] if isinstance(p, dict)]
if not plots:
    st.info(f"No {_ui.code(PARETO_JSON)} yet (or the study names no `pareto:` plot).")
else:
    titles = [str(p.get("title") or f"plot {i + 1}") for i, p in enumerate(plots)]
    k = st.selectbox("Plot", range(len(plots)), format_func=lambda i: titles[i], key="studies_pareto")
    plot = plots[k]
    points = [p for p in plot.get("points") or [] if isinstance(p, dict)]
    drawn = [
        i
        for i, p in enumerate(points)
        if isinstance(p.get("x"), (int, float)) and isinstance(p.get("y"), (int, float))
    ]

    def _axis(name: str) -> str:
        axis = plot.get(name) if isinstance(plot.get(name), dict) else {}
        better = "higher" if axis.get("maximize", True) else "lower"
        return f"{axis.get('label') or axis.get('key') or name} ({better} is better)"

    fig = _charts.pareto_figure(
        [(str(points[i].get("label", "")), float(points[i]["x"]), float(points[i]["y"])) for i in drawn],
        [j for j, i in enumerate(drawn) if points[i].get("on_front")],
        _axis("x"),
        _axis("y"),
    )
    fig.update_layout(title=_charts.plain(titles[k]))
    st.plotly_chart(fig, key=f"studies_pareto_chart_{k}")
    st.dataframe(
        [
            {
                "point": str(p.get("label", "")),
                "x": p.get("x"),
                "y": p.get("y"),
                "on front": bool(p.get("on_front")),
                "cells": ", ".join(map(str, p.get("cells") or [])),
            }
            for p in points
        ],
        hide_index=True,
    )
    if points:
        labels = [str(p.get("label", "")) for p in points]
        j = st.selectbox("Point", range(len(points)), format_func=lambda i: labels[i], key="studies_point")
        st.caption("The runs behind this point (every seed, both axes):")
        rels = [str(r) for r in points[j].get("runs") or []]
        _run_links(folder, [("/".join(PurePosixPath(r).parts[2:]) or r, r) for r in rels])

# ------------------------------------------------------------------------------------------ paired
st.subheader("Paired differences")
paired = _table(study, PAIRED_CSV)
if paired is None or paired.empty:
    st.info(f"No {_ui.code(PAIRED_CSV)} yet (it needs a `reference:` in the study and finished cells).")
else:
    pooled_only = st.toggle("Pooled over seeds only", value=True, key="studies_pooled")
    shown = paired[paired["seed"] == "all"] if pooled_only else paired
    shown = shown.assign(**{"difference [95% interval]": [_estimate(r) for _, r in shown.iterrows()]})
    st.dataframe(shown, hide_index=True)
    st.caption("Each cell minus its reference cell (same seed) on the same items; `all` pools every seed.")
