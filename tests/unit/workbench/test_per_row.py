"""One coefficient per batch row: a mixed batch equals each prompt run alone with its coefficient.

Greedy generation (identical tokens) and logits (float tolerance) for steering and for gates, and the
batched sweep against one generate call per coefficient.
"""

from __future__ import annotations

import pytest
import torch

from gating import GateSet
from steering import Steerer, sweep
from workbench import load_model
from workbench.generation import generate

PROMPTS = ["Hello, who are you?", "Name a colour.", "What is 2 + 3?"]


@pytest.fixture(scope="module")
def lm():
    return load_model("random:tiny-llama", device="cpu")


def _vec(lm, seed=0, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(lm.n_layers, lm.d_model, generator=g)


@pytest.mark.parametrize("positions", ["all", "response"])
def test_mixed_alpha_generation_equals_single_runs(lm, positions):
    v = _vec(lm)
    alphas = [0.0, 2.0, -3.0, 6.0]
    prompt = PROMPTS[1]
    with Steerer(lm, v, [1], torch.tensor(alphas), positions=positions):
        mixed = generate(lm, [prompt] * len(alphas), max_new_tokens=12, batch_size=len(alphas))
    singles = []
    for a in alphas:
        with Steerer(lm, v, [1], a, positions=positions):
            singles.append(generate(lm, [prompt], max_new_tokens=12)[0])
    assert mixed == singles
    assert len(set(mixed)) > 1, "the coefficients must change the answers for the test to mean anything"
    assert mixed[0] == generate(lm, [prompt], max_new_tokens=12)[0]


def test_mixed_alpha_logits_with_padding_equal_single_runs(lm):
    """Rows of different lengths (left padding) and different coefficients, steering at every layer."""
    from workbench.generation import encode_left, render_prompts

    v = _vec(lm, seed=1)
    alphas = torch.tensor([1.0, -2.0, 4.0])
    texts = render_prompts(lm.tokenizer, PROMPTS, None)
    enc = encode_left(lm.tokenizer, texts, lm.device)
    with Steerer(lm, v, "all", alphas), torch.no_grad():
        mixed = lm.model(**enc).logits[:, -1]
    for i, a in enumerate(alphas.tolist()):
        one = encode_left(lm.tokenizer, [texts[i]], lm.device)
        with Steerer(lm, v, "all", a), torch.no_grad():
            single = lm.model(**one).logits[:, -1]
        torch.testing.assert_close(mixed[i : i + 1], single, rtol=1e-4, atol=1e-4)


def test_mixed_gate_alpha_generation_equals_single_runs():
    lm = load_model("random:tiny-llama", device="cpu", seed=3)
    gates = GateSet.create(lm, kind="input_dependent", sites=("attn", "mlp"))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in gates.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g))
    alphas = [-1.0, 0.0, 1.0, 2.5]
    prompt = PROMPTS[0]
    with gates.attached(lm, alpha=torch.tensor(alphas)):
        mixed = generate(lm, [prompt] * len(alphas), max_new_tokens=12, batch_size=len(alphas))
    singles = []
    for a in alphas:
        with gates.attached(lm, alpha=a):
            singles.append(generate(lm, [prompt], max_new_tokens=12)[0])
    assert mixed == singles
    assert len(set(mixed)) > 1
    assert mixed[1] == generate(lm, [prompt], max_new_tokens=12)[0]  # alpha 0 = gates off


def test_batched_sweep_equals_one_call_per_alpha(lm):
    v = _vec(lm, seed=2)
    kw = dict(layers=[0, 2], alphas=[0.0, 2.0, 5.0], questions=PROMPTS, judge="none", max_new_tokens=8)
    batched = sweep(lm, v, **kw)
    sequential = sweep(lm, v, batch_alphas=False, **kw)
    assert [a["answer"] for a in batched.answers] == [a["answer"] for a in sequential.answers]
    for rb, rs in zip(batched.rows, sequential.rows, strict=True):
        assert (rb["layer"], rb["alpha"]) == (rs["layer"], rs["alpha"])
        assert rb["trait_projection"] == pytest.approx(rs["trait_projection"], rel=1e-5, abs=1e-5)
        assert rb["coherence_logprob"] == pytest.approx(rs["coherence_logprob"], rel=1e-5, abs=1e-5)
    assert batched.config["batch_alphas"] and not sequential.config["batch_alphas"]
    # the batched path also chunks prompts (batch_size prompts x 2 coefficients per call)
    chunked = sweep(lm, v, batch_size=2, **kw)
    assert [a["answer"] for a in chunked.answers] == [a["answer"] for a in batched.answers]
