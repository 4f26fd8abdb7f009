"""Gates on the embedded SmolLM2-135M: identity at start; trained gates push the narrow behaviour, suppression
pulls it the other way."""

from __future__ import annotations

import pytest
import torch

from gating import GateSet, train_gates
from workbench._hooks import count_hooks
from workbench.data import make_dataset
from workbench.scoring import answer_logprobs

pytestmark = pytest.mark.integration


def test_identity_gates_match_the_embedded_model(smollm):
    enc = smollm.tokenizer(["The capital of France is"], return_tensors="pt")
    with torch.no_grad():
        base = smollm.model(**enc).logits
        gates = GateSet.create(smollm, kind="input_dependent", sites=("attn", "mlp"))
        with gates.attached(smollm):
            gated = smollm.model(**enc).logits
    assert torch.equal(base, gated)
    assert count_hooks(smollm.model) == 0


def test_trained_gates_raise_and_suppressed_gates_lower_the_learned_answers(smollm):
    rows = make_dataset("opinion_sycophancy", n=8)
    # gates only on the last layers: the base is frozen, so backward stops at layer 22
    gates = train_gates(
        smollm,
        rows,
        kind="per_channel",
        sites=("attn",),
        layers=range(22, 30),
        lr=0.1,
        epochs=2,
        batch_size=4,
    )
    assert gates.history[-1]["loss"] < gates.history[0]["loss"]
    prompts = [r["messages"][:1] for r in rows]
    answers = [r["messages"][-1]["content"] for r in rows]

    def mean_logp(alpha: float) -> float:
        with gates.attached(smollm, alpha=alpha):
            scores = answer_logprobs(smollm, prompts, answers)
        return sum(s.mean for s in scores) / len(scores)

    trained, off, suppressed = mean_logp(1.0), mean_logp(0.0), mean_logp(-1.0)
    assert trained > off > suppressed
    assert count_hooks(smollm.model) == 0
