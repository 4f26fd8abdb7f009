"""Integration tier: the embedded SmolLM2-135M-Instruct model, read by us, nnsight and TransformerLens."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from workbench import read_sites

pytestmark = pytest.mark.integration

TEXT = "The committee met on Tuesday to discuss the new library budget."


def _ours(lm, layers):
    enc = lm.tokenizer([TEXT], return_tensors="pt")
    with torch.no_grad(), read_sites(lm, [f"blocks.{l}.hook_resid_post" for l in layers]) as cache:
        lm.model(**enc)
    return enc, {l: cache[f"blocks.{l}.hook_resid_post"] for l in layers}


def test_embedded_model_shape(smollm):
    assert smollm.n_layers == 30 and smollm.d_model == 576
    assert smollm.info()["parameters"] == 134_515_008
    assert smollm.tokenizer.chat_template


def test_resid_post_matches_nnsight(smollm):
    import nnsight

    from steering import nnsight_model  # wraps without left-padding the shared fixture's tokenizer

    layers = list(range(smollm.n_layers))
    enc, ours = _ours(smollm, layers)
    with nnsight_model(smollm) as wrapped, torch.no_grad(), wrapped.trace(enc["input_ids"]):
        saved = nnsight.save([])
        for l in layers:
            saved.append(wrapped.model.layers[l].output)
    assert smollm.tokenizer.padding_side == "right"
    for l in layers:
        theirs = saved[l][0] if isinstance(saved[l], tuple) else saved[l]
        assert (theirs - ours[l]).abs().max().item() <= 1e-4, f"layer {l}"


def test_resid_post_matches_transformerlens_bridge(smollm):
    from transformer_lens.model_bridge import TransformerBridge

    from workbench._models import embedded_folder

    layers = list(range(smollm.n_layers))
    bridge = TransformerBridge.boot_transformers(
        str(embedded_folder()), tokenizer=smollm.tokenizer, device="cpu"
    )
    # The bridge runs eager attention. With the same kernel the two readings agree to the last bit; with
    # SDPA they differ by float rounding only (~1e-6 relative or less on residuals whose entries reach ~2,500).
    config = smollm.model.config
    old = config._attn_implementation
    try:
        config._attn_implementation = "eager"
        enc, ours = _ours(smollm, layers)
    finally:
        config._attn_implementation = old
    enc, ours_sdpa = _ours(smollm, layers)
    with torch.no_grad():
        _, cache = bridge.run_with_cache(
            enc["input_ids"], names_filter=lambda n: n.endswith("hook_resid_post")
        )
    worst = max((cache[f"blocks.{l}.hook_resid_post"] - ours[l]).abs().max().item() for l in layers)
    assert worst <= 1e-4, worst
    for l in layers:
        theirs = cache[f"blocks.{l}.hook_resid_post"]
        rel = (theirs - ours_sdpa[l]).abs().max() / theirs.abs().max()
        assert rel.item() <= 1e-5, f"layer {l}"


def test_info_cli_on_default_model():
    r = subprocess.run(
        [sys.executable, "-m", "workbench", "info"], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    assert "layers: 30" in r.stdout and "d_model: 576" in r.stdout


def test_chat_answer_is_sensible(smollm):
    from workbench.generation import generate

    answer = generate(smollm, ["What is the capital of France? Answer in one word."], max_new_tokens=10)[0]
    assert "Paris" in answer
