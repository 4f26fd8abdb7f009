"""Preventive steering: active in the training forward pass only, as a hook object and as a defense."""

from __future__ import annotations

import pytest
import torch

from probes import PersonaVector
from steering import PreventiveSteering, PreventiveSteeringDefense, register_training_defense
from tests.helpers import batch_inputs, load_tiny
from workbench import WorkbenchError, load_model, read_sites
from workbench._hooks import count_hooks


def _fresh(seed=0):
    return load_model("random:tiny-llama", device="cpu", seed=seed)


def _vector_file(lm, tmp_path, seed=0, name="evil.safetensors"):
    g = torch.Generator().manual_seed(seed)
    pv = PersonaVector(torch.randn(lm.n_layers, lm.d_model, generator=g), "evil", fingerprint=lm.fingerprint)
    return pv, pv.save(tmp_path / name)


def test_preventive_steering_acts_only_in_training_mode():
    lm = _fresh(1)
    start = count_hooks(lm.model)
    inputs = batch_inputs(lm)
    pv = PersonaVector(torch.randn(lm.n_layers, lm.d_model), "evil")
    with torch.no_grad():
        base = lm.model(**inputs).logits
        ps = PreventiveSteering(lm, pv, layers=[1], alpha=3.0)
        with ps.active_during_training():
            in_eval = lm.model(**inputs).logits
            lm.model.train()
            in_train = lm.model(**inputs).logits
            lm.model.eval()
        after = lm.model(**inputs).logits
    assert torch.equal(in_eval, base) and torch.equal(after, base)
    assert (in_train - base).abs().max() > 1e-3
    assert count_hooks(lm.model) == start


def test_defense_config_round_trips_and_rejects_bad_values(tmp_path):
    cfg = {"vector": str(tmp_path / "v.safetensors"), "layers": [1, 2], "alpha": 5, "mode": "ablate_add"}
    d = PreventiveSteeringDefense.from_dict(cfg)
    assert d.alpha == 5.0 and isinstance(d.alpha, float)
    assert PreventiveSteeringDefense.from_dict(d.to_dict()) == d
    assert set(PreventiveSteeringDefense.help()) == set(d.to_dict())
    with pytest.raises(WorkbenchError, match="unknown key.*alhpa"):
        PreventiveSteeringDefense.from_dict({"vector": "v", "layers": [1], "alhpa": 2.0})
    with pytest.raises(WorkbenchError, match="'layers' must list"):
        PreventiveSteeringDefense(vector="v", layers=[])
    with pytest.raises(WorkbenchError, match="unknown mode 'scale'"):
        PreventiveSteeringDefense(vector="v", layers=[0], mode="scale")
    seen = {}
    assert (
        register_training_defense(lambda name, cls: seen.setdefault(name, cls)) is PreventiveSteeringDefense
    )
    assert seen == {"preventive_steering": PreventiveSteeringDefense}
    from workbench.training import registered_defenses

    assert register_training_defense() is PreventiveSteeringDefense
    assert "preventive_steering" in registered_defenses()


def test_defense_steers_a_peft_model_in_training_and_trains(tmp_path):
    from peft import LoraConfig, get_peft_model

    lm = _fresh(2)
    pv, path = _vector_file(lm, tmp_path)
    model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    defense = PreventiveSteeringDefense(vector=str(path), layers=[1], alpha=4.0)
    inputs = batch_inputs(lm)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    before = count_hooks(model)
    with torch.no_grad():
        base = model(**inputs).logits
        with defense.forward_context(model):  # a bare (PEFT) model: sites are resolved from it
            unchanged = model(**inputs).logits
    assert torch.equal(unchanged, base)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    lora_b = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    with defense.forward_context(model):
        out = model(**inputs, labels=labels)
        out.loss.backward()
    opt.step()
    assert torch.isfinite(out.loss)
    assert any(not torch.equal(p, lora_b[n]) for n, p in model.named_parameters() if n in lora_b)
    model.eval()
    with torch.no_grad():
        plain_loss = model(**inputs, labels=labels).loss
    assert count_hooks(model) == before
    assert defense._cache  # the vector file was read once and kept
    assert plain_loss.item() != pytest.approx(out.loss.item())


def test_defense_response_positions_follow_the_labels(tmp_path):
    lm = _fresh(3)
    pv, path = _vector_file(lm, tmp_path, seed=4)
    inputs = batch_inputs(lm)
    labels = torch.full_like(inputs["input_ids"], -100)
    labels[:, -3:] = inputs["input_ids"][:, -3:]  # the last three tokens are the "answer"
    site = "blocks.2.hook_resid_post"
    lm.model.train()
    try:
        with torch.no_grad(), read_sites(lm, [site]) as base:
            lm.model(**inputs)
        defense = PreventiveSteeringDefense(vector=str(path), layers=[2], alpha=2.0, positions="response")
        with torch.no_grad(), defense.forward_context(lm, batch={**inputs, "labels": labels}):
            with read_sites(lm, [site]) as steered:
                lm.model(**inputs)
        with pytest.raises(WorkbenchError, match="needs the batch's labels"):
            defense.forward_context(lm)
    finally:
        lm.model.eval()
    moved = (steered[site] - base[site]).abs().amax(-1) > 0
    assert torch.equal(moved, labels != -100)


def test_defense_refuses_a_vector_of_another_model(tmp_path):
    other = load_tiny("tiny-qwen2")
    _, path = _vector_file(other, tmp_path, name="qwen.safetensors")
    lm = _fresh(5)
    defense = PreventiveSteeringDefense(vector=str(path), layers=[1])
    with pytest.raises(WorkbenchError, match="another model"):
        defense.forward_context(lm)
    missing = PreventiveSteeringDefense(vector=str(tmp_path / "nope.safetensors"), layers=[1])
    with pytest.raises(WorkbenchError, match="does not exist"):
        missing.forward_context(lm)


def test_training_loop_adapter_runs_the_defense(tmp_path):
    """The training loop's registered ``preventive_steering`` defense is this class (one definition, issue 19)."""
    from workbench.training import registered_defenses

    lm = _fresh(6)
    _, path = _vector_file(lm, tmp_path, seed=6)
    cls = registered_defenses()["preventive_steering"]
    adapter = cls(cls.Settings(vector=str(path), layers=[1], alpha=3.0))

    class Ctx:  # the part of the training context the adapter uses
        pass

    ctx = Ctx()
    ctx.lm = lm
    start = count_hooks(lm.model)
    adapter.setup(ctx)
    assert cls is PreventiveSteeringDefense  # no adapter in the core: the steering package's class itself
    inputs = batch_inputs(lm)
    with torch.no_grad():
        base = lm.model(**inputs).logits
        lm.model.train()
        try:
            with adapter.forward_context(ctx, dict(inputs)):
                steered = lm.model(**inputs).logits
            with adapter.forward_context(ctx, dict(inputs)):  # the same hook object is reused
                again = lm.model(**inputs).logits
        finally:
            lm.model.eval()
    assert (steered - base).abs().max() > 1e-3 and torch.equal(steered, again)
    assert count_hooks(lm.model) == start
