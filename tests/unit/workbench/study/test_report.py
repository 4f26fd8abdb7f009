"""``workbench.study.write_report``: a study directory (built by hand, ``study_fixture.build_study``) becomes a
``report.html`` that loads plotly.js from beside it, draws one plot per Pareto plot, per paired metric and per
aggregate metric from the files' own numbers, shows every cell's state and escapes every label."""

from __future__ import annotations

import html
import json
import re
import shutil
from urllib.parse import unquote

import pandas as pd
import pytest

from tests.unit.workbench.study.study_fixture import HOSTILE, build_study, set_run_status
from workbench import WorkbenchError
from workbench.html import PLOTLY_JS, plotly_js_bytes
from workbench.runs import (
    AGGREGATE_CSV,
    CELLS_JSON,
    PAIRED_CSV,
    PARETO_JSON,
    REPORT_HTML,
    RESULTS_CSV,
)
from workbench.study import write_report

SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)
HREF = re.compile(r"<a href=\"([^\"]*)\"")


@pytest.fixture
def study(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return build_study(tmp_path / "study", hostile=True)


def _figures(page: str) -> dict[str, dict]:
    """Every plot of the page: div id -> ``{"data": [...], "layout": {...}}`` decoded from its newPlot call."""
    dec = json.JSONDecoder()
    out = {}
    for m in re.finditer(r'Plotly\.newPlot\(\s*"([^"]+)",\s*', page):
        data, end = dec.raw_decode(page, m.end())
        layout, _ = dec.raw_decode(page, page.index("{", end))
        out[m.group(1)] = {"data": data, "layout": layout}
    return out


def _groups(df: pd.DataFrame) -> list[tuple[str, str, str]]:
    return list(dict.fromkeys(zip(df["eval"], df["set"], df["metric"], strict=True)))


def _row(page: str, cell: str) -> str:
    """The grid table's row of one cell."""
    m = re.search(r"<tr><td>" + re.escape(html.escape(cell)) + r"</td>.*?</tr>", page)
    assert m, f"no grid row for {cell}"
    return m.group(0)


def test_report_has_one_plot_per_expected_plot_and_plotly_beside_it(study):
    target = write_report(study)
    assert target == study / REPORT_HTML
    page = target.read_text(encoding="utf-8")
    assert (study / PLOTLY_JS).read_bytes() == plotly_js_bytes()
    assert SCRIPT_SRC.findall(page) == [PLOTLY_JS]  # one relative script, no CDN
    assert "http" not in " ".join(SCRIPT_SRC.findall(page))
    assert "cdn.plot.ly" not in page and "fonts.googleapis" not in page

    figs = _figures(page)
    pareto = json.loads((study / PARETO_JSON).read_text())["plots"]
    paired = pd.read_csv(study / PAIRED_CSV, dtype=str, keep_default_na=False)
    agg = pd.read_csv(study / AGGREGATE_CSV, dtype=str, keep_default_na=False)
    assert len(pareto) == 2 and len(_groups(paired)) == 4 and len(_groups(agg)) == 4
    assert sorted(k for k in figs if k.startswith("pareto-")) == [f"pareto-{i}" for i in range(len(pareto))]
    assert len([k for k in figs if k.startswith("forest-")]) == len(_groups(paired))
    assert len([k for k in figs if k.startswith("bars-")]) == len(_groups(agg))
    assert page.count('class="plotly-graph-div"') == len(figs) == 10


def test_pareto_plot_draws_the_files_points_front_and_intervals(study):
    page = write_report(study).read_text(encoding="utf-8")
    plot = json.loads((study / PARETO_JSON).read_text())["plots"][0]
    fig = _figures(page)["pareto-0"]
    by_name = {t["name"]: t for t in fig["data"]}
    on = [p for p in plot["points"] if p["on_front"]]
    off = [p for p in plot["points"] if not p["on_front"]]
    assert on and off
    assert sorted(by_name["on the front"]["x"]) == sorted(p["x"] for p in on)
    assert sorted(by_name["dominated"]["y"]) == sorted(p["y"] for p in off)
    front = by_name["on the front"]
    for i, x in enumerate(front["x"]):
        p = next(q for q in on if q["x"] == x)
        assert front["error_x"]["array"][i] == pytest.approx(p["x_high"] - p["x"])
        assert front["error_y"]["arrayminus"][i] == pytest.approx(p["y"] - p["y_low"])
        assert html.unescape(front["text"][i]) == p["label"]
        assert all(c in html.unescape(front["hovertext"][i]) for c in p["cells"])
    if len(on) > 1:  # lower is better on x: the staircase goes across, then down
        line = by_name["Pareto front"]
        assert line["line"]["shape"] == "hv" and line["x"] == sorted(line["x"])
    # every point links to its runs: a click jumps to its row in the table under the plot, which links them
    assert "plotly_click" in page
    for trace in (by_name["on the front"], by_name["dominated"]):
        for href, anchor in trace["customdata"]:
            assert href == ""  # each point stands for several runs (two seeds, two evaluations)
            row = re.search(f'<tr id="{re.escape(anchor)}">(.*?)</tr>', page)
            assert row, anchor
            links = HREF.findall(row.group(1))
            point = plot["points"][int(anchor.rsplit("-", 1)[1])]
            assert len(links) == len(point["runs"]) >= 2
            assert all((study / unquote(html.unescape(h))).is_dir() for h in links)


def test_forest_plots_pool_bold_seeds_faint_and_a_zero_line(study):
    page = write_report(study).read_text(encoding="utf-8")
    paired = pd.read_csv(study / PAIRED_CSV, dtype=str, keep_default_na=False)
    figs = [f for k, f in _figures(page).items() if k.startswith("forest-")]
    for fig, (ename, set_name, metric) in zip(figs, _groups(paired), strict=True):
        rows = paired[(paired["eval"] == ename) & (paired["set"] == set_name) & (paired["metric"] == metric)]
        traces = {t["name"]: t for t in fig["data"]}
        pooled, seeds = traces["pooled over seeds"], traces["per seed"]
        assert len(pooled["x"]) == (rows["seed"] == "all").sum()
        assert len(seeds["x"]) == (rows["seed"] != "all").sum()
        assert pooled["opacity"] == 1.0 and seeds["opacity"] < 0.5
        assert all(y.startswith("<b>") for y in pooled["y"]) and not any(
            y.startswith("<b>") for y in seeds["y"]
        )
        assert sorted(pooled["x"]) == pytest.approx(
            sorted(rows.loc[rows["seed"] == "all", "value"].astype(float))
        )
        zero = [s for s in fig["layout"]["shapes"] if s.get("type") == "line"]
        assert len(zero) == 1 and zero[0]["x0"] == zero[0]["x1"] == 0
        assert ename in fig["layout"]["title"]["text"] and metric in fig["layout"]["title"]["text"]


def test_bars_show_the_mean_over_seeds_and_each_seed_as_a_dot(study):
    page = write_report(study).read_text(encoding="utf-8")
    agg = pd.read_csv(study / AGGREGATE_CSV, dtype=str, keep_default_na=False)
    res = pd.read_csv(study / RESULTS_CSV, dtype=str, keep_default_na=False)
    figs = [f for k, f in _figures(page).items() if k.startswith("bars-")]
    for fig, (ename, set_name, metric) in zip(figs, _groups(agg), strict=True):
        a = agg[(agg["eval"] == ename) & (agg["set"] == set_name) & (agg["metric"] == metric)]
        r = res[
            (res["eval"] == ename)
            & (res["set"] == set_name)
            & (res["metric"] == metric)
            & (res["seed"] != "")
        ]
        bars, dots = fig["data"]
        assert bars["type"] == "bar" and dots["name"] == "each seed"
        assert bars["y"] == pytest.approx(a["value"].astype(float).tolist())
        assert sorted(dots["y"]) == pytest.approx(sorted(r["value"].astype(float)))
        if ename == "gates":  # two settings: the x axis is (setting, grid values)
            assert set(bars["x"][0]) == {"gate_alpha=-1.0", "gate_alpha=0.0"}
            assert set(dots["x"][0]) == {"gate_alpha=-1.0", "gate_alpha=0.0"}
            continue
        # each bar's height is the mean of its seeds' dots (the seeds' values of that grid combination)
        for label, mean in zip(bars["x"], bars["y"], strict=True):
            ys = [y for x, y in zip(dots["x"], dots["y"], strict=True) if x == label]
            assert len(ys) == (0 if label == "base" else 2)
            if ys:
                assert mean == pytest.approx(sum(ys) / len(ys))


def test_aggregate_table_shows_values_with_intervals(study):
    page = write_report(study).read_text(encoding="utf-8")
    agg = pd.read_csv(study / AGGREGATE_CSV)
    row = agg[(agg["defenses"] == "kl") & (agg["optim.lr"] == "0.0001") & (agg["eval"] == "general")
              & (agg["metric"] == "preference_gap")].iloc[0]  # fmt: skip
    shown = f"{row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"
    assert re.search(r"<td>general</td><td></td><td>contrastive_pairs</td><td>preference_gap</td><td>"
                     + r"<span class=\"est\">" + re.escape(shown), page)  # fmt: skip


def test_every_label_from_the_files_is_escaped(study):
    page = write_report(study).read_text(encoding="utf-8")
    assert HOSTILE not in page and "<script>alert" not in page
    assert html.escape(HOSTILE) in page  # in the grid and the tables, as text
    texts = [t for f in _figures(page).values() for tr in f["data"] for t in (tr.get("text") or [])]
    texts += [
        y
        for f in _figures(page).values()
        for tr in f["data"]
        for y in (tr.get("y") or [])
        if isinstance(y, str)
    ]
    escaped = html.escape(HOSTILE, quote=False)
    assert any(escaped in t for t in texts)  # plotly draws it as text, not as a tag
    assert not any(HOSTILE in t for t in texts)


def test_grid_shows_each_cells_state(study):
    cells = json.loads((study / CELLS_JSON).read_text())["cells"]
    failed, killed, pending = (c["id"] for c in cells[1:4])
    set_run_status(study / "cells" / failed / "eval" / "general", "failed")
    set_run_status(study / "cells" / killed / "train", "running")  # nobody holds its lock: interrupted
    shutil.rmtree(study / "cells" / pending)
    page = write_report(study).read_text(encoding="utf-8")
    assert ">failed</span>" in _row(page, failed)
    assert ">interrupted</span>" in _row(page, killed)
    assert ">pending</span>" in _row(page, pending)
    assert ">done</span>" in _row(page, "base")
    assert f"{len(cells) - 3} done, 1 failed, 1 interrupted, 1 pending" in page
    # the runs of a pending cell are named, not linked (their folders do not exist)
    assert "href" not in _row(page, pending) and _row(page, "base").count("href") == 2


def test_links_stay_inside_the_study(study):
    agg = pd.read_csv(study / AGGREGATE_CSV, dtype=str, keep_default_na=False)
    agg.loc[0, "runs"] = "javascript:alert(1);../../etc;/etc;cells/base/eval/general"
    agg.to_csv(study / AGGREGATE_CSV, index=False)
    page = write_report(study).read_text(encoding="utf-8")
    hrefs = [html.unescape(h) for h in HREF.findall(page)]
    assert hrefs and "cells/base/eval/general/" in hrefs
    for h in hrefs:
        assert not h.startswith(("/", "javascript:")) and ".." not in h
    assert "javascript:alert(1)" in page  # shown as text


def test_a_study_in_progress_gets_the_grid_and_a_note(study):
    for name in (RESULTS_CSV, AGGREGATE_CSV, PAIRED_CSV, PARETO_JSON):
        (study / name).unlink()
    page = write_report(study).read_text(encoding="utf-8")
    assert "Not written yet" in page and "plotly-graph-div" not in page
    assert ">done</span>" in _row(page, "base")


def test_refuses_a_folder_that_is_not_a_study(tmp_path):
    with pytest.raises(WorkbenchError, match=CELLS_JSON):
        write_report(tmp_path)


def test_refuses_a_malformed_table(study):
    (study / RESULTS_CSV).write_text("cell,value\nbase,1\n")
    with pytest.raises(WorkbenchError, match="lacks the column"):
        write_report(study)
