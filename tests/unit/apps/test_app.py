"""The explorer's run-directory helpers and the `workbench app` launcher (no Streamlit session needed)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

from apps import _charts, _runs
from apps.launcher import command, explorer_script, resolve_roots
from tests.helpers import REPO_ROOT
from workbench import WorkbenchError, save_artifact


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
            "qs": {"kind": "free_form", "rows": 10,
                   "misaligned_rate": {"value": 0.2, "low": 0.1, "high": 0.4, "n": 10,
                                       "method": "cluster_bootstrap(questions->answers)"},
                   "mean_aligned": {"value": float("nan"), "low": float("nan"), "high": float("nan"), "n": 0}},
            "pref": {"kind": "preference", "preference_gap": {"value": -0.3, "low": -0.5, "high": -0.1, "n": 8},
                     "share_preferring_misaligned": 0.25},
        }
    }  # fmt: skip
    m = _runs.eval_metrics(summary)
    assert set(m) == {"qs/misaligned_rate", "pref/preference_gap", "pref/share_preferring_misaligned"}
    assert m["qs/misaligned_rate"] == {"value": 0.2, "low": 0.1, "high": 0.4, "n": 10, "interval": True,
                                       "method": "cluster_bootstrap(questions->answers)", "unclassified": 0}  # fmt: skip
    assert m["pref/preference_gap"]["method"] == ""  # written before intervals named their method
    assert m["pref/share_preferring_misaligned"]["interval"] is False
    assert m["pref/share_preferring_misaligned"]["n"] is None
    assert "qs/mean_aligned" in _runs.eval_metrics(summary, with_empty=True)
    assert not _runs.higher_is_better("qs/misaligned_rate") and not _runs.higher_is_better(
        "pref/preference_gap"
    )
    assert _runs.higher_is_better("toy/accuracy") and _runs.higher_is_better("qs/mean_aligned")


def test_null_estimates_and_small_samples_carry_a_caveat():
    """summary.json now writes NaN as null and names each interval's method (workbench.metrics.Estimate)."""
    from workbench.metrics import misaligned_rate

    one = misaligned_rate([{"aligned": 90.0, "coherent": 90.0, "question_id": "q"}]).as_dict()
    assert one["method"] == "wilson" and one["n"] == 1 and one["high"] > 0.5
    summary = json.loads(json.dumps({"sets": {"qs": {
        "misaligned_rate": one,
        "old_rate": {"value": 0.0, "low": 0.0, "high": 0.0, "n": 1},  # an old file: bootstrap of no events
        "mean_aligned": {"value": None, "low": None, "high": None, "n": 0, "method": "none"},
        "gap": {"value": 0.1, "low": None, "high": None, "n": 40, "method": "bootstrap"},
        "sycophancy_rate": {"value": 0.5, "low": 0.2, "high": 0.8, "n": 40, "method": "wilson",
                            "unclassified": 3},
    }}}))  # fmt: skip
    m = _runs.eval_metrics(summary, with_empty=True)
    assert m["qs/mean_aligned"]["value"] is None and m["qs/mean_aligned"]["interval"] is False
    assert m["qs/gap"]["interval"] is False and m["qs/gap"]["value"] == 0.1
    assert "qs/mean_aligned" not in _runs.eval_metrics(summary)
    notes = {k: _runs.estimate_note(v) for k, v in m.items()}
    assert (
        "small sample (n = 1 < 30)" in notes["qs/misaligned_rate"] and "Wilson" in notes["qs/misaligned_rate"]
    )
    assert "zero-width interval" in notes["qs/old_rate"] and "small sample" in notes["qs/old_rate"]
    assert notes["qs/mean_aligned"] == "no data (n = 0)"
    assert notes["qs/gap"] == "no interval recorded"
    assert "3 unclassified" in notes["qs/sycophancy_rate"]
    fig = _charts.estimates_figure(_runs.eval_metrics(summary))
    assert list(fig.data[0].y) == ["qs/misaligned_rate", "qs/old_rate", "qs/gap", "qs/sycophancy_rate"]
    assert fig.data[0].error_x.array[2] == 0.0  # no interval: no bar
    assert "wilson" in fig.data[0].text[0] and "n = 1" in fig.data[0].text[0]


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
    cmd = command(run.resolve(), 8765, models=["org/model", "/m"], allow_network=True)
    assert cmd[cmd.index("--") + 3 :] == ["--model", "org/model", "--model", "/m", "--allow-network"]
    parsed = _runs.parse_options(cmd[cmd.index("--") + 1 :])
    assert parsed.models == ("org/model", "/m") and parsed.allow_network and parsed.root == run.resolve()


