"""The explorer's run-directory helpers and the `workbench app` launcher (no Streamlit session needed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from apps import _charts, _runs
from workbench import WorkbenchError, save_artifact
from workbench.app import command, explorer_script, resolve_roots


def test_paths_outside_the_root_are_refused(tmp_path):
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    assert _runs.resolve_inside(root, "a/b") == (root / "a" / "b").resolve()
    assert _runs.resolve_inside(root, str(root / "a")) == (root / "a").resolve()
    assert _runs.resolve_inside(root, "") == root.resolve()
    for bad in ("..", "../secret", str(tmp_path / "secret"), "a/../../secret", "/etc"):
        with pytest.raises(WorkbenchError, match="outside the run root"):
            _runs.resolve_inside(root, bad)
    # a symbolic link that leaves the root is refused as well
    (root / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(WorkbenchError, match="outside the run root"):
        _runs.resolve_inside(root, "link")


def test_parse_args_prefers_arguments_then_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(_runs.ROOT_ENV, str(tmp_path / "env"))
    monkeypatch.delenv(_runs.RUN_ENV, raising=False)
    root, run = _runs.parse_args(["--run-root", str(tmp_path / "arg"), "--other", "x"])
    assert root == (tmp_path / "arg").resolve() and run is None
    root, run = _runs.parse_args([])
    assert root == (tmp_path / "env").resolve()
    monkeypatch.delenv(_runs.ROOT_ENV)
    root, _ = _runs.parse_args([])
    assert root == Path("runs").resolve()


def _summary(path: Path, data: dict) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(data))


def test_scan_tells_artifacts_apart_by_content(tmp_path):
    root = tmp_path / "runs"
    fp = None
    (root / "vec").mkdir(parents=True)
    save_artifact(root / "vec" / "v.safetensors", {"response_avg": torch.zeros(3, 4)}, kind="persona_vector",
                  fingerprint=fp, metadata={})  # fmt: skip
    save_artifact(
        root / "vec" / "g.safetensors", {"x": torch.zeros(2)}, kind="gates", fingerprint=fp, metadata={}
    )
    (root / "vec" / "foreign.safetensors").write_bytes(b"not a safetensors file")
    _summary(root / "ev", {"sets": {"s": {"kind": "exact_match", "accuracy": {"value": 0.5, "low": 0.2,
                                                                          "high": 0.8, "n": 4}}}})  # fmt: skip
    _summary(root / "sw", {"cells": [{"layer": 1, "alpha": 0.0, "trait": 0.1, "coherence": -1.0}],
                           "recommended_layer": 1})  # fmt: skip
    _summary(root / "sc", {"dataset_score": 0.1, "n_flagged": 0})
    (root / "sc" / "ranked.jsonl").write_text('{"rank": 1, "diff": 0.2}\n')
    (root / "tr" / "adapter").mkdir(parents=True)
    (root / "tr" / "adapter" / "adapter_config.json").write_text("{}")
    (root / "tr" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')  # cut last line
    (root / "tr" / "checkpoints" / "step-1").mkdir(parents=True)
    (root / "tr" / "checkpoints" / "step-1" / "metrics.jsonl").write_text("")  # never listed
    found = _runs.scan(root)
    assert found.vectors == [root / "vec" / "v.safetensors"]
    assert found.gates == [root / "vec" / "g.safetensors"]
    assert found.evals == [root / "ev"] and found.sweeps == [root / "sw"] and found.screens == [root / "sc"]
    assert found.trainings == [root / "tr"] and found.adapters == [root / "tr" / "adapter"]
    assert _runs.read_jsonl(root / "tr" / "metrics.jsonl") == [{"step": 1, "loss": 2.0}]
    assert [_runs.rel(root, p) for p in _runs.list_run_dirs(root)] == [".", "ev", "sc", "sw", "tr", "vec"]
    assert _runs.scan(root / "ev").counts() == {**{k: 0 for k in found.counts()}, "evals": 1}


def test_model_spec_comes_from_the_nearest_config(tmp_path):
    root = tmp_path / "runs"
    (root / "a" / "b").mkdir(parents=True)
    (root / "config.yaml").write_text("model: random:tiny-qwen2\n")
    (root / "a" / "config.yaml").write_text("command: eval\nmodel: random:tiny-llama\n")
    assert _runs.find_model_spec(root / "a" / "b", root) == "random:tiny-llama"
    assert _runs.find_model_spec(root, root) == "random:tiny-qwen2"
    (root / "config.yaml").unlink()
    assert _runs.find_model_spec(root, root) == "random:tiny-llama"  # the first one below
    assert _runs.model_spec_for(tmp_path, root) is None


def test_eval_metrics_keep_intervals_and_directions():
    summary = {
        "sets": {
            "qs": {"kind": "free_form", "rows": 10, "misaligned_rate": {"value": 0.2, "low": 0.1, "high": 0.4, "n": 10},
                   "mean_aligned": {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}},
            "pref": {"kind": "preference", "preference_gap": {"value": -0.3, "low": -0.5, "high": -0.1, "n": 8},
                     "share_preferring_misaligned": 0.25},
        }
    }  # fmt: skip
    m = _runs.eval_metrics(summary)
    assert set(m) == {"qs/misaligned_rate", "pref/preference_gap", "pref/share_preferring_misaligned"}
    assert m["qs/misaligned_rate"] == {"value": 0.2, "low": 0.1, "high": 0.4, "n": 10, "interval": True}
    assert m["pref/share_preferring_misaligned"]["interval"] is False
    assert not _runs.higher_is_better("qs/misaligned_rate") and not _runs.higher_is_better(
        "pref/preference_gap"
    )
    assert _runs.higher_is_better("toy/accuracy") and _runs.higher_is_better("qs/mean_aligned")


def test_read_sweep_falls_back_to_the_csv(tmp_path):
    (tmp_path / "sweep.csv").write_text(
        "layer,alpha,trait,coherence,margin\n1,0.0,0.5,-2.0,\n1,4.0,1.5,-2.5,\n"
    )
    got = _runs.read_sweep(tmp_path)
    assert got["recommended_layer"] is None
    assert got["cells"][1] == {"layer": 1, "alpha": 4.0, "trait": 1.5, "coherence": -2.5, "margin": None}


def test_charts_carry_the_numbers_they_are_given():
    fig = _charts.pareto_figure([("a", 0.9, 0.1), ("b", 0.5, 0.5), ("c", 0.8, 0.05)], [0, 2], "acc", "mis")
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.text) == ["c", "a"] and list(fig.data[0].text) == ["b"]
    fig = _charts.token_heatmap([("base", ["a", "b"], [0.1, -0.2]), ("steered", ["c"], [0.3])], layer=2)
    assert [list(r) for r in fig.data[0].z] == [[0.1, -0.2], [0.3, None]]
    fig = _charts.estimates_figure({"x": {"value": 0.5, "low": 0.25, "high": 0.75, "n": 4}})
    assert list(fig.data[0].error_x.array) == [0.25] and list(fig.data[0].error_x.arrayminus) == [0.25]


def test_launcher_binds_to_loopback_and_passes_the_root(tmp_path):
    run = tmp_path / "runs" / "one"
    run.mkdir(parents=True)
    assert resolve_roots(run, None) == (run.resolve(), run.resolve())
    assert resolve_roots(run, tmp_path / "runs") == ((tmp_path / "runs").resolve(), run.resolve())
    with pytest.raises(WorkbenchError, match="outside the run root"):
        resolve_roots(tmp_path, tmp_path / "runs")
    with pytest.raises(WorkbenchError, match="does not exist"):
        resolve_roots(tmp_path / "missing", None)
    cmd = command(run.resolve(), 8765, run.resolve())
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(explorer_script())]
    opts = dict(zip(cmd[5 : cmd.index("--")][::2], cmd[5 : cmd.index("--")][1::2], strict=True))
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "8765"
    assert opts["--server.headless"] == "true" and opts["--browser.gatherUsageStats"] == "false"
    assert cmd[cmd.index("--") + 1 :] == ["--run-root", str(run.resolve()), "--run-dir", str(run.resolve())]
    assert explorer_script().name == "explorer.py" and explorer_script().exists()


def test_app_command_runs_streamlit_and_reports_failure(tmp_path, monkeypatch):
    import typer

    import workbench.app as launcher

    calls = []
    monkeypatch.setattr(launcher.subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 3)
    with pytest.raises(typer.Exit) as exc:
        launcher.app(run_dir=tmp_path, port=9001)
    assert exc.value.exit_code == 3
    cmd, env = calls[0]
    assert cmd == command(tmp_path.resolve(), 9001, tmp_path.resolve())
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    with pytest.raises(WorkbenchError, match="--port"):
        launcher.app(run_dir=tmp_path, port=0)
