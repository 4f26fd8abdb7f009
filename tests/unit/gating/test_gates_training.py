"""Training gates: joint gradients with LoRA, the small trainer, the sparsity penalty and the loop plugin."""

from __future__ import annotations

import pytest
import torch

from gating import GateSet, train_gates
from gating.training import GATES_FILE, GatesConfig, GatesPlugin
from workbench import WorkbenchError, load_model
from workbench._hooks import count_hooks


def _rows(n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"Is {i} plus one equal to {i + 2}?"},
                    {"role": "assistant", "content": "Yes, you are right."},
                ]
            }
        )
    return rows


def _lora(lm, r: int = 4):
    from peft import LoraConfig, get_peft_model

    lm.model = get_peft_model(
        lm.model, LoraConfig(r=r, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"])
    )
    lm.model.eval()
    return lm


def test_gates_and_lora_both_receive_gradients():
    from gating._train import collate, lm_loss, tokenize_rows

    lm = _lora(load_model("random:tiny-llama", device="cpu"))
    gates = GateSet.create(lm, kind="input_dependent", sites=("attn", "mlp"))
    batch = collate(tokenize_rows(lm.tokenizer, _rows(4), 64), lm.tokenizer.pad_token_id, lm.device)
    lm.model.train()
    with gates.attached(lm):
        out = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    lm_loss(out.logits, batch["labels"]).backward()
    gate_grads = [p.grad for p in gates.parameters()]
    assert all(g is not None for g in gate_grads)
    assert sum(float(g.abs().sum()) for g in gate_grads) > 0
    lora_b = [p for n, p in lm.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in lora_b)
    base = [p for n, p in lm.model.named_parameters() if "lora_" not in n]
    assert all(p.grad is None for p in base)


def test_train_gates_jointly_with_lora_lowers_the_loss_and_moves_both():
    lm = _lora(load_model("random:tiny-llama", device="cpu"))
    lora_b0 = {n: p.detach().clone() for n, p in lm.model.named_parameters() if "lora_B" in n}
    gates = train_gates(lm, _rows(16), lr=0.05, model_lr=1e-2, epochs=4, batch_size=8, seed=0)
    losses = [h["loss"] for h in gates.history]
    assert len(losses) == 8
    assert losses[-1] < losses[0]
    assert any(float(p.detach().abs().max()) > 0 for p in gates.parameters())
    moved = [not torch.equal(p, lora_b0[n]) for n, p in lm.model.named_parameters() if "lora_B" in n]
    assert all(moved)
    assert count_hooks(lm.model) == 0
    assert not lm.model.training


def test_train_gates_alone_keeps_the_base_frozen_and_flags_restored():
    lm = load_model("random:tiny-gpt2", device="cpu")
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}
    gates = train_gates(lm, _rows(8), kind="per_head", lr=0.1, epochs=2, batch_size=4)
    for n, p in lm.model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.requires_grad == flags[n]
    assert gates.history[-1]["loss"] < gates.history[0]["loss"]
    assert float(gates.gate("attn", 0).bias.detach().abs().max()) > 0


def test_l1_penalty_is_mean_abs_deviation_and_pulls_gates_to_identity(tiny_llama):
    lm = tiny_llama
    gates = GateSet.create(lm, kind="input_dependent", sites=("attn",), layers=[0])
    with torch.no_grad():
        gates.gate("attn", 0).proj.bias.fill_(1.0)
    ids = torch.randint(3, 250, (2, 5))
    mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    with gates.attached(lm, track_inputs=True) as h:
        lm.model(input_ids=ids, attention_mask=mask)
        penalty = gates.sparsity(h, mask)
    expected = abs(2 * torch.sigmoid(torch.tensor(1.0)) - 1)
    torch.testing.assert_close(penalty, expected)
    penalty.backward()
    assert gates.gate("attn", 0).proj.bias.grad.min() > 0  # gradient descent lowers the bias towards 0


def test_plugin_trains_saves_and_reloads(tmp_path):
    from types import SimpleNamespace

    from gating._train import collate, lm_loss, tokenize_rows

    lm = load_model("random:tiny-qwen2", device="cpu")
    plugin = GatesPlugin(
        {"kind": "low_rank", "sites": ["attn", "mlp"], "layers": [0, 2], "lr": 0.05, "l1": 0.1, "rank": 2}
    )
    ctx = SimpleNamespace(lm=lm, run_dir=tmp_path, seed=0)
    plugin.setup(ctx)
    (group,) = plugin.parameters()
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.0 and len(group["params"]) == 12
    opt = torch.optim.AdamW(group["params"], lr=group["lr"])
    batch = collate(tokenize_rows(lm.tokenizer, _rows(4), 64), lm.tokenizer.pad_token_id, lm.device)
    with plugin.forward_context(ctx, batch):
        out = lm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        with plugin.reference_context(ctx):  # gates lifted for a reference pass, then back
            assert count_hooks(lm.model) == 0
        assert count_hooks(lm.model) > 0
    assert count_hooks(lm.model) == 0
    extra = plugin.extra_loss(ctx, batch, out)
    assert set(extra) == {"gates_l1"} and extra["gates_l1"].item() == 0.0  # identity gates: no deviation yet
    (lm_loss(out.logits, batch["labels"]) + extra["gates_l1"]).backward()
    opt.step()
    path = plugin.save(tmp_path)
    assert path == tmp_path / GATES_FILE
    again = GateSet.load(path, lm)
    assert again.kind == "low_rank" and again.layers == [0, 2] and again.rank == 2
    assert again.metadata["training"]["l1"] == 0.1
    for a, b in zip(plugin.gates.parameters(), again.parameters(), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("lora", [None, {"r": 4, "alpha": 8}])
def test_training_loop_with_the_gates_block(tmp_path, lora):
    import json

    from workbench.training import TrainConfig, train

    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(8)))
    cfg = TrainConfig.from_dict(
        {
            "model": "random:tiny-llama",
            "device": "cpu",
            "data": [{"path": str(data)}],
            "lora": lora,
            "gates": {"kind": "input_dependent", "sites": ["attn"], "lr": 0.05, "l1": 0.01},
            "optim": {
                "lr": 1e-2,
                "batch_size": 4,
                "grad_accum": 1,
                "warmup_steps": 0,
                "max_steps": 3,
                "max_length": 64,
            },
            "checkpoint_every": 0,
        }
    )
    run = train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3 and all("gates_l1" in r for r in rows)
    lm = load_model("random:tiny-llama", device="cpu")
    gates = GateSet.load(run / GATES_FILE, lm)
    assert gates.kind == "input_dependent" and gates.metadata["training"]["lr"] == 0.05
    assert float(gates.gate("attn", 0).proj.weight.detach().abs().max()) > 0  # the gates learned something
    assert (run / "adapter").exists() == (lora is not None)


def test_plugin_config_errors_are_clear():
    with pytest.raises(WorkbenchError, match="unknown key"):
        GatesConfig.from_dict({"kinds": "x"})
    with pytest.raises(WorkbenchError, match="unknown gate kind"):
        GatesConfig.from_dict({"kind": "huge"})
    with pytest.raises(WorkbenchError, match="gates.l1"):
        GatesConfig.from_dict({"l1": -1})
