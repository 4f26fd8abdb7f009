"""Overview: what was found under the chosen directory, with links to the pages that show it."""

from __future__ import annotations

import streamlit as st

from apps import _ui

st.title("EM workbench explorer")
ctx = _ui.require_context()
st.caption(
    f"Exploring {_ui.code(ctx.rel(ctx.scope))} in the run root {_ui.code(ctx.root)} with model "
    + (_ui.code(ctx.spec) if ctx.spec else f"{_ui.code(ctx.requested)} (refused, see the sidebar)")
    + "."
)

SECTIONS = (
    ("vectors", "Persona vectors", "_pages/vectors.py", "Vectors"),
    ("sweeps", "Steering sweeps", "_pages/vectors.py", "Vectors"),
    ("gates", "Gate files", "_pages/gates.py", "Gates"),
    ("analyses", "Gate analyses", "_pages/gates.py", "Gates"),
    ("trainings", "Training runs", "_pages/runs.py", "Runs"),
    ("evals", "Evaluations", "_pages/runs.py", "Runs"),
    ("screens", "Data screens", "_pages/screening.py", "Data screening"),
    ("adapters", "LoRA adapters", "_pages/steering.py", "Steering"),
)
counts = ctx.found.counts()
cols = st.columns(4)
for i, (key, label, _, _) in enumerate(SECTIONS):
    cols[i % 4].metric(label, counts[key])

if not any(counts.values()):
    st.info(
        f"No run artifacts under {_ui.code(ctx.rel(ctx.scope))}. Produce some with `make demo` / "
        "`workbench demo`, `workbench extract-vector`, `workbench sweep`, `workbench train`, `workbench eval` "
        "or `workbench screen`, or pick another directory in the sidebar."
    )
else:
    st.subheader("Found")
    for key, label, page, title in SECTIONS:
        paths = getattr(ctx.found, key)
        if not paths:
            continue
        st.page_link(page, label=f"{label} → {title} page")
        st.text("\n".join(ctx.rel(p) for p in paths))
