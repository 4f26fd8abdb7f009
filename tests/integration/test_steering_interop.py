"""The Steerer edit applied through nnsight and through TransformerLens bridge hooks gives the same logits."""

from __future__ import annotations

import pytest
import torch

from steering import Steerer, nnsight_steer, tl_hooks
from workbench._hooks import count_hooks

pytestmark = pytest.mark.integration

TEXT = "The committee met on Tuesday to discuss the new library budget."
LAYER = 12


def _vector(lm):
    g = torch.Generator().manual_seed(0)
    return torch.randn(lm.n_layers, lm.d_model, generator=g)


def _close(a, b, tol=1e-4):
    """Equal within ``tol``, relative to the logits' scale when it exceeds 1."""
    scale = max(1.0, b.abs().max().item())
    return (a - b).abs().max().item() <= tol * scale


@pytest.mark.parametrize("mode,alpha", [("add", 4.0), ("ablate_add", -3.0)])
def test_nnsight_steer_matches_steerer(smollm, mode, alpha):
    import nnsight

    v = _vector(smollm)
    ids = smollm.tokenizer([TEXT], return_tensors="pt")["input_ids"]
    start = count_hooks(smollm.model)
    with torch.no_grad():
        base = smollm.model(ids).logits
        with Steerer(smollm, v, [LAYER], alpha, mode=mode):
            ours = smollm.model(ids).logits
    wrapped = nnsight.TransformersModel(smollm.model, tokenizer=smollm.tokenizer)
    with torch.no_grad(), wrapped.trace(ids):
        nnsight_steer(wrapped, v, LAYER, alpha, mode=mode)
        theirs = wrapped.output.logits.save()
    assert not _close(ours, base, 1e-2)  # the edit does change the output
    assert _close(theirs, ours)
    assert count_hooks(smollm.model) == start


def test_tl_hooks_match_steerer_on_the_bridge(smollm):
    from transformer_lens.model_bridge import TransformerBridge

    from workbench._models import embedded_folder

    v = _vector(smollm)
    bridge = TransformerBridge.boot_transformers(
        str(embedded_folder()), tokenizer=smollm.tokenizer, device="cpu"
    )
    ids = smollm.tokenizer([TEXT], return_tensors="pt")["input_ids"]
    config = smollm.model.config
    old = config._attn_implementation
    try:
        config._attn_implementation = "eager"  # the bridge runs eager attention
        with torch.no_grad(), Steerer(smollm, v, [LAYER], 4.0):
            ours = smollm.model(ids).logits
        with torch.no_grad():
            base = smollm.model(ids).logits
    finally:
        config._attn_implementation = old
    with torch.no_grad():
        theirs = bridge.run_with_hooks(ids, fwd_hooks=tl_hooks(v, LAYER, 4.0))
        plain = bridge(ids)
    assert _close(plain, base)  # the two models agree before steering
    assert not _close(ours, base, 1e-2)
    assert _close(theirs, ours)
