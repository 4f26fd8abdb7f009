"""The explorer's Studies page (Streamlit ``AppTest``) on a study directory built by hand
(``tests/unit/workbench/study/study_fixture.py``): the grid with each cell's state, the results table and its
filters, the Pareto plot, the paired differences, and a run opened on the Runs page."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import REPO_ROOT
from tests.unit.workbench.study.study_fixture import HOSTILE, build_study, set_run_status
from workbench.runs import CELLS_JSON, PAIRED_CSV, PARETO_JSON, RESULTS_CSV

EXPLORER = REPO_ROOT / "apps" / "explorer.py"
TIMEOUT = 60


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    top = tmp_path_factory.mktemp("studies") / "runs"
    study = build_study(top / "study", hostile=True)
    cells = json.loads((study / CELLS_JSON).read_text())["cells"]
    set_run_status(study / "cells" / cells[1]["id"] / "eval" / "general", "failed")
    shutil.rmtree(study / "cells" / cells[2]["id"])  # never started: pending
    return top


def _app(root: Path, monkeypatch):
    """The explorer on ``root``, not run yet."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("HOME", str(root.parent / "home"))
    monkeypatch.setenv("WORKBENCH_RUN_ROOT", str(root))
    monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    monkeypatch.setenv("WORKBENCH_APP_MODELS", "")
    monkeypatch.delenv("WORKBENCH_APP_ALLOW_NETWORK", raising=False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the explorer sets them: restore after the test
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    return AppTest.from_file(str(EXPLORER), default_timeout=TIMEOUT)


def _studies(root: Path, monkeypatch):
    at = _app(root, monkeypatch)
    at.run()
    at.switch_page("_pages/studies.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


TABLES = {
    "grid": "state",
    "results": "run",
    "aggregate": "n_seeds",
    "points": "on front",
    "paired": "comparison",
}


def _frame(at, name: str) -> pd.DataFrame:
    """The page's table ``name``, told apart by a column only it has."""
    return next(d.value for d in at.dataframe if TABLES[name] in d.value.columns)


def test_studies_page_shows_the_grid_with_states(root, monkeypatch):
    at = _studies(root, monkeypatch)
    assert [t.value for t in at.title] == ["Studies"]
    assert at.selectbox(key="studies_dir").value == "study"
    cells = json.loads((root / "study" / CELLS_JSON).read_text())["cells"]
    grid = _frame(at, "grid")
    assert list(grid["cell"]) == [c["id"] for c in cells]
    assert list(grid.columns[:4]) == ["cell", "defenses", "optim.lr", "seed"]
    assert HOSTILE in set(grid["defenses"])  # shown as text in a table cell
    states = dict(zip(grid["cell"], grid["state"], strict=True))
    assert states[cells[1]["id"]] == "failed"
    assert states[cells[2]["id"]] == "pending"
    assert states["base"] == "done"
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Done"] == str(len(cells) - 2) and metrics["Failed"] == "1" and metrics["Pending"] == "1"


def test_studies_page_results_table_filters_by_eval_and_metric(root, monkeypatch):
    at = _studies(root, monkeypatch)
    results = pd.read_csv(root / "study" / RESULTS_CSV, dtype=str, keep_default_na=False)
    table = _frame(at, "results")
    assert len(table) == len(results)
    at.multiselect(key="studies_evals").set_value(["indomain"]).run()
    at.multiselect(key="studies_metrics").set_value(["preference_gap"]).run()
    assert not at.exception
    table = _frame(at, "results")
    want = results[(results["eval"] == "indomain") & (results["metric"] == "preference_gap")]
    assert len(table) == len(want) > 0 and set(table["eval"]) == {"indomain"}
    row = table.iloc[0]
    assert row["value [95% interval]"] == f"{row['value']:.3f} [{row['low']:.3f}, {row['high']:.3f}]"


def test_studies_page_pareto_plot_and_paired_differences(root, monkeypatch):
    at = _studies(root, monkeypatch)
    plots = json.loads((root / "study" / PARETO_JSON).read_text())["plots"]
    assert len(at.get("plotly_chart")) == 1
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    front = next(t for t in fig["data"] if t["name"] == "Pareto front")
    assert len(front["x"]) == sum(p["on_front"] for p in plots[0]["points"])
    points = _frame(at, "points")
    assert list(points["point"]) == [p["label"] for p in plots[0]["points"]]
    at.selectbox(key="studies_pareto").set_value(1).run()
    assert not at.exception and len(at.get("plotly_chart")) == 1
    paired = pd.read_csv(root / "study" / PAIRED_CSV, dtype=str, keep_default_na=False)
    table = _frame(at, "paired")
    assert len(table) == (paired["seed"] == "all").sum()
    at.toggle(key="studies_pooled").set_value(False).run()
    assert len(_frame(at, "paired")) == len(paired)


def test_a_points_runs_open_on_the_runs_page(root, monkeypatch):
    from urllib.parse import parse_qs, urlsplit

    at = _studies(root, monkeypatch)
    plot = json.loads((root / "study" / PARETO_JSON).read_text())["plots"][0]
    point = plot["points"][3]  # defenses=kl,optim.lr=0.0001: every run written
    at.selectbox(key="studies_point").set_value(3).run()
    assert not at.exception
    urls = [b.proto.url for b in at.get("link_button")]
    assert at.selectbox(key="studies_cell").value == "base"  # the cell's runs come first: general, indomain
    point_urls = urls[2:]
    assert [urlsplit(u).path for u in point_urls] == ["runs"] * len(point["runs"])
    wanted = [parse_qs(urlsplit(u).query)["run"][0] for u in point_urls]
    assert wanted == [f"study/{r}" for r in point["runs"]]
    # the link opens the Runs page in a new session, whose sidebar picks the run from ?run=
    fresh = _app(root, monkeypatch)
    fresh.query_params["run"] = wanted[0]
    fresh.switch_page("_pages/runs.py").run()
    assert not fresh.exception, [e.value for e in fresh.exception]
    assert [t.value for t in fresh.title] == ["Runs"]
    assert fresh.sidebar.selectbox(key="run_choice").value == wanted[0]
    assert fresh.selectbox(key="runs_eval").value == wanted[0]
    # a point whose cell never ran names its runs without a link
    at.selectbox(key="studies_point").set_value(1).run()
    assert len(at.get("link_button")) == 2 + 2
    assert sum(c.value == "not written yet" for c in at.caption) == 2


def test_no_study_is_one_message(tmp_path, monkeypatch):
    (tmp_path / "runs").mkdir()
    at = _studies(tmp_path / "runs", monkeypatch)
    assert at.info and "No study" in at.info[0].value
    assert not at.get("plotly_chart")


def test_study_strings_stay_literal(root, tmp_path, monkeypatch):
    """A study named and described like Markdown links and emphasis, and a grid label holding a <script>."""
    import yaml

    from tests.unit.apps.test_app_pages import _assert_literal, _markdown_sources

    top = tmp_path / "runs"
    shutil.copytree(root / "study", top / "study")
    spec = yaml.safe_load((top / "study" / "study.yaml").read_text())
    spec.update(name="[click](https:evil.example)", description="**zzbold** <a href=https:evil.example>x")
    (top / "study" / "study.yaml").write_text(yaml.safe_dump(spec))
    at = _studies(top, monkeypatch)
    _assert_literal(_markdown_sources(at), "evil.example", "zzbold")
    at.selectbox(key="studies_point").set_value(len(_frame(at, "points")) - 1).run()
    _assert_literal(_markdown_sources(at), "evil.example", "zzbold")
    texts = [
        t for tr in json.loads(at.get("plotly_chart")[0].proto.spec)["data"] for t in tr.get("text") or []
    ]
    assert any("&lt;script&gt;" in t for t in texts) and not any(HOSTILE in t for t in texts)


def test_files_linked_from_outside_the_root_are_not_read(root, tmp_path, monkeypatch):
    top, outside = tmp_path / "runs", tmp_path / "outside"
    shutil.copytree(root / "study", top / "study")
    shutil.copytree(root / "study", outside)
    (top / "study" / RESULTS_CSV).unlink()
    (top / "study" / RESULTS_CSV).symlink_to(outside / RESULTS_CSV)
    base = top / "study" / "cells" / "base"
    shutil.rmtree(base)
    base.symlink_to(outside / "cells" / "base")  # its runs live outside the root: not read, so pending
    at = _studies(top, monkeypatch)
    assert any(RESULTS_CSV in i.value for i in at.info)
    assert not any("run" in d.value.columns for d in at.dataframe)
    grid = _frame(at, "grid")
    assert dict(zip(grid["cell"], grid["state"], strict=True))["base"] == "pending"


def test_a_malformed_table_is_one_warning(root, tmp_path, monkeypatch):
    top = tmp_path / "runs"
    shutil.copytree(root / "study", top / "study")
    (top / "study" / RESULTS_CSV).write_text("cell,value\nbase,1\n")
    at = _studies(top, monkeypatch)
    assert any(RESULTS_CSV in w.value and "lacks the column" in w.value for w in at.warning)
    assert len(at.get("plotly_chart")) == 1  # the rest of the page is still there
