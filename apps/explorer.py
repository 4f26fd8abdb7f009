"""Streamlit entry of the workbench explorer.

Started by ``workbench app [RUN_DIR]``, which runs::

    streamlit run apps/explorer.py --server.headless true --server.address 127.0.0.1 --server.port PORT \
        -- --run-root ROOT [--run-dir RUN_DIR] [--model SPEC ...] [--allow-network]

(``WORKBENCH_RUN_ROOT`` / ``WORKBENCH_RUN_DIR`` / ``WORKBENCH_APP_MODELS`` / ``WORKBENCH_APP_ALLOW_NETWORK``
work too). The sidebar picks a directory inside the run root (anything outside it is refused) and the model
spec (only the specs given at start, the embedded default, ``random:`` and model folders inside the root
load); each page shows the artifacts found under that directory. Without ``--allow-network`` the process
runs with ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
if str(_REPO) not in sys.path:  # `streamlit run` puts apps/ itself on the path, not the repository
    sys.path.insert(0, str(_REPO))

from apps import _runs  # noqa: E402  (no transformers / huggingface_hub import: offline is set first)

OPTIONS = _runs.parse_options(sys.argv[1:])
if not OPTIONS.allow_network:  # before anything imports huggingface_hub, which reads these once
    for _name in _runs.OFFLINE_ENV:
        os.environ[_name] = "1"

import pandas  # noqa: E402, F401  (imported whole before any page: plotly peeks at a half-imported pandas otherwise)
import streamlit as st  # noqa: E402

from apps import _ui  # noqa: E402
from workbench import WorkbenchError  # noqa: E402

PAGES = (
    ("_pages/overview.py", "Overview", "overview", ":material/home:"),
    ("_pages/vectors.py", "Vectors", "vectors", ":material/arrow_outward:"),
    ("_pages/steering.py", "Steering", "steering", ":material/tune:"),
    ("_pages/gates.py", "Gates", "gates", ":material/grid_on:"),
    ("_pages/runs.py", "Runs", "runs", ":material/monitoring:"),
    ("_pages/studies.py", "Studies", "studies", ":material/table_chart:"),
    ("_pages/screening.py", "Data screening", "screening", ":material/filter_alt:"),
)


def _model(side, root: Path, scope: Path, opts: _runs.Options) -> tuple[str | None, str, str]:
    """The sidebar's model box: ``(spec to load or None, requested spec, refusal message)``."""
    default_spec = _runs.find_model_spec(scope, root) or _runs.DEFAULT_MODEL
    choices = list(dict.fromkeys([*opts.models, _runs.DEFAULT_MODEL]))
    spec = (
        side.text_input(
            "Model spec",
            value=default_spec,
            key=f"model_spec::{_runs.rel(root, scope)}",
            help="From the run's config.yaml when it has one. Allowed: the specs given with `workbench app "
            f"--model`, {_runs.DEFAULT_MODEL}, random:<shape>, or a model folder inside the run root.",
        ).strip()
        or default_spec
    )
    if opts.models:
        side.caption("Allowed by the command line:")
        side.text("\n".join(choices))
    try:
        checked = _runs.check_model_spec(spec, root, opts.models)
    except WorkbenchError as exc:
        side.error(f"Model refused: {_ui.code(exc)}")
        return None, spec, str(exc)
    side.caption(
        "The model loads on first use and stays cached" + ("." if opts.allow_network else "; offline.")
    )
    return checked, spec, ""


def _sidebar(opts: _runs.Options) -> _ui.Context | None:
    root, start = opts.root, opts.run
    side = st.sidebar
    side.caption("Run root")
    side.text(str(root))
    if not root.is_dir():
        hint = (
            f"No runs yet: the run root {_ui.code(root)} does not exist. {_runs.MAKE_RUNS_HINT} The explorer "
            "picks them up on the next page load."
        )
        side.info(hint)
        st.session_state[_ui.HINT_KEY] = hint
        return None
    st.session_state[_ui.HINT_KEY] = None
    choices = _ui.run_dirs(str(root))
    wanted = st.query_params.get("run") or (str(start) if start else ".")
    try:
        wanted_rel = _runs.rel(root, _runs.resolve_inside(root, wanted))
    except WorkbenchError as exc:
        side.error(_ui.code(exc))
        wanted_rel = "."
    if wanted_rel not in choices:
        choices = [*choices, wanted_rel]
    picked = side.selectbox("Run directory", choices, index=choices.index(wanted_rel), key="run_choice")
    typed = side.text_input("…or a path inside the run root", key="run_path", placeholder="e.g. demo/sweep")
    target = typed.strip() or picked
    try:
        scope = _runs.resolve_inside(root, target)
    except WorkbenchError as exc:
        side.error(_ui.code(exc))
        return None
    if not scope.is_dir():
        side.error(f"{_ui.code(target)} is not a directory inside the run root.")
        return None
    found = _ui.scan(str(scope), str(root))
    if found.outside:
        shown = ", ".join(_ui.code(_runs.rel(root, p)) for p in found.outside[:5])
        more = f" and {len(found.outside) - 5} more" if len(found.outside) > 5 else ""
        side.warning(f"Not followed (links leaving the run root): {shown}{more}.")
    spec, requested, error = _model(side, root, scope, opts)
    return _ui.Context(root=root, scope=scope, found=found, spec=spec, requested=requested, spec_error=error)


def main() -> None:
    st.set_page_config(page_title="EM workbench explorer", page_icon=":material/science:", layout="wide")
    pages = [
        st.Page(path, title=title, url_path=url, icon=icon, default=i == 0)
        for i, (path, title, url, icon) in enumerate(PAGES)
    ]
    nav = st.navigation(pages)
    st.session_state[_ui.CTX_KEY] = _sidebar(OPTIONS)
    nav.run()


main()
