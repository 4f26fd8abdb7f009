"""Experiment tracking (``report_to:``): each tracker's own reader gives back the loss curve of metrics.jsonl,
every step exactly once across an interrupted and resumed run, offline, with no secret written anywhere."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import socket
import struct
import sys
from pathlib import Path

import pytest

from tests.helpers import run_torchrun
from workbench import MissingPackageError, WorkbenchError
from workbench.runs import read_jsonl
from workbench.tracking import TRACKERS, Tracker, register_tracker
from workbench.training import TrainConfig, Trainer, train

pytestmark = pytest.mark.usefixtures("one_thread")

FAKE_WANDB_KEY = "f00dfeed" * 5  # 40 characters, the shape of a W&B API key


def tiny_config(tmp_path: Path, **over) -> TrainConfig:
    """A 6-step LoRA run on the tiny random Llama, with a held-out set (eval_loss every 2 steps)."""
    rows = tmp_path / "rows.jsonl"
    words = ["red", "blue", "green", "gold", "grey", "pink"]
    with open(rows, "w") as fh:
        for i in range(12):
            msgs = [
                {"role": "user", "content": f"Colour {i}?"},
                {"role": "assistant", "content": f"It is {words[i % len(words)]} {i}."},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    d = {
        "model": "random:tiny-llama",
        "device": "cpu",
        "data": [{"path": str(rows), "n": 10}],
        "eval_data": [{"path": str(rows), "n": 2}],
        "eval_every": 2,
        "lora": {"r": 4, "alpha": 8},
        "optim": {"lr": 1e-2, "batch_size": 2, "grad_accum": 1, "warmup_steps": 1, "max_steps": 6},
        "checkpoint_every": 0,
        "plots": False,
        **over,
    }
    d["optim"]["max_length"] = 64
    return TrainConfig.from_dict(d)


@pytest.fixture(autouse=True)
def tracker_env(tmp_path, monkeypatch):
    """A private HOME and no tracker settings from the machine: every tracker uses its default."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "1")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in (
        "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "WANDB_MODE", "WANDB_DIR", "WANDB_PROJECT",
        "WANDB_API_KEY", "TRACKIO_DIR", "TRACKIO_PROJECT", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL",
    ):  # fmt: skip
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_network(monkeypatch):
    """Refuse (and record) every connection outside this machine; W&B's own service talks over a local
    socket, which stays allowed."""
    attempts: list[object] = []
    real = socket.socket.connect

    def connect(self, address):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            host = str(address[0])
            try:
                local = host == "localhost" or ipaddress.ip_address(host).is_loopback
            except ValueError:
                local = False
            if not local:
                attempts.append(address)
                raise OSError(f"network refused by the test: {address}")
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"a tracker reached for the network: {attempts}"


def metrics(run: Path) -> list[dict]:
    return read_jsonl(run / "metrics.jsonl")


def curve(rows: list[dict], key: str) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]


def tensorboard_curves(run: Path) -> tuple[dict[str, list[tuple[int, float]]], object]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}, acc


def mlflow_curves(run: Path) -> tuple[dict[str, list[tuple[int, float]]], object]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    run_id = json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]
    found = client.get_run(run_id)
    return {
        key: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]
        for key in found.data.metrics
    }, found


def assert_same_curves(
    got: dict, rows: list[dict], rel: float, *, recomputed: set[int] = frozenset()
) -> None:
    """``got`` holds every numeric key of ``rows``, each step once, with the same values; at the steps a
    resume computed again (the trackers keep the values first sent) the wall time ``seconds`` differs."""
    keys = {k for r in rows for k, v in r.items() if k != "step" and isinstance(v, int | float)}
    assert {"loss", "task_loss", "lr", "grad_norm", "eval_loss", "seconds"} <= keys
    assert set(got) == keys
    for key in keys:
        have, want = got[key], curve(rows, key)
        assert [s for s, _ in have] == [s for s, _ in want], key  # each step once, in order
        if key == "seconds":
            have, want = ([(s, v) for s, v in c if s not in recomputed] for c in (have, want))
        assert [v for _, v in have] == pytest.approx([v for _, v in want], rel=rel, abs=1e-12), key