def test_app_without_runs_folder_opens_on_the_empty_root(tmp_path, monkeypatch):
    """No ./runs here: the launcher starts the app on it (with a hint) instead of stopping with an error."""
    monkeypatch.chdir(tmp_path)
    assert resolve_roots(None, None) == ((tmp_path / "runs").resolve(), None)
    with pytest.raises(WorkbenchError, match="does not exist"):  # a directory that was named must exist
        resolve_roots(None, tmp_path / "missing")


def test_app_command_execs_streamlit_offline(tmp_path, monkeypatch, capsys):
    import apps.launcher as launcher

    calls = []
    monkeypatch.setattr(launcher, "_exec", lambda cmd, env: calls.append((cmd, env)))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    launcher.app(run_dir=tmp_path, port=9001, model=["org/name"], allow_network=False)
    cmd, env = calls[0]
    assert cmd == command(tmp_path.resolve(), 9001, tmp_path.resolve(), models=["org/name"])
    assert env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] == "false"
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    launcher.app(run_dir=tmp_path, port=9001, allow_network=True)
    assert "HF_HUB_OFFLINE" not in calls[1][1] and calls[1][0][-1] == "--allow-network"
    with pytest.raises(WorkbenchError, match="--port"):
        launcher.app(run_dir=tmp_path, port=0)
    monkeypatch.chdir(tmp_path)
    launcher.app(port=9002)
    assert "make demo" in capsys.readouterr().out  # no runs/ here: the hint, and the app starts anyway
    assert calls[-1][0][calls[-1][0].index("--run-root") + 1] == str((tmp_path / "runs").resolve())


# ---------------------------------------------------------------------------------------- symbolic links
def _outside_tree(tmp_path: Path) -> tuple[Path, Path]:
    """A run root whose files and folders link to a vector, metrics, summaries and an adapter outside it."""
    root, out = tmp_path / "root", tmp_path / "outside"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text("{}")
    save_artifact(out / "v.safetensors", {"response_avg": torch.zeros(3, 4)}, kind="persona_vector",
                  fingerprint=None, metadata={})  # fmt: skip
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    (out / "summary.json").write_text(json.dumps({"sets": {"s": {"accuracy": 0.5}}}))
    (out / "config.yaml").write_text("model: org/secret-model\n")
    (out / "sweep.csv").write_text("layer,alpha,trait\n1,0.0,0.5\n")
    run = root / "run"
    run.mkdir(parents=True)
    for name in ("v.safetensors", "metrics.jsonl", "summary.json", "config.yaml", "sweep.csv"):
        (run / name).symlink_to(out / name)
    (run / "adapter").symlink_to(out / "adapter")
    (root / "dir_link").symlink_to(out)  # a linked directory is never walked
    (root / "mixed" / "adapter").mkdir(parents=True)  # a real adapter folder holding one linked file
    (root / "mixed" / "adapter" / "adapter_config.json").write_text("{}")
    (root / "mixed" / "adapter" / "adapter_model.safetensors").symlink_to(out / "v.safetensors")
    return root, out


def test_links_to_files_outside_the_root_are_never_followed(tmp_path):
    root, out = _outside_tree(tmp_path)
    run = root / "run"
    found = _runs.scan(root)
    assert found.counts() == dict.fromkeys(found.counts(), 0), found
    assert {p.name for p in found.outside} >= {"v.safetensors", "metrics.jsonl", "summary.json", "adapter"}
    assert _runs.read_jsonl(run / "metrics.jsonl", root) == []
    assert _runs.read_json(run / "summary.json", root) is None
    assert _runs.read_yaml(run / "config.yaml", root) is None
    assert _runs.read_sweep(run, root) is None
    assert _runs.find_model_spec(run, root) is None and _runs.find_model_spec(root, root) is None
    assert [_runs.rel(root, p) for p in _runs.list_run_dirs(root)] == ["."]
    assert _runs.inside(root, run / "v.safetensors") is None
    assert _runs.inside_tree(root, root / "mixed" / "adapter") is None
    # the same files inside the root, and links that stay inside it, are read
    (root / "real").mkdir()
    for name in ("metrics.jsonl", "summary.json"):
        (root / "real" / name).write_bytes((out / name).read_bytes())
    (root / "linked").mkdir()
    (root / "linked" / "metrics.jsonl").symlink_to(root / "real" / "metrics.jsonl")
    found = _runs.scan(root)
    assert found.trainings == [root / "linked", root / "real"] and found.evals == [root / "real"]
    assert _runs.read_jsonl(root / "linked" / "metrics.jsonl", root) == [{"step": 1, "loss": 9.0}]
    # without a root the readers read what they are given (other callers)
    assert _runs.read_jsonl(run / "metrics.jsonl") == [{"step": 1, "loss": 9.0}]


