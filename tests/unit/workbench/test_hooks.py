"""Scoped hooks: nothing is left behind after an exception; foreign hooks are untouched; PEFT still works."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import batch_inputs, enable_checkpointing
from workbench import intervene, read_sites
from workbench._hooks import count_hooks


class Boom(RuntimeError):
    pass


def test_hooks_removed_after_exception(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    seen = []
    layer = lm.sites.layers[1]
    user_handle = layer.register_forward_hook(lambda m, a, o: seen.append(1))
    user_pre = lm.sites.module(0, "self_attn.o_proj").register_forward_pre_hook(lambda m, a: seen.append(2))
    before = count_hooks(lm.model)
    try:
        with pytest.raises(Boom):
            with read_sites(lm, lm.sites.names()):
                assert count_hooks(lm.model) == before + len(lm.sites.names())
                raise Boom()
        assert count_hooks(lm.model) == before
        with pytest.raises(Boom):
            with intervene(lm, {s: (lambda x: x * 1.0) for s in lm.sites.names()}):
                lm.model(**inputs)
                raise Boom()
        assert count_hooks(lm.model) == before
        with pytest.raises(Boom):  # an exception raised by the edit function inside the forward pass
            with intervene(lm, {"blocks.1.hook_mlp_out": lambda x: (_ for _ in ()).throw(Boom())}):
                lm.model(**inputs)
        assert count_hooks(lm.model) == before
        seen.clear()
        with torch.no_grad():
            lm.model(**inputs)
        assert seen == [2, 1], "the user's own hooks must survive and still fire"
    finally:
        user_handle.remove()
        user_pre.remove()


def test_bad_site_in_middle_leaves_no_hooks(tiny_llama):
    lm = tiny_llama
    before = count_hooks(lm.model)
    with pytest.raises(Exception, match="out of range"):
        with read_sites(
            lm, ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out", "blocks.99.hook_resid_post"]
        ):
            pass
    assert count_hooks(lm.model) == before


def test_interventions_are_differentiable_and_out_of_place(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    delta = torch.zeros(lm.d_model, requires_grad=True)
    with intervene(lm, {"blocks.1.hook_resid_post": lambda x: x + delta}):
        loss = lm.model(**inputs).logits.float().pow(2).mean()
    loss.backward()
    assert delta.grad is not None and delta.grad.abs().sum() > 0


def test_sites_survive_peft_wrapping():
    from peft import LoraConfig, get_peft_model

    from workbench import load_model

    lm = load_model("random:tiny-qwen2")
    inputs = batch_inputs(lm)
    with torch.no_grad(), read_sites(lm, ["blocks.1.attn.hook_z", "blocks.1.hook_resid_post"]) as before:
        lm.model(**inputs)
    peft_model = get_peft_model(
        lm.model, LoraConfig(r=4, target_modules=["q_proj", "o_proj"], init_lora_weights=False)
    )
    lm.model = peft_model
    with torch.no_grad(), read_sites(lm, ["blocks.1.attn.hook_z", "blocks.1.hook_resid_post"]) as after:
        peft_model(**inputs)
    # q_proj changed, so z differs; the hook must still fire on the wrapped o_proj
    assert after["blocks.1.attn.hook_z"].shape == before["blocks.1.attn.hook_z"].shape
    assert not torch.allclose(after["blocks.1.hook_resid_post"], before["blocks.1.hook_resid_post"])
    with torch.no_grad(), peft_model.disable_adapter(), read_sites(lm, ["blocks.1.hook_resid_post"]) as off:
        peft_model(**inputs)
    torch.testing.assert_close(off["blocks.1.hook_resid_post"], before["blocks.1.hook_resid_post"])


def test_interventions_under_gradient_checkpointing():
    from workbench import load_model

    lm = load_model("random:tiny-llama")
    enable_checkpointing(lm.model)
    lm.model.train()
    before = count_hooks(lm.model)
    inputs = batch_inputs(lm)
    delta = torch.zeros(lm.d_model, requires_grad=True)
    with intervene(lm, {"blocks.0.hook_resid_post": lambda x: x + delta}):
        loss = lm.model(**inputs).logits.float().pow(2).mean()
        loss.backward()
    assert delta.grad is not None and torch.isfinite(delta.grad).all() and delta.grad.abs().sum() > 0
    assert count_hooks(lm.model) == before


def _layer_calls(lm):
    """A forward hook on every decoder layer that records which layers ran; returns (calls, handles)."""
    calls: list[int] = []
    handles = [
        layer.register_forward_hook(lambda m, a, o, i=i: calls.append(i))
        for i, layer in enumerate(lm.sites.layers)
    ]
    return calls, handles


def test_forward_until_reads_equal_a_full_forward(tiny):
    """Every site up to the stop layer reads the same as in a full pass; later layers never run."""
    from workbench import forward_until

    lm = tiny
    inputs = batch_inputs(lm)
    stop = lm.n_layers - 2
    sites = lm.sites.names(layers=list(range(stop + 1)))
    before = count_hooks(lm.model)
    with torch.no_grad(), read_sites(lm, sites) as full:
        lm.model(**inputs)
    calls, handles = _layer_calls(lm)
    try:
        with torch.no_grad(), read_sites(lm, sites) as cut:
            assert forward_until(lm, sites, **inputs) is None
    finally:
        for h in handles:
            h.remove()
    assert calls == list(range(stop + 1))  # the pass ended right after the deepest layer read
    for site in sites:
        torch.testing.assert_close(cut[site], full[site], atol=0, rtol=0)
    assert count_hooks(lm.model) == before


def test_forward_until_accepts_a_layer_or_a_site(tiny_llama):
    from workbench import forward_until

    lm = tiny_llama
    inputs = batch_inputs(lm)
    for stop_after, last in ((0, 0), ("blocks.1.attn.hook_z", 1), (["blocks.0.hook_mlp_out"], 0)):
        calls, handles = _layer_calls(lm)
        try:
            with torch.no_grad():
                forward_until(lm, stop_after, **inputs)
        finally:
            for h in handles:
                h.remove()
        assert calls == list(range(last + 1)), stop_after


def test_forward_until_leaves_no_hooks_after_an_exception(tiny_llama):
    from workbench import WorkbenchError, forward_until

    lm = tiny_llama
    inputs = batch_inputs(lm)
    before = count_hooks(lm.model)
    with torch.no_grad():
        forward_until(lm, 1, **inputs)  # a normal stop
    assert count_hooks(lm.model) == before
    boom = lm.sites.layers[0].register_forward_hook(lambda m, a, o: (_ for _ in ()).throw(Boom()))
    try:
        with pytest.raises(Boom):  # an error inside the pass is not swallowed as a stop
            with read_sites(lm, ["blocks.0.hook_resid_post"]), torch.no_grad():
                forward_until(lm, 2, **inputs)
    finally:
        boom.remove()
    assert count_hooks(lm.model) == before
    for bad, match in ((99, "out of range"), ("blocks.9.hook_resid_post", "out of range"), (True, "stop_after"),
                       ([], "empty list"), ("resid", "unknown hook site")):  # fmt: skip
        with pytest.raises(WorkbenchError, match=match):
            forward_until(lm, bad, **inputs)
    with pytest.raises(WorkbenchError, match="needs a LoadedModel"):
        forward_until(lm.sites, 0, **inputs)
    assert count_hooks(lm.model) == before
