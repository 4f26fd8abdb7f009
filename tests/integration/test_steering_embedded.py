"""Steering the embedded model along an evil-minus-aligned direction makes its answers more evil."""

from __future__ import annotations

import pytest

from probes import extract_from_pairs
from steering import sweep
from workbench.data import load_trait, make_dataset

pytestmark = pytest.mark.integration

LAYER = 15  # the middle of SmolLM2-135M's 30 layers


def test_steering_raises_trait_projection_and_margin_monotonically(smollm):
    pairs = make_dataset("contrastive_pairs", seed=0, n=24)
    train, held_out = pairs[:16], pairs[16:]
    vector = extract_from_pairs(
        smollm,
        [p["question"] for p in train],
        [p["misaligned"] for p in train],
        [p["aligned"] for p in train],
        layers=[LAYER],
        trait="evil",
    )
    questions = list(load_trait("evil").eval_questions[:5])
    result = sweep(
        smollm, vector, [LAYER], [-4.0, 2.0, 4.0, 8.0], questions, max_new_tokens=16, pairs=held_out
    )
    cells = {r["alpha"]: r for r in result.rows}
    proj = [cells[a]["trait_projection"] for a in (-4.0, 0.0, 2.0, 4.0, 8.0)]
    margin = [cells[a]["margin"] for a in (-4.0, 0.0, 2.0, 4.0, 8.0)]
    coherence = [cells[a]["coherence_logprob"] for a in (-4.0, 0.0, 2.0, 4.0, 8.0)]
    print(f"\nvector norm at layer {LAYER}: {vector.layer(LAYER).norm():.2f}")
    for a, p, m, c in zip((-4, 0, 2, 4, 8), proj, margin, coherence, strict=True):
        print(f"alpha {a:>3}: projection {p:8.3f}  margin {m:7.3f}  log-prob/token {c:7.3f}")
    # more alpha, more evil: projection of the generated answers and preference for the evil answers
    assert all(x < y for x, y in zip(proj[1:], proj[2:], strict=False)), proj
    assert all(x < y for x, y in zip(margin[1:], margin[2:], strict=False)), margin
    # a negative coefficient pushes the other way
    assert proj[0] < proj[1] and margin[0] < margin[1]
    # strong steering costs coherence under the unsteered model
    assert coherence[4] < coherence[1]