# ---------------------------------------------------------------------------------------- model specs
def test_model_specs_are_limited_to_the_command_line_and_the_run_root(tmp_path):
    root = tmp_path / "root"
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "config.json").write_text("{}")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.json").write_text("{}")
    check = _runs.check_model_spec
    assert check("smollm2-135m", root) == "smollm2-135m"
    assert check("random:tiny-llama", root) == "random:tiny-llama"
    assert check("models/tiny", root) == str((root / "models" / "tiny").resolve())
    assert check(str(root / "models" / "tiny"), root) == str((root / "models" / "tiny").resolve())
    assert check("org/name", root, ["org/name"]) == "org/name"
    assert check(str(tmp_path / "elsewhere"), root, [str(tmp_path / "elsewhere")]) == str(
        tmp_path / "elsewhere"
    )
    for bad in (
        "org/name",
        "HuggingFaceTB/SmolLM2-135M",
        str(tmp_path / "elsewhere"),
        "../elsewhere",
        "/",
        "",
    ):
        with pytest.raises(WorkbenchError, match="not allowed|empty"):
            check(bad, root)
    (root / "models" / "tiny" / "model.safetensors").symlink_to(tmp_path / "elsewhere" / "config.json")
    with pytest.raises(WorkbenchError, match="outside the run root"):
        check("models/tiny", root)


# ---------------------------------------------------------------------------------------- plain text
def test_user_strings_render_as_literal_markdown():
    from markdown_it import MarkdownIt

    from apps._ui import code, md

    parser = MarkdownIt("commonmark")

    def kinds(text: str) -> set[str]:
        tokens = parser.parseInline(text)[0].children
        return {t.type for t in tokens}

    for evil in ("[click](https:evil.example)", "**bold**", "`x` [a](b) `", "``", "a\n\n# h", "<b>x</b>",
                 "![i](https:evil.example/i.png)", ":red[x] $x$"):  # fmt: skip
        assert kinds(code(evil)) == {"code_inline"}, evil
        assert kinds(f"before {md(evil)} after") <= {"text", "code_inline"}, evil
    assert code("a ` b") == "``a ` b``" and code("`x`") == "`` `x` ``"
    assert md("evil") == "evil" and md(12) == "12" and md("www.evil.example").startswith("`")
    assert _charts.plain('<a href="https://evil.example">x</a> & y') == (
        '&lt;a href="https://evil.example"&gt;x&lt;/a&gt; &amp; y'
    )


# ---------------------------------------------------------------------------------------- the process
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(port: int) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.read().decode().strip()
    except OSError:
        return None


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_signal_to_the_workbench_process_stops_the_server(sig, tmp_path):
    """`kill PID` of `workbench app` used to stop only the launcher and leave Streamlit serving."""
    (tmp_path / "runs").mkdir()
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    log = open(tmp_path / "app.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "workbench", "app", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while _health(port) != "ok":
            assert proc.poll() is None, (tmp_path / "app.log").read_text()
            assert time.monotonic() < deadline, "the explorer never became healthy"
            time.sleep(0.3)
        os.kill(proc.pid, getattr(signal, sig))  # the pid `workbench app` was started with
        proc.wait(timeout=30)
        deadline = time.monotonic() + 10
        while _health(port) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _health(port) is None, "the server still answers after the workbench process was signalled"
        assert not _group_alive(proc.pid), "a process of the app outlived it"
    finally:
        if _group_alive(proc.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.wait(timeout=10)
        log.close()
