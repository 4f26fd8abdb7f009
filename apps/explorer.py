"""Streamlit entry of the workbench explorer.

Started by ``workbench app [RUN_DIR]``, which runs::

    streamlit run apps/explorer.py --server.headless true --server.address 127.0.0.1 --server.port PORT \
        -- --run-root ROOT [--run-dir RUN_DIR]

(``WORKBENCH_RUN_ROOT`` / ``WORKBENCH_RUN_DIR`` work too). The sidebar picks a directory inside the run root
(anything outside it is refused) and the model spec; each page shows the artifacts found under that directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # `streamlit run` puts apps/ itself on the path, not the repository
    sys.path.insert(0, str(_REPO))

import pandas  # noqa: E402, F401  (imported whole before any page: plotly peeks at a half-imported pandas otherwise)
import streamlit as st  # noqa: E402

from apps import _runs, _ui  # noqa: E402
from workbench import WorkbenchError  # noqa: E402

PAGES = (
    ("_pages/overview.py", "Overview", "overview", ":material/home:"),
    ("_pages/vectors.py", "Vectors", "vectors", ":material/arrow_outward:"),
    ("_pages/steering.py", "Steering", "steering", ":material/tune:"),
    ("_pages/gates.py", "Gates", "gates", ":material/grid_on:"),
    ("_pages/runs.py", "Runs", "runs", ":material/monitoring:"),
    ("_pages/screening.py", "Data screening", "screening", ":material/filter_alt:"),
)


def _sidebar(root: Path, start: Path | None) -> _ui.Context | None:
    side = st.sidebar
    side.caption(f"Run root: `{root}`")
    if not root.is_dir():
        side.error(f"The run root '{root}' does not exist; start the app on an existing run directory.")
        return None
    choices = _ui.run_dirs(str(root))
    wanted = st.query_params.get("run") or (str(start) if start else ".")
    try:
        wanted_rel = _runs.rel(root, _runs.resolve_inside(root, wanted))
    except WorkbenchError as exc:
        side.error(str(exc))
        wanted_rel = "."
    if wanted_rel not in choices:
        choices = [*choices, wanted_rel]
    picked = side.selectbox("Run directory", choices, index=choices.index(wanted_rel), key="run_choice")
    typed = side.text_input("…or a path inside the run root", key="run_path", placeholder="e.g. demo/sweep")
    target = typed.strip() or picked
    try:
        scope = _runs.resolve_inside(root, target)
    except WorkbenchError as exc:
        side.error(str(exc))
        return None
    if not scope.is_dir():
        side.error(f"'{target}' is not a directory inside the run root.")
        return None
    found = _ui.scan(str(scope))
    default_spec = _runs.find_model_spec(scope, root) or _runs.DEFAULT_MODEL
    spec = side.text_input(
        "Model spec",
        value=default_spec,
        key=f"model_spec::{_runs.rel(root, scope)}",
        help="From the run's config.yaml when it has one; smollm2-135m, a local folder or random:<shape>.",
    ).strip()
    side.caption("The model loads on first use and stays cached.")
    return _ui.Context(root=root, scope=scope, found=found, spec=spec or default_spec)


def main() -> None:
    st.set_page_config(page_title="EM workbench explorer", page_icon=":material/science:", layout="wide")
    root, start = _runs.parse_args(sys.argv[1:])
    pages = [
        st.Page(path, title=title, url_path=url, icon=icon, default=i == 0)
        for i, (path, title, url, icon) in enumerate(PAGES)
    ]
    nav = st.navigation(pages)
    st.session_state[_ui.CTX_KEY] = _sidebar(root, start)
    nav.run()


main()
