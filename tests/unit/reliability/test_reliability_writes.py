"""Writes that survive kills, and run directories that are never silently reused or wiped.

- Atomic writes: a writer process is SIGKILLed at random moments and at chosen points (mid-write, between
  write and rename); the target is always absent, the old version or the new one, never half-written.
- Append-only JSONL: a row torn by a kill is skipped by every reader and never swallows the rows after it.
- Run directories: refused when not empty unless --overwrite or --resume (not both); --resume removes the
  temporary files of killed writes; --overwrite never empties the working directory, home or a git checkout.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT
from workbench import WorkbenchError, load_artifact
from workbench._io import append_jsonl, atomic_write_json
from workbench.runs import clean_stale_temp, prepare_run_dir

ROOT = REPO_ROOT
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def spawn(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=ENV,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    end = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"writer exited early: {proc.stderr.read()[-2000:]}")
        assert time.time() < end, "writer never got ready"
        time.sleep(0.01)


# ---------------------------------------------------------------------------------------- random kills
# the writers load workbench/_io.py on its own (standard library only): a kill costs milliseconds, not the
# seconds of importing torch through the workbench package
LOAD_IO = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("wb_io", "workbench/_io.py")
io = importlib.util.module_from_spec(spec)
spec.loader.exec_module(io)
"""

JSON_WRITER = (
    LOAD_IO
    + """
from pathlib import Path
append_jsonl, atomic_write_json = io.append_jsonl, io.atomic_write_json
d = Path(sys.argv[1])
start = int(sys.argv[2])
for i in range(start, start + 10**6):
    atomic_write_json(d / "state.json", {"i": i, "pad": [i] * 20000})  # ~120 kB per version
    append_jsonl(d / "rows.jsonl", {"i": i, "pad": "x" * (i % 5000)})
    if i == start:
        (d / "ready").touch()
"""
)

N_JSON_KILLS = 20


def test_random_sigkills_never_leave_a_half_written_json_or_a_lost_row(tmp_path):
    rng = random.Random(0)
    start = 0
    for _ in range(N_JSON_KILLS):
        (tmp_path / "ready").unlink(missing_ok=True)
        proc = spawn(JSON_WRITER, str(tmp_path), str(start))
        wait_for(tmp_path / "ready", proc)
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        state = json.loads((tmp_path / "state.json").read_text())  # complete, whatever the moment
        assert state["pad"] == [state["i"]] * 20000
        lines = (tmp_path / "rows.jsonl").read_text().split("\n")
        good = []
        for j, line in enumerate(lines):
            try:
                good.append(json.loads(line)["i"])
            except ValueError:
                assert j >= len(lines) - 2 or line == "", "only a torn last row may be unreadable"
        # no row is lost: every writer's rows are consecutive and each new writer starts right after
        # the last complete row (the row torn by a kill is the only one missing)
        start = good[-1] + 1
        assert good == sorted(good) and len(set(good)) == len(good)
    leftovers = clean_stale_temp(tmp_path)
    assert all(p.name.startswith(".state.json.") and p.name.endswith(".tmp") for p in leftovers)
    assert not list(tmp_path.glob(".*.tmp"))


ARTIFACT_WRITER = """
import sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from workbench import save_artifact
d = Path(sys.argv[1])
for i in range(10**6):
    save_artifact(d / "v.safetensors", {"v": torch.full((256, 1024), float(i))}, kind="persona_vector",
                  fingerprint=None, metadata={"i": i})  # 1 MiB per version
    if i == 0:
        (d / "ready").touch()
"""


