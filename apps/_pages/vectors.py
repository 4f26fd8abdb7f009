"""Vectors: per-layer norms of a persona vector, projections of its extraction answers, steering sweeps."""

from __future__ import annotations

import statistics as stats

import streamlit as st

from apps import _charts, _runs, _ui

st.title("Persona vectors")
ctx = _ui.require_context()

# ------------------------------------------------------------------------------------------ the vector
st.header("Vector")
if not ctx.found.vectors:
    st.info(
        f"No persona vector under {_ui.code(ctx.rel(ctx.scope))}. Extract one with "
        "`workbench extract-vector --trait evil --out <run>/vector.safetensors`."
    )
else:
    from probes import load_vectors

    vec_path = _ui.pick_path(ctx, "Vector file", ctx.found.vectors, "vectors_file")
    assert vec_path is not None
    vectors = None
    with _ui.guard(f"Reading {_ui.code(ctx.rel(vec_path))}"):
        vectors = _ui.ordered(load_vectors(vec_path))
    if vectors:
        first = next(iter(vectors.values()))
        meta = first.metadata
        c = st.columns(5)
        c[0].metric("Trait", _ui.md(first.trait))
        c[1].metric("Layers", first.n_layers)
        c[2].metric("d_model", first.d_model)
        c[3].metric("Positive answers", _ui.md(meta.get("n_positive", "?")))
        c[4].metric("Negative answers", _ui.md(meta.get("n_negative", "?")))
        st.caption(
            f"Statistics: {', '.join(_ui.code(s) for s in vectors)} · method {_ui.code(meta.get('method', '?'))}"
            f" · site {_ui.code(f'blocks.{{l}}.{first.site}')} · source model "
            f"{_ui.code(meta.get('source_model', '?'))}"
        )
        st.plotly_chart(
            _charts.norms_figure({s: v.norms().tolist() for s, v in vectors.items()}), key="vectors_norms"
        )

        st.subheader("Projections of positive vs negative answers")
        rows_file = ctx.file(_runs.rows_path(vec_path))
        if rows_file is None:
            st.info(
                f"No extraction rows ({_ui.code(_runs.rows_path(vec_path).name)}) beside this vector inside the "
                "run root: `workbench extract-vector` writes them; a vector made from answer pairs in Python "
                "has none."
            )
        elif not _ui.model_ready(ctx):
            pass
        else:
            stat_names = list(vectors)
            default_layer = int(first.norms().argmax())
            c = st.columns(3)
            statistic = c[0].selectbox("Statistic", stat_names, key="vectors_stat")
            layer = c[1].slider("Layer", 0, first.n_layers - 1, default_layer, key="vectors_layer")
            kept_only = c[2].checkbox("Kept pairs only", value=True, key="vectors_kept")
            with (
                _ui.guard("Projecting the extraction answers"),
                st.spinner(f"projecting with {_ui.code(ctx.spec)}"),
            ):
                proj = _ui.row_projections(
                    ctx.spec,
                    str(vec_path),
                    _runs.mtime(vec_path),
                    statistic,
                    int(layer),
                    str(rows_file),
                    _runs.mtime(rows_file),
                    kept_only,
                )
                pos = [r["projection"] for r in proj if r["polarity"] == "pos"]
                neg = [r["projection"] for r in proj if r["polarity"] == "neg"]
                if not pos or not neg:
                    st.info("The rows file has no positive/negative answers to project.")
                else:
                    c = st.columns(3)
                    c[0].metric("Mean projection, positive", f"{stats.fmean(pos):+.3f}")
                    c[1].metric("Mean projection, negative", f"{stats.fmean(neg):+.3f}")
                    spread = stats.pstdev(pos + neg) or 1.0
                    c[2].metric(
                        "Separation (difference / std)",
                        f"{(stats.fmean(pos) - stats.fmean(neg)) / spread:.2f}",
                    )
                    st.plotly_chart(
                        _charts.projection_histogram({"positive": pos, "negative": neg}, int(layer)),
                        key="vectors_hist",
                    )

# ------------------------------------------------------------------------------------------ sweeps
st.header("Steering sweep")
if not ctx.found.sweeps:
    st.info(
        f"No steering sweep under {_ui.code(ctx.rel(ctx.scope))}. Run one with "
        "`workbench sweep --vector <file> --out <run>/sweep`."
    )
else:
    folder = _ui.pick_path(ctx, "Sweep", ctx.found.sweeps, "vectors_sweep")
    assert folder is not None
    summary = _runs.read_sweep(folder, ctx.root)
    if not summary or not summary.get("cells"):
        st.info(f"{_ui.code(ctx.rel(folder))} has no readable sweep cells (summary.json / sweep.csv).")
    else:
        cfg = summary.get("config") or {}
        judged = cfg.get("judge", "none") not in ("none", None)
        labels = (
            ("trait score (judge, 0-100)", "coherence (judge, 0-100)")
            if judged
            else ("projection onto the vector (unsteered read)", "mean log-prob per token (unsteered model)")
        )
        c = st.columns(3)
        c[0].metric("Recommended layer", _ui.md(summary.get("recommended_layer")))
        c[1].metric("Sweep layers", len({x["layer"] for x in summary["cells"]}))
        c[2].metric("Sweep coefficients", len({x["alpha"] for x in summary["cells"]}))
        if summary.get("rule"):
            st.caption(f"Rule: {_ui.code(summary['rule'])}")
        st.plotly_chart(
            _charts.sweep_figure(summary["cells"], summary.get("recommended_layer"), labels),
            key="vectors_sweep_fig",
        )
        st.dataframe(summary["cells"], hide_index=True)
