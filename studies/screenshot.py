"""Open a study's ``report.html`` in headless Chromium with no network, check that every plot is drawn, and save
a PNG of its Pareto plots (the pictures in docs/studies.md).

    python studies/screenshot.py STUDY_DIR OUT.png [--plots 0,1] [--width 1000]

Needs Debian's chromium at /usr/bin/chromium and the playwright package (``.ci/install-browser.sh``). Exits
with an error when a plot is not drawn, a request fails (there must be none: plotly.min.js lies beside the
report) or the page logs a console error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: no network
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument(
        "--plots",
        default=None,
        help="comma list of Pareto plot indices (default: all), stacked in this order",
    )
    parser.add_argument("--width", type=int, default=1000)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    report = (args.study_dir / "report.html").resolve()
    errors: list[str] = []
    failed: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context(offline=True, viewport={"width": args.width, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: failed.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            divs = page.locator(".plotly-graph-div").count()
            page.wait_for_function(
                "n => document.querySelectorAll('.plotly-graph-div .main-svg').length >= n",
                arg=divs,
                timeout=60_000,
            )
            drawn = page.evaluate(
                "[...document.querySelectorAll('.plotly-graph-div')].filter(d => d.querySelector('.main-svg'))"
                ".length"
            )
            msg = f"{report}: {drawn} of {divs} plots drawn, {len(failed)} failed requests, {len(errors)} errors"
            print(msg)  # noqa: T201
            if drawn != divs or failed or errors:
                print(f"failed: {failed}\nerrors: {errors}", file=sys.stderr)  # noqa: T201
                return 1
            n = page.locator("[id^=pareto-]").count()
            wanted = [int(i) for i in args.plots.split(",")] if args.plots else list(range(n))
            # each plot is followed by its table: shoot the plots one by one and stack them
            from PIL import Image

            shots = []
            for i in wanted:
                path = args.out.with_suffix(f".{i}.png")
                page.locator(f"#pareto-{i}").screenshot(path=str(path))
                shots.append(Image.open(path).convert("RGB"))
            width = max(s.width for s in shots)
            canvas = Image.new("RGB", (width, sum(s.height for s in shots)), "white")
            y = 0
            for s in shots:
                canvas.paste(s, (0, y))
                y += s.height
            canvas = canvas.quantize(colors=128)
            canvas.save(args.out, optimize=True)
            for i in wanted:
                args.out.with_suffix(f".{i}.png").unlink()
        finally:
            browser.close()
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
