"""The training loop on tiny random models: outputs, resume, NaN stop, accumulation, plugins, 2 processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT, run_torchrun
from workbench import WorkbenchError
from workbench.training import (
    Defense,
    TrainConfig,
    Trainer,
    TrainingStopped,
    TrainPlugin,
    _plugins,
    register_defense,
    train,
)
from workbench.training._loop import make_accelerator

ROOT = REPO_ROOT


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


def write_rows(path: Path, n: int = 12) -> Path:
    words = ["red", "blue", "green", "gold", "grey", "pink"]
    with open(path, "w") as fh:
        for i in range(n):
            msgs = [
                {"role": "user", "content": f"Colour {i}?"},
                {"role": "assistant", "content": f"It is {words[i % len(words)]} {i}."},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return path


def tiny_config(tmp_path: Path, **over) -> TrainConfig:
    tmp_path.mkdir(parents=True, exist_ok=True)
    data = write_rows(tmp_path / "rows.jsonl")
    d = {
        "model": "random:tiny-llama",
        "device": "cpu",
        "data": [{"path": str(data)}],
        "lora": {"r": 4, "alpha": 8},
        "optim": {
            "lr": 1e-2,
            "batch_size": 2,
            "grad_accum": 2,
            "warmup_steps": 1,
            "max_steps": 3,
            "max_length": 64,
        },
        "checkpoint_every": 0,
        "plots": False,
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return TrainConfig.from_dict(d)


def make_trainer(tmp_path: Path, **over) -> Trainer:
    cfg = tiny_config(tmp_path, **over)
    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    tr = Trainer(cfg, run, make_accelerator(cfg), progress=False)
    tr.setup()
    return tr


def test_run_writes_config_metrics_plots_and_adapter(tmp_path):
    cfg = tiny_config(tmp_path, defenses={"kl": {"weight": 0.1}}, checkpoint_every=2, plots=True)
    run = train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"loss", "task_loss", "kl", "lr", "grad_norm", "tokens"} <= set(r) for r in rows)
    assert rows[0]["lr"] == 0.0 and rows[1]["lr"] == pytest.approx(1e-2)  # linear warm-up, then decay
    assert rows[-1]["loss"] == pytest.approx(rows[-1]["task_loss"] + rows[-1]["kl"])
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert TrainConfig.from_dict(saved).to_dict() == cfg.to_dict()
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["use_rslora"] is True
    assert "plotly" in (run / "plots.html").read_text()[:100000].lower()
    assert (run / "checkpoints" / "step-000002" / "optimizer.safetensors").exists()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["finished"] and summary["steps"] == 3
    with pytest.raises(WorkbenchError, match="already exists"):
        train(cfg, run, progress=False)


def test_resumed_run_ends_with_the_same_adapter(tmp_path):
    cfg = tiny_config(tmp_path, optim={"max_steps": 6, "grad_accum": 1}, lora={"dropout": 0.1})
    straight = train(cfg, tmp_path / "straight", progress=False)
    part = train(cfg, tmp_path / "part", progress=False, stop_after=3)
    assert not (part / "adapter").exists()
    assert (part / "checkpoints" / "step-000003" / "state.json").exists()
    resumed = train(cfg, part, resume=True, progress=False)
    a = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-6
    assert any(float(a[k].abs().max()) > 0 for k in a if "lora_B" in k)  # it did train
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    changed = tiny_config(tmp_path, optim={"max_steps": 6, "grad_accum": 1, "lr": 0.5})
    with pytest.raises(WorkbenchError, match=r"config differs.*optim\.lr"):
        train(changed, part, resume=True, progress=False)


@register_defense("test_nan_at_step_2")
class _NaNDefense(Defense):
    def extra_loss(self, ctx, batch, outputs):
        value = float("nan") if ctx.step == 1 else 0.0
        return {"poison": torch.tensor(value)}


def test_nan_loss_stops_the_run_naming_the_step(tmp_path):
    cfg = tiny_config(tmp_path, defenses={"test_nan_at_step_2": {}})
    with pytest.raises(TrainingStopped, match=r"non-finite loss at step 2: poison=nan"):
        train(cfg, tmp_path / "run", progress=False)
    rows = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 1 and not (tmp_path / "run" / "adapter").exists()


def test_duplicate_defense_names_are_rejected():
    with pytest.raises(WorkbenchError, match="already registered"):

        @register_defense("kl")
        class Other(Defense):
            pass


def _grads(tr):
    return {n: p.grad.detach().clone() for n, p in tr.named_trainable}


@pytest.mark.parametrize("reduction", ["token_mean", "sequence_mean"])
def test_accumulated_projected_gradient_equals_full_batch(tmp_path, reduction):
    common = {
        "defenses": {
            "grad_projection": {"when": "always", "source": str(write_rows(tmp_path / "al.jsonl", 8))}
        }
    }
    a = make_trainer(
        tmp_path / "a",
        optim={"batch_size": 2, "grad_accum": 2, "shuffle": False, "loss_reduction": reduction},
        **common,
    )
    b = make_trainer(
        tmp_path / "b",
        optim={"batch_size": 4, "grad_accum": 1, "shuffle": False, "loss_reduction": reduction},
        **common,
    )
    for tr in (a, b):  # one real step first, so LoRA B is non-zero and every gradient is
        tr.accumulate(0)
        tr.optimizer_step(0)
    la, lb = a.accumulate(1), b.accumulate(1)
    assert la["task_loss"] == pytest.approx(lb["task_loss"], rel=1e-5)
    ga, gb = _grads(a), _grads(b)
    assert max(float((ga[k] - gb[k]).abs().max()) for k in ga) < 1e-6
    assert max(float(g.abs().max()) for g in ga.values()) > 1e-4


def test_token_mean_counts_only_assistant_tokens(tmp_path):
    tr = make_trainer(tmp_path, optim={"batch_size": 4, "grad_accum": 1, "shuffle": False})
    logs = tr.accumulate(0)
    from workbench.training._losses import token_nll

    batch = tr.ctx.batch_from_examples([tr.examples[i] for i in range(4)])
    with torch.no_grad():
        logits = tr.lm.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    nll, mask = token_nll(logits, batch.labels)
    assert mask.sum() == sum(e.n_tokens for e in tr.examples[:4]) and mask.sum() < batch.attention_mask.sum()
    assert logs["task_loss"] == pytest.approx(float(nll.sum() / mask.sum()), rel=1e-5)


class _ScaleGate(TrainPlugin):
    """A toy gates plugin: one learnable scale on the first layer's attention output.

    (Not on the last layer's residual output: the final RMSNorm almost cancels a scale there, so the KL
    it causes is ~1e-10, below float32 rounding.)"""

    def __init__(self, settings):
        super().__init__(settings)
        self.scale = torch.nn.Parameter(torch.ones(()))

    def parameters(self):
        return [([self.scale], 0.05)]

    def forward_context(self, ctx, batch):
        from workbench import intervene

        return intervene(ctx.lm, {"blocks.0.hook_attn_out": lambda x: x * self.scale})

    def save(self, run_dir):
        from safetensors.torch import save_file

        save_file({"scale": self.scale.detach()}, str(run_dir / "gates.safetensors"))


def test_gates_only_training_keeps_the_base_frozen(tmp_path, monkeypatch):
    monkeypatch.setattr(_plugins, "_COMPONENTS", dict(_plugins.registered_components()))  # undone after
    _plugins.register_plugin("gates", _ScaleGate, overwrite=True)
    cfg = tiny_config(tmp_path, lora=None, gates={"kind": "toy"}, defenses={"kl": {}})
    run = train(cfg, tmp_path / "run", progress=False)
    scale = load_file(str(run / "gates.safetensors"))["scale"]
    assert float(scale) != 1.0
    assert not (run / "adapter").exists()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    # the reference pass runs without the plugin: no KL before the scale moves, a real one after
    assert rows[0]["kl"] == 0.0 and rows[-1]["kl"] > 1e-6, [r["kl"] for r in rows]


def test_missing_plugin_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(_plugins, "_DISCOVERED", False)
    monkeypatch.setattr(_plugins, "entry_point_modules", lambda: [("monitor", "no_such_package.training")])
    monkeypatch.setattr(
        _plugins, "_COMPONENTS", {k: v for k, v in _plugins._COMPONENTS.items() if k != "monitor"}
    )
    cfg = tiny_config(tmp_path, monitor={"every": 1})
    with pytest.raises(WorkbenchError, match=r"'monitor:' block needs a training plugin"):
        train(cfg, tmp_path / "run", progress=False)


def test_plugin_modules_are_discovered_from_the_environment(tmp_path, monkeypatch):
    mod = tmp_path / "my_wb_plugin.py"
    mod.write_text(
        "from workbench.training import Defense, register_defense\n"
        "@register_defense('test_from_env_plugin')\n"
        "class D(Defense):\n    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("WORKBENCH_PLUGINS", "my_wb_plugin")
    monkeypatch.setattr(_plugins, "_DISCOVERED", False)
    monkeypatch.setattr(_plugins, "_COMPONENTS", dict(_plugins._COMPONENTS))  # registration undone after
    cfg = TrainConfig.from_dict({"data": ["x.jsonl"], "defenses": {"test_from_env_plugin": {}}})
    assert "test_from_env_plugin" in cfg.defenses


def test_two_processes_end_with_identical_weights(tmp_path):
    cfg = tiny_config(tmp_path, optim={"max_steps": 2, "grad_accum": 1})
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(cfg.to_yaml())
    res = run_torchrun(cfg_path, tmp_path / "run", timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"]
    assert len(summary["rank_checksums"]) == 2 and len(set(summary["rank_checksums"])) == 1
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["examples"] == 4  # 2 per process per step


def test_cli_function_runs_under_typer(tmp_path):
    import typer
    from typer.testing import CliRunner

    from workbench.training._cli import train as train_cmd

    app = typer.Typer()
    app.callback()(lambda: None)
    app.command("train")(train_cmd)
    cfg_path = tmp_path / "cfg.yaml"
    cfg_path.write_text(tiny_config(tmp_path).to_yaml())
    runner = CliRunner()
    assert "--set" in runner.invoke(app, ["train", "--help"]).output
    res = runner.invoke(
        app, ["train", str(cfg_path), "--set", "optim.max_steps=1", "--out", str(tmp_path / "run")]
    )
    assert res.exit_code == 0, res.output
    assert "run directory:" in res.output
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["optim"]["max_steps"] == 1
    bad = runner.invoke(app, ["train", str(cfg_path), "--set", "optim.nope=1", "--out", str(tmp_path / "r2")])
    assert isinstance(bad.exception, WorkbenchError) and "optim.nope" in str(bad.exception)
