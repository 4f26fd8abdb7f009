"""HTML reports that work offline: plotly figures written beside one shared ``plotly.min.js`` per run tree.

The implementation lives in ``workbench._html``; this module is its public face for the packages that write
reports (``probes``, ``steering``, ``gating``, ``apps``).
"""

from ._html import PLOTLY_JS, ensure_plotly_js, figure_html, plotly_js_bytes, plotly_js_src, write_figure_html

__all__ = [
    "PLOTLY_JS",
    "ensure_plotly_js",
    "figure_html",
    "plotly_js_bytes",
    "plotly_js_src",
    "write_figure_html",
]
