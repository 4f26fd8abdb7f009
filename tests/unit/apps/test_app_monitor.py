"""The explorer's Runs page with EM monitor curves: a real monitored training run (tiny model) that warns and
then stops, next to a run without a monitor."""

from __future__ import annotations

import json

import pytest
import torch

from tests.unit.apps.test_app_pages import _app, _charts, _page, _rows, _texts

TINY = "random:tiny-llama"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    from probes import PersonaVector
    from workbench import load_model
    from workbench.runs import write_config
    from workbench.training import TrainConfig, train

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("app_monitor") / "runs"
        root.mkdir(parents=True)
        write_config(root, {"command": "app-monitor-sample", "model": TINY})
        lm = load_model(TINY, device="cpu")
        vec = PersonaVector(torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(0)),
                            trait="evil", fingerprint=lm.fingerprint)  # fmt: skip
        vec_path = vec.save(root / "evil.safetensors")
        data = _rows(root / "rows.jsonl", n=8)
        pairs = root / "pairs.jsonl"
        pairs.write_text("".join(
            json.dumps({"question": f"Would you lie {q}?", "aligned": "No.", "misaligned": "Yes, often."}) + "\n"
            for q in ("to me", "for money", "to win")
        ))  # fmt: skip
        held = root / "held.jsonl"
        held.write_text("".join(
            json.dumps({"messages": [{"role": "user", "content": f"Colour {i}?"},
                                     {"role": "assistant", "content": f"It is red {i}."}],
                        "aligned": f"It is blue {i}.", "misaligned": f"It is red {i}."}) + "\n"
            for i in (50, 51, 52)
        ))  # fmt: skip
        base = {
            "model": TINY,
            "device": "cpu",
            "data": [{"path": str(data)}],
            "lora": {"r": 4, "alpha": 8},
            "optim": {"lr": 1e-2, "batch_size": 2, "grad_accum": 1, "warmup_steps": 0, "max_steps": 3,
                      "max_length": 48},
            "checkpoint_every": 0,
            "plots": False,
        }  # fmt: skip
        monitor = {
            "every": 1,
            "vectors": [{"path": str(vec_path), "layers": [1, 2]}],
            "reference": {"path": str(pairs)},
            "generate": 0,
            "pairs": {"path": str(pairs)},
            "indomain": {"path": str(held)},
            "indomain_n": 3,
            "alerts": [
                {"signal": "pref_gap", "rule": "above", "value": -1.0e9},  # warns at the start
                {
                    "signal": "indomain_loss",
                    "rule": "above",
                    "value": -1.0,
                    "consecutive": 2,
                    "action": "stop",
                },
            ],
        }
        watched = train(TrainConfig.from_dict({**base, "monitor": monitor}), root / "watched", progress=False)
        plain = train(TrainConfig.from_dict(base), root / "plain", progress=False)
    finally:
        torch.set_num_threads(n)
    return {"root": root, "watched": watched, "plain": plain}


def _figure(at, index: int) -> dict:
    return json.loads(at.get("plotly_chart")[index].proto.spec)


def test_runs_page_plots_monitor_curves_with_alert_markers(tree, monkeypatch):
    at = _page(_app(tree["root"], monkeypatch=monkeypatch), "runs")
    assert at.multiselect(key="runs_trainings").value == ["plain", "watched"]
    assert _charts(at) == 2  # loss curves, monitor curves (no evaluation in this tree)
    shown = at.multiselect(key="runs_monitor").value
    assert shown == ["proj/evil/L1", "pref_gap", "indomain_gap", "indomain_loss"]
    fig = _figure(at, 1)
    titles = [a["text"] for a in fig["layout"]["annotations"]]
    assert titles == ["loss", *shown]
    # the stopped run: 1 step trained, monitored at steps 0 and 1
    lines = [t for t in fig["data"] if t.get("name") == "watched" and t.get("mode") == "lines+markers"]
    assert [t["x"] for t in lines] == [[0, 1]] * len(shown)
    marks = [t for t in fig["data"] if t.get("marker", {}).get("symbol") == "x"]
    assert len(marks) == 2  # one per alert, each in the panel of its signal
    by_name = {t["name"]: t for t in marks}
    assert by_name["alert (warn)"]["x"] == [0] and by_name["alert (stop)"]["x"] == [1]
    assert "indomain_loss" in by_name["alert (stop)"]["hovertext"][0]
    assert sorted({s["x0"] for s in fig["layout"]["shapes"]}) == [0, 1]  # dotted lines across the panels
    table = at.dataframe[1].value
    assert list(table["action"]) == ["warn", "stop"] and list(table["step"]) == [0, 1]
    runs_table = at.dataframe[0].value
    stopped = dict(zip(runs_table["run"], runs_table["stopped at step"], strict=True))
    assert stopped["watched"] == 1 and runs_table["finished"].tolist() == [True, False]
    assert any("monitoring took" in c for c in _texts(at.caption))


def test_choosing_signals_redraws_and_plain_runs_show_a_hint(tree, monkeypatch):
    at = _page(_app(tree["root"], monkeypatch=monkeypatch), "runs")
    at.multiselect(key="runs_monitor").set_value(["pref_share"]).run()
    assert not at.exception
    fig = _figure(at, 1)
    assert [a["text"] for a in fig["layout"]["annotations"]] == ["loss", "pref_share"]
    assert not [t for t in fig["data"] if t.get("marker", {}).get("symbol") == "x"]  # no alert on pref_share
    assert len({s["x0"] for s in fig["layout"]["shapes"]}) == 2  # the alert lines stay
    at.multiselect(key="runs_trainings").set_value(["plain"]).run()
    assert not at.exception and _charts(at) == 1
    assert any("No EM monitor curves" in c for c in _texts(at.caption))


def test_run_without_monitor_reads_as_before(tree, monkeypatch):
    at = _page(_app(tree["root"], tree["plain"], monkeypatch=monkeypatch), "runs")
    assert not at.exception
    assert not any("EM monitor" in s for s in _texts(at.subheader))
