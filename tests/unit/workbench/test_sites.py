"""Hook sites agree with HF's own outputs on every tiny family, and reading them changes nothing."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import batch_inputs
from workbench import SITE_KINDS, WorkbenchError, intervene, read_sites


def _forward(lm, inputs, **kw):
    with torch.no_grad():
        return lm.model(**inputs, **kw)


def test_resid_post_equals_hidden_states(tiny):
    inputs = batch_inputs(tiny)
    sites = tiny.sites.names(["hook_resid_post"])
    with read_sites(tiny, sites) as cache:
        out = _forward(tiny, inputs, output_hidden_states=True)
    hs = out.hidden_states
    assert len(hs) == tiny.n_layers + 1
    for l in range(tiny.n_layers - 1):
        torch.testing.assert_close(cache[f"blocks.{l}.hook_resid_post"], hs[l + 1], rtol=0, atol=0)
    # HF applies the final norm to its last hidden state; the site is the raw layer output (as TransformerLens).
    last = cache[f"blocks.{tiny.n_layers - 1}.hook_resid_post"]
    final_norm = tiny.model.get_submodule(tiny.sites.adapter.final_norm)
    torch.testing.assert_close(final_norm(last), hs[-1], rtol=1e-5, atol=1e-5)


def test_resid_pre_is_previous_resid_post(tiny):
    inputs = batch_inputs(tiny)
    with read_sites(tiny, tiny.sites.names(["hook_resid_pre", "hook_resid_post"])) as cache:
        out = _forward(tiny, inputs, output_hidden_states=True)
    torch.testing.assert_close(cache["blocks.0.hook_resid_pre"], out.hidden_states[0], rtol=0, atol=0)
    for l in range(1, tiny.n_layers):
        torch.testing.assert_close(
            cache[f"blocks.{l}.hook_resid_pre"], cache[f"blocks.{l - 1}.hook_resid_post"]
        )


def test_residual_decomposition(tiny):
    """resid_post = resid_pre + attn_out + mlp_out for every family (all add both sublayers to the residual)."""
    inputs = batch_inputs(tiny)
    with read_sites(tiny, tiny.sites.names()) as cache:
        _forward(tiny, inputs)
    for l in range(tiny.n_layers):
        total = (
            cache[f"blocks.{l}.hook_resid_pre"]
            + cache[f"blocks.{l}.hook_attn_out"]
            + cache[f"blocks.{l}.hook_mlp_out"]
        )
        torch.testing.assert_close(total, cache[f"blocks.{l}.hook_resid_post"], rtol=1e-5, atol=1e-5)


def test_hook_z_shape_and_projection(tiny):
    """hook_z is [batch, pos, n_heads, d_head] and the output projection of it gives the attention output."""
    inputs = batch_inputs(tiny)
    with read_sites(tiny, ["blocks.1.attn.hook_z"]) as cache:
        _forward(tiny, inputs)
    z = cache["blocks.1.attn.hook_z"]
    b, p = inputs["input_ids"].shape
    assert z.shape[:3] == (b, p, tiny.sites.n_heads)
    o_proj = tiny.sites.module(1, tiny.sites.adapter.o_proj)
    with read_sites(tiny, ["blocks.1.hook_attn_out"]) as cache2:
        _forward(tiny, inputs)
    if tiny.sites.adapter.attn_out is None:  # families without a post-attention norm
        torch.testing.assert_close(
            o_proj(z.flatten(2)), cache2["blocks.1.hook_attn_out"], rtol=1e-5, atol=1e-5
        )


def test_reading_sites_does_not_change_logits(tiny):
    inputs = batch_inputs(tiny)
    base = _forward(tiny, inputs).logits
    with read_sites(tiny, tiny.sites.names()):
        read = _forward(tiny, inputs).logits
    torch.testing.assert_close(base, read, rtol=0, atol=0)


def test_identity_intervention_matches_base_logits(tiny):
    inputs = batch_inputs(tiny)
    base = _forward(tiny, inputs).logits
    with intervene(tiny, {s: (lambda x: x.clone()) for s in tiny.sites.names()}):
        edited = _forward(tiny, inputs).logits
    torch.testing.assert_close(base, edited, rtol=0, atol=0)


def test_intervention_changes_downstream_only(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    with read_sites(lm, lm.sites.names(["hook_resid_post"])) as base:
        _forward(lm, inputs)
    with (
        intervene(lm, {"blocks.1.hook_resid_post": lambda x: x + 1.0}),
        read_sites(lm, lm.sites.names(["hook_resid_post", "hook_resid_pre"])) as edited,
    ):
        _forward(lm, inputs)
    torch.testing.assert_close(edited["blocks.0.hook_resid_post"], base["blocks.0.hook_resid_post"])
    torch.testing.assert_close(edited["blocks.2.hook_resid_pre"], base["blocks.1.hook_resid_post"] + 1.0)


def test_z_intervention_zero_heads_equals_zero_attn_out(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    with (
        intervene(lm, {"blocks.0.attn.hook_z": torch.zeros_like}),
        read_sites(lm, ["blocks.0.hook_attn_out"]) as c,
    ):
        _forward(lm, inputs)
    bias = lm.sites.module(0, "self_attn.o_proj").bias
    assert bias is None
    assert c["blocks.0.hook_attn_out"].abs().max().item() == 0.0


def test_reduce_is_applied_per_forward(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    with read_sites(lm, ["blocks.0.hook_resid_post"], reduce=lambda site, x: x.mean(dim=1)) as cache:
        _forward(lm, inputs)
        _forward(lm, inputs)
    assert cache["blocks.0.hook_resid_post"].shape == (2, lm.d_model)
    assert len(cache.all("blocks.0.hook_resid_post")) == 2


def test_sites_work_during_generate(tiny_llama):
    lm = tiny_llama
    inputs = batch_inputs(lm)
    with torch.no_grad(), read_sites(lm, ["blocks.2.hook_resid_post"]) as cache:
        lm.model.generate(**inputs, max_new_tokens=3, do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
    steps = cache.all("blocks.2.hook_resid_post")
    assert len(steps) == 3  # prefill + 2 decoding steps (the 3rd token needs no further forward)
    assert steps[1].shape[1] == 1


@pytest.mark.parametrize(
    "site, needle",
    [
        ("blocks.0.hook_nonsense", "unknown hook site 'blocks.0.hook_nonsense'"),
        ("resid_post", "unknown hook site 'resid_post'"),
        ("blocks.3.hook_resid_post", "layer 3 is out of range"),
        ("blocks.-1.hook_resid_post", "layer -1 is out of range"),
    ],
)
def test_bad_site_errors(tiny_llama, site, needle):
    with pytest.raises(WorkbenchError, match=needle):
        with read_sites(tiny_llama, [site]):
            pass


def test_site_kinds_listed():
    assert SITE_KINDS == ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "attn.hook_z", "hook_mlp_out")
