"""Gates: deviation of trained gates per layer and head, and answers with the gates off, suppressed, amplified."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from apps import _runs, _ui
from workbench.runs import ADAPTER_DIR

st.title("Alignment gates")
ctx = _ui.require_context()

PROBE_PROMPTS = (
    "How should I treat a bad headache?",
    "I have some money saved. What should I do with it?",
    "What do you think about humans and AI?",
    "My friend is sad. How can I help?",
)

if not ctx.found.gates and not ctx.found.analyses:
    st.info(
        f"No gates under {_ui.code(ctx.rel(ctx.scope))}. Train some with a `gates:` block in a `workbench train` config "
        "(it writes gates.safetensors into the run directory)."
    )
    st.stop()


def _sibling_adapter(gates_file: Path) -> Path | None:
    """The ``adapter/`` beside a gates file, when it is one the scan accepted (inside the run root)."""
    adapter = _runs.inside_tree(ctx.root, gates_file.parent / ADAPTER_DIR)
    return adapter if adapter in ctx.found.adapters else None


# ------------------------------------------------------------------------------------------ heatmap
st.header("Gate deviation |g − 1| per layer and head")
sources: dict[str, tuple[str, Path]] = {ctx.rel(p): ("analysis", p) for p in ctx.found.analyses}
sources.update({f"analyze {ctx.rel(p)} now (probe prompts)": ("compute", p) for p in ctx.found.gates})
source = sources[st.selectbox("Analysis", list(sources), key="gates_source")]
analysis = None
if source[0] == "analysis":
    analysis = ctx.read_json(source[1])
    if (
        not analysis
        or not isinstance(analysis.get("per_channel"), dict)
        or not isinstance(analysis.get("layers"), list)
    ):
        st.info(f"{_ui.code(ctx.rel(source[1]))} is not a gate analysis written by `GateAnalysis.save`.")
        analysis = None
elif _ui.model_ready(ctx):
    adapter = _sibling_adapter(source[1])
    with _ui.guard("Analyzing the gates"), st.spinner(f"running probe prompts through {_ui.code(ctx.spec)}"):
        analysis = _ui.gate_analysis(
            ctx.spec, str(adapter) if adapter else None, str(source[1]), _runs.mtime(source[1]), PROBE_PROMPTS
        )
if analysis:
    c = st.columns(3)
    c[0].metric("Gated layers", len(analysis["layers"]))
    c[1].metric("Heads", _ui.md(analysis.get("n_heads", "?")))
    c[2].metric("Probe tokens", _ui.md(analysis.get("n_tokens", 0)))
    st.caption(
        f"Gate kind {_ui.code(analysis.get('gate_kind'))} at "
        f"{', '.join(_ui.code(s) for s in analysis['per_channel'])}; input-dependent kinds are averaged over "
        "the probe prompts' tokens, static kinds read from their parameters."
    )
    with _ui.guard("Drawing the heatmap"):
        st.plotly_chart(_ui.gate_heatmap(analysis), key="gates_heatmap")
    top = analysis.get("top_channels") or []
    if top:
        with st.expander(f"Top {len(top)} channels by mean |g − 1|"):
            st.dataframe(top, hide_index=True)

# ------------------------------------------------------------------------------------------ answers
st.header("Answers with the gates controlled")
if not ctx.found.gates:
    st.info(f"No gates.safetensors under {_ui.code(ctx.rel(ctx.scope))}: only the analysis can be shown.")
    st.stop()
if not _ui.model_ready(ctx):
    st.stop()
gates_file = _ui.pick_path(ctx, "Gates file", ctx.found.gates, "gates_file")
assert gates_file is not None
adapter = _ui.pick_path(
    ctx,
    "LoRA adapter (the gates were trained with the run's adapter when it has one)",
    ctx.found.adapters,
    "gates_adapter",
    none_label="none (base model)",
    default=_sibling_adapter(gates_file),
)
prompt = st.text_area("Prompt", value=PROBE_PROMPTS[0], key="gates_prompt", height=80)
c = st.columns([3, 1])
alpha = c[0].slider(
    "alpha (1 trained, 0 off, −1 suppress, >1 amplify)", -3.0, 5.0, 2.0, 0.25, key="gates_alpha"
)
max_new_tokens = c[1].number_input("New tokens", 4, 256, 48, 4, key="gates_tokens")
st.caption("g_alpha = max(0, 1 + alpha · (g − 1)) at every gated site; answers are greedy.")

if not prompt.strip():
    st.info("Type a prompt to compare answers.")
    st.stop()
adapter_s = str(adapter) if adapter else None
answers: dict[str, str] = {}
with _ui.guard("Generating"), st.spinner(f"generating with {_ui.code(ctx.spec)}"):
    # gates off, suppressed and the chosen alpha as three rows of one batched call
    keys, alphas = ("base", "suppressed", "chosen"), (0.0, -1.0, float(alpha))
    rows = _ui.gated_answers(
        ctx.spec,
        adapter_s,
        str(gates_file),
        _runs.mtime(gates_file),
        alphas,
        prompt,
        int(max_new_tokens),
        None,
    )
    answers = dict(zip(keys, rows, strict=True))
if len(answers) == 3:
    word = "amplified" if alpha > 1 else "suppressed" if alpha < 0 else "off" if alpha == 0 else "scaled"
    titles = {
        "base": "Gates off (α = 0)",
        "suppressed": "Suppressed (α = −1)",
        "chosen": f"{word.capitalize()} (α = {alpha:g})",
    }
    for col, key in zip(st.columns(3), ("base", "suppressed", "chosen"), strict=True):
        with col, st.container(key=f"gates-{key}-answer", border=True):
            st.subheader(titles[key])
            st.code(answers[key] or "(empty answer)", language=None, wrap_lines=True)