def test_tensorboard_and_mlflow_read_back_the_metrics_jsonl_curve(tmp_path, no_network):
    cfg = tiny_config(tmp_path, report_to=["tensorboard", "mlflow"])
    run = train(cfg, tmp_path / "run", progress=False)
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert [s for s, _ in curve(rows, "eval_loss")] == [2, 4, 6]

    tb, acc = tensorboard_curves(run)
    assert_same_curves(tb, rows, rel=1e-6)  # TensorBoard stores float32
    (text,) = acc.Tensors("config/text_summary")
    assert "model: random:tiny-llama" in text.tensor_proto.string_val[0].decode()

    ml, found = mlflow_curves(run)
    assert_same_curves(ml, rows, rel=0)  # MLflow stores doubles: the same numbers
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert found.data.params["optim.lr"] == "0.01"
    assert found.data.params["report_to"] == '["tensorboard", "mlflow"]'
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    assert client.get_experiment(found.info.experiment_id).name == "workbench"
    state = json.loads((run / "tracking.json").read_text())
    assert state["tensorboard"]["last_step"] == state["mlflow"]["last_step"] == 6


def test_interrupted_and_resumed_run_sends_every_step_once(tmp_path, monkeypatch, no_network):
    """Interrupted after step 3 with the last checkpoint at step 2, and with tracking.json behind what the
    trackers hold (a kill between a write and its record): after --resume every step is in TensorBoard and
    in MLflow exactly once, with the values of metrics.jsonl."""
    cfg = tiny_config(tmp_path, report_to=["tensorboard", "mlflow"], checkpoint_every=2)
    real = Trainer.accumulate

    def interrupted(self, step):
        if step == 3:  # the 4th step: the user presses Ctrl-C
            raise KeyboardInterrupt
        return real(self, step)

    monkeypatch.setattr(Trainer, "accumulate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    assert [r["step"] for r in metrics(run)] == [1, 2, 3]
    state = json.loads((run / "tracking.json").read_text())
    assert state["tensorboard"]["last_step"] == state["mlflow"]["last_step"] == 3
    ml, found = mlflow_curves(run)
    assert found.info.status == "FAILED" and [s for s, _ in ml["loss"]] == [1, 2, 3]
    for name in ("tensorboard", "mlflow"):
        state[name]["last_step"] = 1  # steps 2 and 3 reached the trackers but not tracking.json
    (run / "tracking.json").write_text(json.dumps(state))

    monkeypatch.setattr(Trainer, "accumulate", real)
    train(cfg, run, resume=True, progress=False)
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2
    tb, _ = tensorboard_curves(run)  # the second event file purges the first from step 2 on
    assert_same_curves(tb, rows, rel=1e-6)
    ml, found = mlflow_curves(run)  # the same MLflow run, continued; its store said it had step 3
    assert_same_curves(ml, rows, rel=1e-6, recomputed={3})
    assert found.info.run_id == state["mlflow"]["run_id"] and found.info.status == "FINISHED"


def test_under_torchrun_only_the_main_process_reports(tmp_path):
    cfg = tiny_config(
        tmp_path, report_to=["tensorboard"], optim={"max_steps": 2, "batch_size": 2, "grad_accum": 1}
    )
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(cfg.to_yaml())
    res = run_torchrun(cfg_path, tmp_path / "run", timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    run = tmp_path / "run"
    assert json.loads((run / "train_summary.json").read_text())["world_size"] == 2
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one writer
    tb, _ = tensorboard_curves(run)
    assert_same_curves(tb, metrics(run), rel=1e-6)


def wandb_history(run: Path) -> list[dict]:
    """The history rows of every offline W&B run folder, read from W&B's own transaction log (``.wandb``:
    LevelDB-log framing of ``wandb_internal_pb2.Record`` protobufs)."""
    from wandb.proto import wandb_internal_pb2

    out = []
    for path in sorted((run / "wandb").glob("offline-run-*/run-*.wandb")):
        data = path.read_bytes()
        ident, magic, _version = struct.unpack("<4sHB", data[:7])
        assert (ident, magic) == (b":W&B", 0xBEE1)
        pos, block, pending = 7, 32768, b""
        while pos + 7 <= len(data):
            left = block - pos % block
            if left < 7:  # a block's tail too short for a header is padding
                pos += left
                continue
            _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
            if kind == 0:
                pos += left
                continue
            chunk, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
            if kind in (1, 2):  # FULL, FIRST
                pending = chunk
            else:  # MIDDLE, LAST
                pending += chunk
            if kind in (1, 4):
                record = wandb_internal_pb2.Record()
                record.ParseFromString(pending)
                if record.WhichOneof("record_type") == "history":
                    item = {
                        i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item
                    }
                    out.append({**item, "step": record.history.step.num})
    return out


def test_wandb_offline_and_trackio_keep_the_curve_locally_and_no_secret(
    tmp_path, monkeypatch, no_network, caplog
):
    import huggingface_hub

    monkeypatch.setenv("WANDB_API_KEY", FAKE_WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", "hf_" + "x" * 34)  # trackio would ask the Hub who this is
    whoami: list[object] = []
    monkeypatch.setattr(huggingface_hub, "whoami", lambda *a, **k: whoami.append(a) or {"name": "someone"})
    trackio_before = sys.modules.get("trackio")
    cfg = tiny_config(tmp_path, report_to=["wandb", "trackio"])
    run = train(cfg, tmp_path / "run", progress=False, stop_after=3)
    with caplog.at_level(logging.WARNING, logger="workbench.tracking"):
        train(cfg, run, resume=True, progress=False)
    assert not [r for r in caplog.records if "is off" in r.getMessage()]
    rows = metrics(run)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    state = json.loads((run / "tracking.json").read_text())

    # W&B: offline, one folder per call of the same run id, every step once across them
    folders = sorted((run / "wandb").glob("offline-run-*"))
    assert len(folders) == 2 and all(state["wandb"]["id"] in f.name for f in folders)
    history = sorted(wandb_history(run), key=lambda r: r["step"])
    assert [r["step"] for r in history] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "eval_loss"):
        assert curve(history, key) == curve(rows, key), key  # JSON doubles: the same numbers

    # trackio: its local SQLite store, read with its own reader, in <run>/trackio (unless trackio was
    # imported earlier in this process, when it keeps the directory it read then: tracking.json says which)
    import trackio
    from trackio.sqlite_storage import SQLiteStorage

    expected = Path(trackio_before.utils.TRACKIO_DIR) if trackio_before else run / "trackio"
    assert Path(state["trackio"]["dir"]) == expected.resolve()
    assert Path(trackio.utils.TRACKIO_DIR).resolve() == expected.resolve()
    logs = SQLiteStorage.get_logs("workbench", "run", run_id=state["trackio"]["run_id"])
    assert [r["step"] for r in logs] == [1, 2, 3, 4, 5, 6]
    for key in ("loss", "lr", "grad_norm", "eval_loss"):
        assert curve(logs, key) == curve(rows, key), key
    (trackio_run,) = [r for r in trackio.Api().runs("workbench") if r.id == state["trackio"]["run_id"]]
    assert trackio_run.config["optim"]["lr"] == 0.01
    assert whoami == []  # no request to the Hub for trackio's user name

    # the API key is nowhere: not in the run directory, not in HOME (W&B's logs), not even in base64
    secret = FAKE_WANDB_KEY.encode()
    needles = [
        secret,
        base64.b64encode(secret),
        base64.b64encode(secret)[:32],
        base64.urlsafe_b64encode(secret),
    ]
    for folder in (run, tmp_path / "home"):
        for path in folder.rglob("*"):
            if path.is_file() and not path.is_symlink():
                data = path.read_bytes()
                assert not any(n in data for n in needles), path


@register_tracker("test_flaky")
class _FlakyTracker(Tracker):
    """A tracker whose store fails once at step 2 (then recovers): records what it was sent."""

    sent: list[int] = []
    fail_at: set[int] = set()

    def start(self, run_dir, config, resume):
        return {}

    def log(self, row, step):
        if step in self.fail_at:
            self.fail_at.discard(step)
            raise ConnectionError("the tracking server went away")
        type(self).sent.append(step)


def test_a_failing_tracker_is_switched_off_and_gets_what_it_missed_on_resume(tmp_path, monkeypatch, caplog):
    (tmp_path / "a_file").write_text("not a folder")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}")  # unusable
    _FlakyTracker.sent, _FlakyTracker.fail_at = [], {2}
    cfg = tiny_config(tmp_path, report_to=["test_flaky", "mlflow", "tensorboard"])
    with caplog.at_level(logging.WARNING, logger="workbench.tracking"):
        run = train(cfg, tmp_path / "run", progress=False)
    warnings = [r.getMessage() for r in caplog.records if r.name == "workbench.tracking"]
    assert len([w for w in warnings if w.startswith("report_to: test_flaky failed at step 2")]) == 1
    assert len([w for w in warnings if w.startswith("report_to: mlflow could not start")]) == 1
    assert all("\n" not in w for w in warnings)
    assert [r["step"] for r in metrics(run)] == [1, 2, 3, 4, 5, 6]  # training went on
    tb, _ = tensorboard_curves(run)
    assert [s for s, _ in tb["loss"]] == [1, 2, 3, 4, 5, 6]  # the other trackers too
    state = json.loads((run / "tracking.json").read_text())
    assert _FlakyTracker.sent == [1] and state["test_flaky"]["last_step"] == 1
    assert "mlflow" not in state

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="workbench.tracking"):
        train(cfg, run, resume=True, progress=False)  # the run is finished: only the trackers catch up
    assert not [r for r in caplog.records if r.name == "workbench.tracking"]
    assert _FlakyTracker.sent == [1, 2, 3, 4, 5, 6]
    ml, _ = mlflow_curves(run)
    assert_same_curves(ml, metrics(run), rel=0)
    tb, _ = tensorboard_curves(run)
    assert [s for s, _ in tb["loss"]] == [1, 2, 3, 4, 5, 6]


