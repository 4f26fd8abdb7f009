"""Data screening: projection-difference ranking of fine-tuning examples (written by `workbench screen`)."""

from __future__ import annotations

import streamlit as st

from apps import _charts, _ui
from workbench.runs import RANKED_JSONL, RunDir

st.title("Data screening")
ctx = _ui.require_context()

if not ctx.found.screens:
    st.info(
        f"No screening report (ranked.jsonl + summary.json) under {_ui.code(ctx.rel(ctx.scope))}. Make one with "
        "`workbench screen --vector <file> --layer L --data train.jsonl --out <run>/screen`."
    )
    st.stop()

folder = _ui.pick_path(ctx, "Screen", ctx.found.screens, "screen_dir")
assert folder is not None
summary = RunDir(folder, root=ctx.root).summary() or {}
ranked = ctx.read_jsonl(folder / RANKED_JSONL)
if not ranked:
    st.info(f"{_ui.code(ctx.rel(folder / RANKED_JSONL))} holds no rows.")
    st.stop()


def _finite(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _num(value: object, fmt: str = "{:+.3f}") -> str:
    return fmt.format(value) if isinstance(value, (int, float)) else "n/a"


c = st.columns(5)
c[0].metric("Examples", _ui.md(summary.get("n_examples", len(ranked))))
c[1].metric(
    "Dataset score",
    _num(summary.get("dataset_score")),
    help="Mean projection difference over the scored examples.",
)
c[2].metric("Std", _num(summary.get("std"), "{:.3f}"))
c[3].metric("Flag threshold", _num(summary.get("threshold")))
c[4].metric("Flagged", _ui.md(summary.get("n_flagged", sum(bool(r.get("flagged")) for r in ranked))))
st.caption(
    f"Trait {_ui.code(summary.get('trait') or '?')} at layer {_ui.code(summary.get('layer'))}; threshold rule: "
    f"{_ui.code(summary.get('threshold_rule') or '?')}. Difference = projection of the example's response minus "
    "that of the base model's own answer to the same prompt."
)

diffs = [float(r["diff"]) for r in ranked if isinstance(r.get("diff"), (int, float))]
if diffs:
    st.plotly_chart(
        _charts.screen_histogram(
            diffs,
            _finite(summary.get("threshold")),
            _finite(summary.get("dataset_score")),
            summary.get("layer"),
        ),
        key="screen_hist",
    )
else:
    st.info("No example could be scored (every response or base answer was empty).")

st.subheader("Ranking (largest difference first)")
only_flagged = st.checkbox("Flagged only", value=False, key="screen_flagged")
shown = [r for r in ranked if r.get("flagged")] if only_flagged else ranked
st.dataframe(
    [
        {"rank": r.get("rank"), "row": r.get("index"), "diff": r.get("diff"), "own": r.get("own"),
         "base": r.get("base"), "flagged": bool(r.get("flagged")), "prompt": r.get("prompt", ""),
         "response": r.get("response", "")}
        for r in shown
    ],
    hide_index=True,
)  # fmt: skip
for r in shown[:5]:
    with st.expander(f"#{_ui.md(r.get('rank'))} row {_ui.md(r.get('index'))}: diff {_num(r.get('diff'))}"):
        st.markdown("**Prompt**")
        st.text(str(r.get("prompt", "")))
        left, right = st.columns(2)
        left.markdown("**Example's response**")
        left.text(str(r.get("response", "")))
        right.markdown("**Base model's answer**")
        right.text(str(r.get("base_answer", "")))