def test_sigkill_while_saving_artifacts_leaves_a_complete_file(tmp_path):
    (tmp_path / "ready").unlink(missing_ok=True)
    proc = spawn(ARTIFACT_WRITER, str(tmp_path))
    wait_for(tmp_path / "ready", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    art = load_artifact(tmp_path / "v.safetensors", expect_kind="persona_vector")
    i = art.metadata["i"]
    assert i >= 0 and torch.equal(art.tensors["v"], torch.full((256, 1024), float(i)))


# ---------------------------------------------------------------------------------------- chosen kill points
KILL_AT = (
    LOAD_IO
    + """
import os, signal
from pathlib import Path
target = Path(sys.argv[1])
io.atomic_write_text(target, "old version\\n")
point = sys.argv[2]
if point == "mid-write":
    real = Path.write_bytes
    def half(self, data):
        with open(self, "wb") as fh:
            fh.write(data[: len(data) // 2]); fh.flush(); os.fsync(fh.fileno())
        os.kill(os.getpid(), signal.SIGKILL)
    Path.write_bytes = half
elif point == "before-rename":
    io.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)
io.atomic_write_text(target, "new version " * 100000)
"""
)


@pytest.mark.parametrize("point", ["mid-write", "before-rename"])
def test_kill_inside_an_atomic_write_keeps_the_old_version(tmp_path, point):
    target = tmp_path / "run" / "summary.json"
    proc = spawn(KILL_AT, str(target), point)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_text() == "old version\n"
    temps = list(target.parent.glob(".summary.json.*.tmp"))
    assert len(temps) == 1, "the kill left its temporary file..."
    assert prepare_run_dir(target.parent, "eval", resume=True) == target.parent
    assert not temps[0].exists() and target.read_text() == "old version\n", "...which --resume removes"


def test_torn_row_is_skipped_and_does_not_swallow_the_next(tmp_path, caplog):
    from apps._runs import read_jsonl
    from workbench.evaluation import _read_rows
    from workbench.judges._base import JudgmentCache

    path = tmp_path / "rows.jsonl"
    append_jsonl(path, {"uid": "a", "key": "k1", "judge": "j", "score": 1.0})
    with open(path, "a") as fh:
        fh.write('{"uid": "b", "key": "k2", "judge": "j", "sco')  # a kill mid-append
    append_jsonl(path, {"uid": "c", "key": "k3", "judge": "j", "score": 3.0})
    assert [r["uid"] for r in _read_rows(path)] == ["a", "c"]
    assert [r["uid"] for r in read_jsonl(path)] == ["a", "c"]
    assert len(JudgmentCache("j", tmp_path)._rows) == 0  # other file name; read this one explicitly:
    cache = JudgmentCache("j")
    cache._load(path)
    assert sorted(cache._rows) == ["k1", "k3"]


def test_failed_write_leaves_no_temp_file_and_the_old_content(tmp_path, monkeypatch):
    from workbench import save_artifact

    target = tmp_path / "v.safetensors"
    save_artifact(target, {"v": torch.ones(4)}, kind="persona_vector", fingerprint=None)
    import safetensors.torch

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", broken)
    with pytest.raises(OSError, match="No space left"):
        save_artifact(target, {"v": torch.zeros(4)}, kind="persona_vector", fingerprint=None)
    assert torch.equal(load_artifact(target).tensors["v"], torch.ones(4))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors"]
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.safetensors", "x.json"]


# ---------------------------------------------------------------------------------------- run directories
def test_existing_run_needs_resume_or_overwrite_and_not_both(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(WorkbenchError, match="already exists and is not empty; pass --resume.*--overwrite"):
        prepare_run_dir(run, "train")
    with pytest.raises(WorkbenchError, match="contradict"):
        prepare_run_dir(run, "train", overwrite=True, resume=True)
    assert prepare_run_dir(run, "train", resume=True) == run and (run / "metrics.jsonl").exists()
    (run / "sub").mkdir()
    (run / "sub" / "old.txt").write_text("x")
    assert prepare_run_dir(run, "train", overwrite=True) == run  # --resume marked it a run (run.json)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "run.json"], "emptied, then marked again"
    (tmp_path / "file").write_text("x")
    with pytest.raises(WorkbenchError, match="is a file"):
        prepare_run_dir(tmp_path / "file", "train", overwrite=True)


def test_overwrite_never_wipes_the_working_directory_home_or_a_checkout(tmp_path, monkeypatch):
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "src" / "work.py").write_text("precious = True\n")
    monkeypatch.chdir(project / "src")
    for out in (".", "..", str(project)):
        with pytest.raises(WorkbenchError, match="refusing to --overwrite"):
            prepare_run_dir(out, "demo", overwrite=True)
    monkeypatch.setenv("HOME", str(project))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WorkbenchError, match="home directory"):
        prepare_run_dir(project, "demo", overwrite=True)
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    with pytest.raises(WorkbenchError, match="git checkout"):
        prepare_run_dir(repo, "demo", overwrite=True)
    assert (project / "src" / "work.py").read_text() == "precious = True\n" and (repo / ".git").is_dir()


def test_cli_train_refuses_an_existing_run(tmp_path):
    from tests.unit.reliability.test_reliability_inputs import run_main

    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("model: random:tiny-llama\ndata: [rows.jsonl]\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter").mkdir()
    for extra in ([], ["--resume", "--overwrite"]):
        code, out, err = run_main("train", str(cfg), "--out", str(run), *extra)
        assert code == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1
        assert "Traceback" not in out + err and (run / "adapter").is_dir()
