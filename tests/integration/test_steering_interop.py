"""The Steerer edit applied through nnsight and through TransformerLens bridge hooks gives the same logits;
``nnsight_model`` leaves the caller's model and tokenizer as they were, even after an exception."""

from __future__ import annotations

import pytest
import torch

from steering import Steerer, nnsight_model, nnsight_steer, tl_hooks
from workbench import WorkbenchError
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
    v = _vector(smollm)
    ids = smollm.tokenizer([TEXT], return_tensors="pt")["input_ids"]
    start = count_hooks(smollm.model)
    with torch.no_grad():
        base = smollm.model(ids).logits
        with Steerer(smollm, v, [LAYER], alpha, mode=mode):
            ours = smollm.model(ids).logits
    with nnsight_model(smollm) as wrapped, torch.no_grad():
        with wrapped.trace(ids):
            nnsight_steer(wrapped, v, LAYER, alpha, mode=mode)
            theirs = wrapped.output.logits.save()
    assert not _close(ours, base, 1e-2)  # the edit does change the output
    assert _close(theirs, ours)
    assert count_hooks(smollm.model) == start
    with torch.no_grad():
        assert torch.equal(smollm.model(ids).logits, base)  # nothing of the edit is left on the model


def _state(lm):
    """What a caller can see of a model and its tokenizer: padding side and pad token, hook count, every
    module's training flag and instance attributes (nnsight patches ``forward`` and adds ``__nnsight__``)."""
    tok = lm.tokenizer
    modules = {
        name: (m.training, {k: id(v) for k, v in m.__dict__.items() if k == "forward" or k.startswith("__")})
        for name, m in lm.model.named_modules()
    }
    return (tok.padding_side, tok.pad_token), count_hooks(lm.model), modules


def test_plain_nnsight_wrapping_edits_the_callers_objects():
    """The premise of ``nnsight_model``: nnsight 0.8 left-pads the tokenizer it is handed and installs an
    instance ``forward`` on every module (checked on a throwaway tiny model)."""
    import nnsight

    from workbench import load_model

    lm = load_model("random:tiny-llama", device="cpu")
    before = _state(lm)
    assert before[0][0] == "right"
    nnsight.TransformersModel(lm.model, tokenizer=lm.tokenizer)
    after = _state(lm)
    assert after[0][0] == "left"
    assert after[2]["model.layers.0"] != before[2]["model.layers.0"]


class _Boom(RuntimeError):
    pass


def test_nnsight_model_leaves_model_and_tokenizer_unchanged(smollm):
    v = _vector(smollm)
    tok = smollm.tokenizer
    ids = tok([TEXT], return_tensors="pt")["input_ids"]
    smollm.model.train()  # a non-default flag, so "restored" cannot mean "reset to eval"
    smollm.model.model.layers[3].eval()
    try:
        before = _state(smollm)
        assert before[0][0] == "right"
        with torch.no_grad():
            base = smollm.model(ids).logits

        with nnsight_model(smollm) as wrapped, torch.no_grad():  # a normal run
            assert wrapped.tokenizer is not tok and wrapped.tokenizer.padding_side == "left"
            with wrapped.trace(ids):
                nnsight_steer(wrapped, v, LAYER, 4.0)
                steered = wrapped.output.logits.save()
            assert tok.padding_side == "right"  # the caller's tokenizer, even inside the block
        assert not _close(steered, base, 1e-2)
        assert _state(smollm) == before

        with pytest.raises(_Boom), nnsight_model(smollm) as wrapped, torch.no_grad():  # raised in the trace
            with wrapped.trace(ids):
                nnsight_steer(wrapped, v, LAYER, 4.0)
                raise _Boom("stop mid-trace")
        assert _state(smollm) == before

        with pytest.raises(WorkbenchError, match="layer 99"), nnsight_model(smollm) as wrapped:  # our error
            with wrapped.trace(ids):
                nnsight_steer(wrapped, v, 99, 4.0)
        assert _state(smollm) == before

        with torch.no_grad():
            assert torch.equal(smollm.model(ids).logits, base)
    finally:
        smollm.model.eval()


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
