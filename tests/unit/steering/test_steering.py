"""Steerer on tiny random models: identity at alpha 0, exact edits, positions, padding, masks, autograd."""

from __future__ import annotations

import pytest
import torch

from steering import Steerer, SteeringSpec
from tests.helpers import batch_inputs, enable_checkpointing, load_tiny
from workbench import WorkbenchError, load_model, read_sites
from workbench._hooks import count_hooks
from workbench.generation import encode_left, render_prompts


def _vec(lm, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(lm.n_layers, lm.d_model, generator=g) * scale


def _resid(lm, layer, inputs, ctx=None):
    site = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        if ctx is None:
            with read_sites(lm, [site]) as cache:
                logits = lm.model(**inputs).logits
        else:
            with ctx, read_sites(lm, [site]) as cache:  # registered after the steerer: sees its edit
                logits = lm.model(**inputs).logits
    return cache[site], logits


def test_zero_alpha_matches_base_logits(tiny):
    before = count_hooks(tiny.model)  # transformers may keep hooks of its own on a shared model
    inputs = batch_inputs(tiny)
    v = _vec(tiny, scale=10.0)
    with torch.no_grad():
        base = tiny.model(**inputs).logits
        for positions in ("all", "prompt", "response"):
            with Steerer(tiny, v, layers="all", alpha=0.0, positions=positions):
                same = tiny.model(**inputs).logits
            assert torch.equal(same, base), positions
        with Steerer(tiny, v, layers="all", alpha=3.0):
            moved = tiny.model(**inputs).logits
    assert (moved - base).abs().max() > 1e-3  # the same hooks do change the output when alpha != 0
    assert count_hooks(tiny.model) == before


def test_add_shifts_resid_post_by_alpha_v_on_real_tokens_only(tiny):
    inputs = batch_inputs(tiny)  # left padded: row 1 is shorter
    layer, alpha = 1, 2.5
    v = _vec(tiny)
    base, _ = _resid(tiny, layer, inputs)
    steered, _ = _resid(tiny, layer, inputs, Steerer(tiny, v, layers=[layer], alpha=alpha))
    real = inputs["attention_mask"].bool()
    assert not real.all()  # the batch does have padding
    diff = steered - base
    assert torch.allclose(diff[real], (alpha * v[layer]).expand(int(real.sum()), -1), atol=1e-5)
    assert torch.equal(diff[~real], torch.zeros_like(diff[~real]))


def test_ablation_removes_the_component(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    layer = 1
    v = _vec(lm, seed=3)
    u = v[layer] / v[layer].norm()
    base, _ = _resid(lm, layer, inputs)
    real = inputs["attention_mask"].bool()
    assert (base[real] @ u).abs().max() > 1e-2  # there is a component to remove
    abl, _ = _resid(lm, layer, inputs, Steerer(lm, v, layers=[layer], mode="ablate"))
    proj = abl[real] @ u
    assert proj.abs().max() < 1e-5 * base.norm(dim=-1).max()
    # the rest of the activation is untouched: x - (x.u)u
    expect = base - (base @ u)[..., None] * u
    assert torch.allclose(abl[real], expect[real], atol=1e-5)
    # ablate then add: the component is set to alpha * |v|
    alpha = 3.0
    both, _ = _resid(lm, layer, inputs, Steerer(lm, v, layers=[layer], alpha=alpha, mode="ablate_add"))
    target = alpha * v[layer].norm()
    assert torch.allclose(both[real] @ u, target.expand(int(real.sum())), atol=1e-4)
    # normalize=True: alpha is a length in the residual stream
    unit, _ = _resid(lm, layer, inputs, Steerer(lm, v, [layer], alpha, mode="ablate_add", normalize=True))
    assert torch.allclose(unit[real] @ u, torch.full((int(real.sum()),), alpha), atol=1e-4)


def test_hooks_removed_after_exception(tiny_llama):
    lm = tiny_llama
    start = count_hooks(lm.model)
    n_layer0 = len(lm.sites.layers[0]._forward_hooks)
    foreign = lm.sites.layers[0].register_forward_hook(lambda m, a, o: None)
    try:
        before = count_hooks(lm.model)
        with pytest.raises(RuntimeError, match="boom"):
            with Steerer(lm, _vec(lm), layers="all", alpha=1.0):
                assert count_hooks(lm.model) > before
                raise RuntimeError("boom")
        assert count_hooks(lm.model) == before
        # an error raised inside a hook (3 coefficients for a batch of 2) also leaves nothing behind
        with pytest.raises(WorkbenchError, match="3 coefficients"):
            with Steerer(lm, _vec(lm), layers=[1], alpha=torch.tensor([1.0, 2.0, 3.0])), torch.no_grad():
                lm.model(**batch_inputs(lm))
        assert count_hooks(lm.model) == before
        assert len(lm.sites.layers[0]._forward_hooks) == n_layer0 + 1  # the foreign hook was not touched
    finally:
        foreign.remove()
    assert count_hooks(lm.model) == start


def test_wrong_width_layer_and_options_are_clear_errors(tiny_llama):
    lm = tiny_llama
    before = count_hooks(lm.model)
    n, d = lm.n_layers, lm.d_model
    with pytest.raises(WorkbenchError, match=f"width {d + 1}.*d_model is {d}"):
        Steerer(lm, torch.randn(d + 1), layers=[0])
    with pytest.raises(WorkbenchError, match=f"{n + 2} layers but the model has {n}"):
        Steerer(lm, torch.randn(n + 2, d), layers=[0])
    with pytest.raises(WorkbenchError, match=f"layer {n} is out of range"):
        Steerer(lm, torch.randn(d), layers=[n])
    with pytest.raises(WorkbenchError, match="layer -1 is out of range"):
        Steerer(lm, torch.randn(d), layers=-1)
    with pytest.raises(WorkbenchError, match="unknown steering mode 'scale'"):
        Steerer(lm, torch.randn(d), layers=[0], mode="scale")
    with pytest.raises(WorkbenchError, match="unknown positions 'answer'"):
        Steerer(lm, torch.randn(d), layers=[0], positions="answer")
    with pytest.raises(WorkbenchError, match="cannot steer site 'attn.hook_z'"):
        Steerer(lm, torch.randn(d), layers=[0], site="attn.hook_z")
    with pytest.raises(WorkbenchError, match="alpha must be"):
        Steerer(lm, torch.randn(d), layers=[0], alpha=torch.ones(2, 2))
    with pytest.raises(WorkbenchError, match="cannot ablate a zero vector"):
        Steerer(lm, torch.zeros(d), layers=[0], mode="ablate")
    with pytest.raises(WorkbenchError, match="PersonaVector or a tensor"):
        Steerer(lm, "evil.safetensors", layers=[0])
    assert count_hooks(lm.model) == before


def test_mixed_alpha_batch_rows_equal_single_runs(tiny_llama):
    lm = tiny_llama
    prompts = ["Tell me a story.", "Hi", "What is the best way to cook rice?"]
    alphas = [0.0, 6.0, -6.0]
    v = _vec(lm, seed=1)
    tok = lm.tokenizer
    kw = dict(max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)

    def run(ps, alpha):
        enc = encode_left(tok, render_prompts(tok, ps), lm.device)
        with torch.no_grad(), Steerer(lm, v, layers=[0, 2], alpha=alpha):
            out = lm.model.generate(**enc, **kw)
        return out[:, enc["input_ids"].shape[1] :].tolist()

    mixed = run(prompts, torch.tensor(alphas))
    single = [run([p], a)[0] for p, a in zip(prompts, alphas, strict=True)]
    assert mixed == single
    assert len({tuple(r) for r in run([prompts[0]] * 3, torch.tensor(alphas))}) == 3  # alpha matters


def _per_call_deltas(lm, layer, steerer, enc, **kw):
    """Steered minus unsteered resid_post at ``layer`` for every forward call inside generate."""
    site = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad(), read_sites(lm, [site]) as before, steerer, read_sites(lm, [site]) as after:
        lm.model.generate(**enc, **kw)
    return [b - a for a, b in zip(before.all(site), after.all(site), strict=True)]


def test_positions_prompt_vs_response_in_generate(tiny):
    lm = tiny
    tok = lm.tokenizer
    enc = encode_left(tok, render_prompts(tok, ["Hello there, how are you?", "Hi"]), lm.device)
    real = enc["attention_mask"].bool()
    layer, alpha = 1, 2.0
    v = _vec(lm, seed=2)
    kw = dict(max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
    expected = alpha * v[layer]
    for positions in ("all", "prompt", "response"):
        deltas = _per_call_deltas(lm, layer, Steerer(lm, v, [layer], alpha, positions=positions), enc, **kw)
        assert len(deltas) == 4 and deltas[0].shape[1] == real.shape[1] and deltas[1].shape[1] == 1
        prefill, steps = deltas[0], deltas[1:]
        if positions in ("all", "prompt"):
            assert torch.allclose(prefill[real], expected.expand(int(real.sum()), -1), atol=1e-5)
            assert torch.equal(prefill[~real], torch.zeros_like(prefill[~real]))  # padding never steered
        else:
            assert torch.equal(prefill, torch.zeros_like(prefill))
        for d in steps:
            if positions in ("all", "response"):
                assert torch.allclose(d, expected.expand_as(d), atol=1e-5)
            else:
                assert torch.equal(d, torch.zeros_like(d))


def test_position_mask_in_teacher_forced_batches(tiny_llama):
    lm = tiny_llama
    before = count_hooks(lm.model)
    inputs = batch_inputs(lm)
    real = inputs["attention_mask"].bool()
    mask = torch.zeros_like(real)
    mask[:, -4:] = True  # the last four tokens of each row are "the answer"
    layer, v = 2, _vec(lm, seed=4)
    base, _ = _resid(lm, layer, inputs)
    resp, _ = _resid(lm, layer, inputs, Steerer(lm, v, [layer], 1.5, positions="response", mask=mask))
    prompt, _ = _resid(lm, layer, inputs, Steerer(lm, v, [layer], 1.5, positions="prompt", mask=mask))
    moved_r = (resp - base).abs().amax(-1) > 0
    moved_p = (prompt - base).abs().amax(-1) > 0
    assert torch.equal(moved_r, mask & real)
    assert torch.equal(moved_p, ~mask & real)
    s = Steerer(lm, v, [layer], 1.5, positions="response")
    s.set_mask(mask[:, 1:])
    with pytest.raises(WorkbenchError, match="position mask has shape"), s, torch.no_grad():
        lm.model(**inputs)
    assert count_hooks(lm.model) == before


def test_several_specs_equal_nested_steerers(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    a, b = _vec(lm, seed=5), _vec(lm, seed=6)
    with torch.no_grad():
        with Steerer(lm, [SteeringSpec(a, [0], 2.0), SteeringSpec(b, [0, 2], -1.0, mode="ablate_add")]):
            listed = lm.model(**inputs).logits
        with Steerer(lm, a, [0], 2.0), Steerer(lm, b, [0, 2], -1.0, mode="ablate_add"):
            nested = lm.model(**inputs).logits
        with Steerer(lm, [(a, [0], 2.0), (b[1], 1)], alpha=0.5):
            tuples = lm.model(**inputs).logits
        with Steerer(lm, a, [0], 2.0), Steerer(lm, b[1], [1], 0.5):
            nested2 = lm.model(**inputs).logits
    assert torch.allclose(listed, nested, atol=1e-6)
    assert torch.allclose(tuples, nested2, atol=1e-6)


def test_steerer_can_be_reentered_but_not_twice_at_once(tiny_llama):
    lm = tiny_llama
    before = count_hooks(lm.model)
    s = Steerer(lm, _vec(lm), [1], 1.0)
    with s:
        with pytest.raises(WorkbenchError, match="already active"):
            s.__enter__()
    with s:
        assert count_hooks(lm.model) == before + 2  # one edit + the attention-mask pre-hook
    assert count_hooks(lm.model) == before


def test_gradient_flows_under_training_and_checkpointing():
    from peft import LoraConfig, get_peft_model

    lm = load_model("random:tiny-llama", device="cpu", seed=7)
    lm.model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    lm.model.train()
    inputs = batch_inputs(lm)
    v = _vec(lm, seed=8)
    assert not v.requires_grad

    def grads(steer: bool):
        lm.model.zero_grad(set_to_none=True)
        embeds = lm.model.get_input_embeddings()(inputs["input_ids"]).detach().requires_grad_(True)
        ctx = Steerer(lm, v, [0, 1], 2.0) if steer else torch.enable_grad()
        with ctx:
            out = lm.model(inputs_embeds=embeds, attention_mask=inputs["attention_mask"])
        out.logits.float().pow(2).mean().backward()
        lora = {n: p.grad.clone() for n, p in lm.model.named_parameters() if "lora_B" in n}
        return embeds.grad.clone(), lora, out.logits.detach()

    g_steer, lora_steer, logits_steer = grads(True)
    g_base, lora_base, logits_base = grads(False)
    assert g_steer.abs().sum() > 0 and all(g.abs().sum() > 0 for g in lora_steer.values())
    assert (logits_steer - logits_base).abs().max() > 1e-3  # steering was active in the training forward
    assert not torch.allclose(g_steer, g_base)
    assert not v.requires_grad and v.grad is None
    # gradient checkpointing recomputes the layers with the hooks still in place: same gradients
    enable_checkpointing(lm.model.base_model.model, use_reentrant=False)
    foreign = count_hooks(lm.model)  # peft / checkpointing may add hooks of their own
    g_ckpt, lora_ckpt, _ = grads(True)
    assert torch.allclose(g_ckpt, g_steer, atol=1e-6)
    for n in lora_steer:
        assert torch.allclose(lora_ckpt[n], lora_steer[n], atol=1e-6)
    assert count_hooks(lm.model) == foreign


def test_training_only_leaves_eval_forward_untouched():
    lm = load_model("random:tiny-llama", device="cpu", seed=9)
    inputs = batch_inputs(lm)
    v = _vec(lm, seed=10)
    with torch.no_grad():
        base = lm.model(**inputs).logits
        with Steerer(lm, v, [1], 3.0, training_only=True):
            evaluated = lm.model(**inputs).logits
            lm.model.train()
            trained = lm.model(**inputs).logits
            lm.model.eval()
    assert torch.equal(evaluated, base)
    assert (trained - base).abs().max() > 1e-3


def test_persona_vector_is_accepted_and_checked(tiny_llama, tmp_path):
    from probes import PersonaVector

    lm = tiny_llama
    inputs = batch_inputs(lm)
    raw = _vec(lm, seed=11)
    pv = PersonaVector(raw, trait="evil", fingerprint=lm.fingerprint)
    path = pv.save(tmp_path / "evil.safetensors")
    loaded = PersonaVector.load(path, fingerprint=lm.fingerprint)
    with torch.no_grad():
        with Steerer(lm, loaded, [1], 2.0):
            a = lm.model(**inputs).logits
        with Steerer(lm, raw, [1], 2.0):
            b = lm.model(**inputs).logits
        with Steerer(lm, pv.normalized(), [1], 2.0):
            c = lm.model(**inputs).logits
        with Steerer(lm, raw, [1], 2.0, normalize=True):
            d = lm.model(**inputs).logits
    assert torch.equal(a, b)
    assert torch.allclose(c, d, atol=1e-6)
    other = load_tiny("tiny-qwen2")
    with pytest.raises(WorkbenchError, match="made for another model"):
        Steerer(
            other,
            PersonaVector(torch.randn(other.n_layers, other.d_model), "evil", fingerprint=lm.fingerprint),
        )
