"""Persona-vector extraction on the embedded SmolLM2-135M model (integration tier)."""

from __future__ import annotations

import logging

import pytest
import torch

from probes import answer_projections, extract_from_trait, load_vectors
from workbench.data import load_trait
from workbench.generation import generate

log = logging.getLogger(__name__)


@pytest.mark.integration
def test_evil_vector_separates_held_out_answers(smollm, tmp_path):
    lm = smollm
    res = extract_from_trait(
        lm,
        "evil",
        judge="none",
        n_per_question=1,
        n_questions=8,
        n_instructions=1,
        max_new_tokens=24,
        batch_size=16,
        progress=False,
    )
    assert not res.filtered and res.n_kept == res.n_pairs == 8
    path = res.save(tmp_path / "evil.safetensors")
    vecs = load_vectors(path, fingerprint=lm.fingerprint)
    for stat in ("response_avg", "prompt_avg", "prompt_last"):
        v = vecs[stat]
        assert v.vectors.shape == (30, 576)
        assert torch.isfinite(v.vectors).all() and v.norms().min() > 0
        assert v.metadata["trait"] == "evil" and v.metadata["n_positive"] == 8
    # held-out questions answered (greedy) under the positive and the negative instruction, projected at a
    # middle layer with the instruction in context. Measured (seeds 0 and 1): mean difference +2.8 / +3.1
    # (spread of single answers about 5), 6 of 8 questions ordered correctly.
    trait = load_trait("evil")
    pos_sys, neg_sys = trait.instructions[0]
    questions = list(trait.eval_questions[:8])
    msgs = [
        [{"role": "system", "content": system}, {"role": "user", "content": q}]
        for system in (pos_sys, neg_sys)
        for q in questions
    ]
    answers = generate(lm, msgs, max_new_tokens=24, batch_size=16)
    layer = lm.n_layers // 2
    proj = answer_projections(lm, vecs["response_avg"], layer, msgs, answers, batch_size=16)
    pos, neg = proj[: len(questions)], proj[len(questions) :]
    log.warning("layer %d projections: positive %s, negative %s", layer, pos.tolist(), neg.tolist())
    assert pos.mean() > neg.mean()
    assert (pos > neg).sum() >= 5  # same question, positive vs negative instruction
