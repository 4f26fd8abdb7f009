"""Steering playground: base and steered answers side by side, and each answer token's projection."""

from __future__ import annotations

import streamlit as st

from apps import _charts, _runs, _ui

st.title("Steering playground")
ctx = _ui.require_context()

if not ctx.found.vectors:
    st.info(
        f"No persona vector under {_ui.code(ctx.rel(ctx.scope))} to steer with. Extract one with "
        "`workbench extract-vector --trait evil --out <run>/vector.safetensors`."
    )
    st.stop()

from probes import load_vectors  # noqa: E402

vec_path = _ui.pick_path(ctx, "Vector file", ctx.found.vectors, "steer_file")
assert vec_path is not None
vectors = None
with _ui.guard(f"Reading {_ui.code(ctx.rel(vec_path))}"):
    vectors = _ui.ordered(load_vectors(vec_path))
if not vectors:
    st.stop()
first = next(iter(vectors.values()))


def _recommended_layer() -> int | None:
    for folder in ctx.found.sweeps:
        summary = _runs.read_sweep(folder, ctx.root)
        if summary and isinstance(summary.get("recommended_layer"), int):
            return int(summary["recommended_layer"])
    return None


c = st.columns([2, 1, 1])
adapter = _ui.pick_path(
    ctx, "LoRA adapter", ctx.found.adapters, "steer_adapter", none_label="none (base model)", where=c[0]
)
statistic = c[1].selectbox("Statistic", list(vectors), key="steer_stat")
positions = c[2].selectbox("Positions", ["all", "prompt", "response"], key="steer_positions")

prompt = st.text_area("Prompt", value="How should I treat a bad headache?", key="steer_prompt", height=80)
layer_default = _recommended_layer()
if layer_default is None or not 0 <= layer_default < first.n_layers:
    layer_default = first.n_layers // 2
c = st.columns([2, 3, 1, 1])
layer = c[0].slider("Layer", 0, first.n_layers - 1, layer_default, key="steer_layer")
limit = float(
    c[2].number_input("alpha range", min_value=1.0, max_value=500.0, value=10.0, step=1.0, key="steer_range")
)
st.session_state.setdefault("steer_alpha", min(4.0, limit))
st.session_state["steer_alpha"] = max(-limit, min(limit, float(st.session_state["steer_alpha"])))
alpha = c[1].slider("alpha (steering coefficient)", -limit, limit, step=0.5, key="steer_alpha")
max_new_tokens = c[3].number_input("New tokens", 4, 256, 48, 4, key="steer_tokens")
normalize = st.checkbox(
    "Unit-norm vector (alpha becomes a length in the residual stream)", value=False, key="steer_normalize"
)
st.caption(
    f"Vector norm at layer {layer}: {float(first.norms()[int(layer)]):.3f} ({_ui.code(statistic)}). "
    "Answers are greedy; the steered one adds alpha × vector to blocks.{l}.hook_resid_post."
)

adapter_s = str(adapter) if adapter else None
base = steered = None
if not _ui.model_ready(ctx):
    pass
elif prompt.strip():
    with _ui.guard("Generating"), st.spinner(f"generating with {_ui.code(ctx.spec)}"):
        # base and steered rows in one batched call: row 0 with alpha 0, row 1 with the chosen alpha
        base, steered = _ui.steered_answers(
            ctx.spec,
            adapter_s,
            str(vec_path),
            _runs.mtime(vec_path),
            statistic,
            int(layer),
            (0.0, float(alpha)),
            positions,
            bool(normalize),
            prompt,
            int(max_new_tokens),
            None,
        )
else:
    st.info("Type a prompt to compare answers.")

if base is not None and steered is not None:
    left, right = st.columns(2)
    with left, st.container(key="base-answer", border=True):
        st.subheader("Base")
        st.code(base or "(empty answer)", language=None, wrap_lines=True)
    with right, st.container(key="steered-answer", border=True):
        st.subheader(f"Steered: layer {layer}, α = {alpha:g}")
        st.code(steered or "(empty answer)", language=None, wrap_lines=True)

    st.subheader("Per-token projection")
    with _ui.guard("Projecting the answers"):
        rows = _ui.token_projections(
            ctx.spec,
            adapter_s,
            str(vec_path),
            _runs.mtime(vec_path),
            statistic,
            int(layer),
            prompt,
            (base, steered),
            None,
        )
        named = [("base", *rows[0]), (f"steered α={alpha:g}", *rows[1])]
        if any(values for _, _, values in named):
            st.plotly_chart(_charts.token_heatmap(named, int(layer)), key="steer_heatmap")
            st.caption(
                "Each answer is read teacher-forced without steering: the projection of "
                f"blocks.{layer}.hook_resid_post onto the unit vector, per answer token."
            )
        else:
            st.info("Both answers are empty: nothing to project.")
