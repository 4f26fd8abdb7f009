"""The explorer in a real browser: `streamlit run` on 127.0.0.1, headless Chromium driven by Playwright.

Needs Debian's chromium at /usr/bin/chromium and the playwright package (``.ci/install-browser.sh``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest
import torch

from tests.unit.apps.test_app_pages import TINY, build_sample_runs

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PAGES = {
    "Vectors": "Persona vectors",
    "Gates": "Alignment gates",
    "Runs": "Runs",
    "Data screening": "Data screening",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(port: int, proc: subprocess.Popen, limit: float = 90.0) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                if r.read().decode().strip() == "ok":
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"no healthy streamlit on port {port} after {limit:.0f} s")


def _expected_answers(runs: dict, prompt: str, alphas: tuple[float, float]) -> tuple[int, list[str]]:
    """The steered answers the page must show at two alphas, computed here first (they must differ)."""
    from probes import load_vectors
    from steering import Steerer
    from workbench import load_model
    from workbench.generation import generate

    layer = json.loads((runs["sweep"] / "summary.json").read_text())["recommended_layer"]
    lm = load_model(TINY, device="cpu")
    vec = load_vectors(runs["vector"])["response_avg"]
    out = []
    for a in alphas:
        with Steerer(lm, vec, [layer], a):
            out.append(generate(lm, [prompt], max_new_tokens=48)[0])
    return layer, out


@pytest.mark.integration
def test_explorer_in_headless_chromium(tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from apps.launcher import command

    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: run .ci/install-browser.sh"
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = build_sample_runs(tmp_path / "runs")
        layer, (at_start, at_max) = _expected_answers(runs, "How should I treat a bad headache?", (4.0, 10.0))
    finally:
        torch.set_num_threads(n)
    assert at_start != at_max, "the chosen prompt and alphas must give different answers"
    # a run folder named like Markdown and HTML links: shown as text, never as a link
    hostile = runs["root"] / "[click](https:evil.example) <a href=https:evil.example>x"
    shutil.copytree(runs["eval-base"], hostile)

    port = _free_port()
    cmd = command(runs["root"], port)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    log = open(tmp_path / "streamlit.log", "w")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    shots = tmp_path / "shots"
    shots.mkdir()
    try:
        _wait_healthy(port, proc)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1600})
                page.set_default_timeout(60_000)
                expect.set_options(timeout=60_000)  # the first page load imports torch and the packages
                page.goto(f"http://127.0.0.1:{port}/")
                expect(page.locator("h1").first).to_have_text("EM workbench explorer")
                nav = page.locator('[data-testid="stSidebarNav"]')

                nav.get_by_text("Steering", exact=True).click()
                expect(page.locator("h1").first).to_have_text("Steering playground")
                steered = page.locator(".st-key-steered-answer")
                expect(steered.locator("h3")).to_contain_text(f"layer {layer}, α = 4")
                before = steered.locator("code").inner_text()
                thumb = (
                    page.locator(".stSlider")
                    .filter(has_text="alpha (steering coefficient)")
                    .get_by_role("slider")
                )
                thumb.focus()
                page.keyboard.press("End")  # the keyboard moves the slider to its maximum, alpha = 10
                expect(steered.locator("h3")).to_contain_text(f"layer {layer}, α = 10")
                expect(steered.locator("code")).not_to_have_text(before)
                assert page.locator('[data-testid="stException"]').count() == 0
                page.screenshot(path=str(shots / "steering.png"))

                for link, title in PAGES.items():
                    nav.get_by_text(link, exact=True).click()
                    expect(page.locator("h1").first).to_have_text(title)
                    expect(page.locator(".js-plotly-plot").first).to_be_visible()
                    assert page.locator('[data-testid="stException"]').count() == 0, link
                page.screenshot(path=str(shots / "screening.png"))

                nav.get_by_text("Runs", exact=True).click()
                expect(page.locator(".js-plotly-plot").first).to_be_visible()
                expect(page.get_by_text("[click](https:evil.example)").first).to_be_attached()
                links = page.evaluate(
                    "() => [...document.querySelectorAll('a')].filter(a => ((a.getAttribute('href') || '') + "
                    "(a.getAttribute('xlink:href') || '')).includes('evil')).length"
                )
                assert links == 0, "a folder name became a link"
            finally:
                browser.close()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()
    assert (shots / "steering.png").stat().st_size > 10_000
    keep = os.environ.get("WORKBENCH_APP_SHOTS")
    if keep:  # e.g. to look at what the browser saw
        shutil.copytree(shots, keep, dirs_exist_ok=True)