def test_unknown_or_missing_trackers_are_one_line_errors_before_anything_runs(tmp_path, monkeypatch):
    with pytest.raises(WorkbenchError) as err:
        tiny_config(tmp_path, report_to=["tensorboard", "tensorbord"])
    assert str(err.value) == (
        "config: 'report_to' item 1: unknown tracker 'tensorbord' (known: "
        + ", ".join(sorted(TRACKERS))
        + ")"
    )
    assert tiny_config(tmp_path, report_to="tensorboard").report_to == ["tensorboard"]  # a bare name
    assert tiny_config(tmp_path, report_to="none").report_to == []

    monkeypatch.setitem(sys.modules, "mlflow", None)  # the package is not installed
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(tiny_config(tmp_path).to_yaml().replace("report_to: []", "report_to: [mlflow]"))
    with pytest.raises(MissingPackageError) as err:
        train(cfg_file, tmp_path / "run", progress=False)
    message = str(err.value)
    assert "\n" not in message and "'report_to: mlflow'" in message and str(cfg_file) in message
    assert "pip install 'em-workbench[mlflow]'" in message
    assert not (tmp_path / "run").exists()
    with pytest.raises(MissingPackageError, match=r"em-workbench\[mlflow\]"):
        tiny_config(tmp_path).apply_overrides(["report_to=[tensorboard, mlflow]"])


def test_tracker_names_are_registered_once():
    assert {"tensorboard", "mlflow", "wandb", "trackio"} <= set(TRACKERS)
    with pytest.raises(WorkbenchError, match="already registered"):
        register_tracker("mlflow", _FlakyTracker)
