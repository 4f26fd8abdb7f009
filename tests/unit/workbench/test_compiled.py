"""Compiled decoding (static cache + torch.compile) gives the eager answers, with hooks inside the graph.

The tests compile with the ``aot_eager`` backend: Dynamo traces the whole decoding step, hooks included,
with ``fullgraph=True`` (any graph break is an error), but no kernels are generated, which keeps compile
time to seconds on a CPU. ``workbench bench`` measures the inductor backend.
"""

from __future__ import annotations

import logging

import pytest
import torch

from gating import GateSet
from steering import Steerer
from workbench import load_model
from workbench._compiled import BACKEND_ENV, decode, pad_left_to_bucket
from workbench.generation import encode_left, render_prompts

PROMPTS = ["Hello there, who are you?", "Name a colour."]
KW = dict(max_new_tokens=10, do_sample=False, temperature=None, top_p=None, top_k=None)


@pytest.fixture(scope="module")
def lm():
    return load_model("random:tiny-llama", device="cpu", seed=5)


@pytest.fixture
def aot(monkeypatch):
    import torch._dynamo.utils as du

    monkeypatch.setenv(BACKEND_ENV, "aot_eager")
    du.counters.clear()
    yield du.counters


def _enc(lm, prompts=PROMPTS):
    return encode_left(lm.tokenizer, render_prompts(lm.tokenizer, prompts, None), lm.device)


def _both(lm):
    enc = _enc(lm)
    kw = {**KW, "pad_token_id": lm.tokenizer.pad_token_id}
    eager = decode(lm, enc, kw, compile=False)
    compiled = decode(lm, enc, kw, compile=True)
    return eager, compiled


def test_bucketing_pads_left_only():
    enc = {
        "input_ids": torch.ones(2, 5, dtype=torch.long),
        "attention_mask": torch.ones(2, 5, dtype=torch.long),
    }
    out = pad_left_to_bucket(enc, pad_id=7, bucket=16)
    assert out["input_ids"].shape == (2, 16) and (out["input_ids"][:, :11] == 7).all()
    assert out["attention_mask"][:, :11].sum() == 0 and out["attention_mask"][:, 11:].all()
    assert pad_left_to_bucket(out, 7, 16) is out


def test_compiled_equals_eager_plain_steered_and_gated(lm, aot):
    eager, compiled = _both(lm)
    assert torch.equal(eager, compiled)

    v = 3.0 * torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(0))
    with Steerer(lm, v, [1], torch.tensor([2.0, -4.0])):
        s_eager, s_compiled = _both(lm)
    assert torch.equal(s_eager, s_compiled)
    assert not torch.equal(s_eager, eager), "steering must change the answers (else the test proves nothing)"

    # after the Steerer exits, the compiled path is unsteered again (hooks are guarded, not baked in)
    _, again = _both(lm)
    assert torch.equal(again, eager)

    gates = GateSet.create(lm, kind="input_dependent", sites=("attn", "mlp"))
    with torch.no_grad():
        for p in gates.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    with gates.attached(lm, alpha=torch.tensor([-1.0, 2.0])):
        g_eager, g_compiled = _both(lm)
    assert torch.equal(g_eager, g_compiled)
    assert not torch.equal(g_eager, eager)
    assert dict(aot["graph_break"]) == {}, "the hooks must not break the compiled graph"
    assert aot["stats"]["unique_graphs"] >= 3


def test_compile_failure_falls_back_to_eager(lm, monkeypatch, caplog):
    import workbench._compiled as compiled_mod

    monkeypatch.setenv(BACKEND_ENV, "no_such_backend")
    monkeypatch.setattr(compiled_mod, "_warned", set())
    caplog.set_level(logging.WARNING, logger="workbench._compiled")
    eager, compiled = _both(lm)
    assert torch.equal(eager, compiled)
    assert "generating eagerly" in caplog.text


def test_generate_compile_option_matches_eager(lm, aot):
    from workbench.generation import generate

    eager = generate(lm, PROMPTS, max_new_tokens=10)
    assert generate(lm, PROMPTS, max_new_tokens=10, compile=True) == eager
    assert generate(lm, PROMPTS, max_new_tokens=10, compile=None) == eager  # CPU default: eager


def test_new_per_row_coefficients_reuse_the_compiled_graph(lm, aot):
    v = 3.0 * torch.randn(lm.n_layers, lm.d_model, generator=torch.Generator().manual_seed(3))
    with Steerer(lm, v, [2], torch.tensor([1.0, 2.0])):
        _both(lm)
    graphs = aot["stats"]["unique_graphs"]
    with Steerer(lm, v, [2], torch.tensor([5.0, -3.0])):  # other values, same shape: same graph
        eager, compiled = _both(lm)
    assert torch.equal(eager, compiled)
    assert aot["stats"]["unique_graphs"] == graphs
