"""A study's ``report.html`` in a real browser with no network: headless Chromium (Playwright) opens it from
``file://`` and must draw every plot (each plot div holds plotly's ``.main-svg``) with no console error, no
failed request and no script run from a label; a click on a Pareto point jumps to its runs.

Set ``WORKBENCH_SCREENSHOT=PATH.png`` (or ``.jpg``) to keep a full-page screenshot for the docs. Needs
Debian's chromium at /usr/bin/chromium and the playwright package (``.ci/install-browser.sh``).
"""

from __future__ import annotations

import os

import pytest

from tests.integration.test_app_browser import CHROMIUM
from tests.integration.test_reports_browser import OFFLINE_ARGS
from tests.unit.workbench.study.study_fixture import build_study

N_PLOTS = 10  # 2 Pareto plots, 4 forest plots (eval x set x metric of paired.csv), 4 bar charts


def _open(context, url: str) -> tuple[object, list[str], list[str], list[str]]:
    """A page showing ``url`` once every plot is drawn, with its console errors, failed requests, dialogs."""
    page = context.new_page()
    errors: list[str] = []
    failed: list[str] = []
    dialogs: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(url, wait_until="load")
    divs = page.locator(".plotly-graph-div").count()
    page.wait_for_function(
        "n => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n", arg=divs, timeout=30_000
    )
    return page, errors, failed, dialogs


@pytest.mark.integration
def test_study_report_draws_every_plot_offline_in_headless_chromium(tmp_path, monkeypatch):
    from playwright.sync_api import sync_playwright

    from workbench.study import write_report

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run .ci/install-browser.sh"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    clean = write_report(build_study(tmp_path / "study"))
    hostile = write_report(build_study(tmp_path / "hostile", hostile=True))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=OFFLINE_ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1300, "height": 1000})
            for report in (clean, hostile):
                page, errors, failed, dialogs = _open(context, report.as_uri())
                drawn = page.evaluate(
                    "[...document.querySelectorAll('.plotly-graph-div')]"
                    ".filter(d => d.querySelector('.main-svg')).length"
                )
                assert page.locator(".plotly-graph-div").count() == drawn == N_PLOTS
                assert not errors, f"console errors: {errors}"
                assert not failed, f"failed requests: {failed}"
                assert not dialogs, f"a label ran a script: {dialogs}"

            # a click on a Pareto point (it stands for several runs) jumps to its row, which links them
            page, errors, _, _ = _open(context, clean.as_uri())
            point = page.locator("#pareto-0 .scatterlayer .trace .points path").first
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            assert box is not None
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            page.wait_for_function("() => location.hash.startsWith('#row-pareto-0-')", timeout=10_000)
            anchor = page.evaluate("location.hash").lstrip("#")
            assert page.locator(f"tr#{anchor} a").count() >= 2
            assert not errors
            shot = os.environ.get("WORKBENCH_SCREENSHOT")
            if shot:
                page.evaluate("window.scrollTo(0, 0)")
                page.screenshot(path=shot, full_page=True)
        finally:
            browser.close()
