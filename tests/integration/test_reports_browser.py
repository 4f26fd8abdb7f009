"""The HTML reports in a real browser with no network: headless Chromium (Playwright) opens the demo's
``report.html`` and the nested reports of a demo-shaped run tree from ``file://`` and must draw every plot.

A report that loads plotly.js from a CDN stays blank here, which the control case checks. Needs Debian's
chromium at /usr/bin/chromium and the playwright package (``.ci/install-browser.sh``).
"""

from __future__ import annotations

import os

import pytest
import torch

from tests.integration.test_app_browser import CHROMIUM, CHROMIUM_ARGS
from tests.unit.workbench.test_reports_offline import build_report_run

OFFLINE_ARGS = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP * ~NOTFOUND"]  # no name resolves: no network


def _plots(page, url: str) -> tuple[int, int, list[str]]:
    """(plot divs, plots drawn, failed requests) for one page."""
    failed: list[str] = []
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.goto(url, wait_until="load")
    divs = page.locator(".plotly-graph-div").count()
    try:
        page.wait_for_function(
            "n => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n",
            arg=divs,
            timeout=20_000,
        )
    except Exception:  # noqa: BLE001 (a blank report: counted below)
        pass
    drawn = page.evaluate(
        "[...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('.main-svg')).length"
    )
    return divs, int(drawn), failed


@pytest.mark.integration
def test_reports_draw_their_plots_offline_in_headless_chromium(tmp_path):
    import plotly.graph_objects as go
    from playwright.sync_api import sync_playwright

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run .ci/install-browser.sh"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reports = build_report_run(tmp_path / "demo")
    finally:
        torch.set_num_threads(n)
    cdn = tmp_path / "cdn" / "report.html"  # the control: what report.html was before (plotly.js from a CDN)
    cdn.parent.mkdir()
    cdn.write_text(go.Figure(go.Scatter(y=[1, 3, 2])).to_html(include_plotlyjs="cdn", full_html=True))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=OFFLINE_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1300, "height": 1000})
            page = context.new_page()
            divs, drawn, failed = _plots(page, cdn.as_uri())
            assert divs == 1 and drawn == 0, "the CDN control drew a plot: the browser is not offline"
            assert any("cdn.plot.ly" in u for u in failed)
            for name, path in reports.items():
                page = context.new_page()
                divs, drawn, failed = _plots(page, path.as_uri())
                assert divs >= 1, f"{name}: no plot in {path}"
                assert drawn == divs, (
                    f"{name}: {drawn} of {divs} plots drawn offline; failed requests {failed}"
                )
                assert page.locator(".main-svg").count() >= divs
                assert not failed, f"{name}: requests failed: {failed}"
                if name == "demo":
                    assert divs == 4  # norms, sweep, loss, evaluation bars
                    page.screenshot(path=str(tmp_path / "demo_report.png"), full_page=True)
                page.close()
        finally:
            browser.close()
