"""HTML reports that work offline: plotly.js is written once per run directory, never fetched from a CDN.

Every report (training ``plots.html``, ``sweep.html``, ``histogram.html``, ``gates_heatmap.html``, the
demo's ``report.html``) loads ``plotly.min.js`` through a relative ``<script src>``; the file is the one
bundled with the installed plotly package, copied beside the report. A report written inside a run directory
whose ancestor run directory (a folder holding ``config.yaml``) already holds the same ``plotly.min.js`` refers
to that one instead (``../plotly.min.js``), so a run tree such as the demo's carries a single copy. Opening a
report needs its run directory kept whole, not network access.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._io import atomic_write_bytes, atomic_write_text
from .runs import CONFIG_YAML

PLOTLY_JS = "plotly.min.js"
"""The file name of the shared plotly.js beside the reports."""

_RUN_MARKER = CONFIG_YAML  # written by workbench.runs.write_config into every run directory
_BUNDLE: bytes | None = None


def plotly_js_bytes() -> bytes:
    """The minified plotly.js bundled with the installed plotly package (read once per process)."""
    global _BUNDLE
    if _BUNDLE is None:
        import plotly

        path = Path(plotly.__file__).parent / "package_data" / PLOTLY_JS
        if path.is_file():
            _BUNDLE = path.read_bytes()
        else:  # an unusual install layout: plotly's own accessor
            from plotly.offline import get_plotlyjs

            _BUNDLE = get_plotlyjs().encode("utf-8")
    return _BUNDLE


def _is_current(path: Path, data: bytes) -> bool:
    try:
        return path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def ensure_plotly_js(directory: str | os.PathLike[str]) -> Path:
    """Write ``<directory>/plotly.min.js`` (atomically) unless it already holds this plotly's bundle."""
    target = Path(directory) / PLOTLY_JS
    data = plotly_js_bytes()
    if not _is_current(target, data):
        atomic_write_bytes(target, data)
    return target


def plotly_js_src(html_path: str | os.PathLike[str]) -> str:
    """The relative ``<script src>`` that a report about to be written at ``html_path`` should use.

    Looks for a current ``plotly.min.js`` beside the report, then in the enclosing run directories (each
    ancestor must hold ``config.yaml``; the search stops at the first that does not); writes one beside the
    report when none is found. Pass the result as plotly's ``include_plotlyjs``.
    """
    here = Path(os.path.abspath(html_path)).parent
    data = plotly_js_bytes()
    depth = 0
    for d in (here, *here.parents):
        if d != here and not (d / _RUN_MARKER).is_file():
            break
        if _is_current(d / PLOTLY_JS, data):
            return "../" * depth + PLOTLY_JS
        depth += 1
    ensure_plotly_js(here)
    return PLOTLY_JS


def figure_html(fig: Any, html_path: str | os.PathLike[str], *, full_html: bool = True) -> str:
    """``fig.to_html`` loading plotly.js from the run directory (see :func:`plotly_js_src`), no CDN."""
    return fig.to_html(include_plotlyjs=plotly_js_src(html_path), full_html=full_html)


def write_figure_html(fig: Any, path: str | os.PathLike[str]) -> Path:
    """Write a plotly figure as a full HTML page at ``path`` (atomically), with plotly.js beside it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, figure_html(fig, target))
    return target
