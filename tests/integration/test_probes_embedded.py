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
        n_questions=4,
        n_instructions=2,
        max_new_tokens=24,
        batch_size=8,
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
    # held-out questions, answered under the first instruction pair, projected at a middle layer
    trait = load_trait("evil")
    pos_sys, neg_sys = trait.instructions[0]
    questions = list(trait.eval_questions[:4])
    layer = lm.n_layers // 2
    prompts, answers, polarity = [], [], []
    for system, tag in ((pos_sys, 1), (neg_sys, 0)):
        msgs = [[{"role": "system", "content": system}, {"role": "user", "content": q}] for q in questions]
        prompts += msgs
        answers += generate(lm, msgs, max_new_tokens=24, batch_size=8)
        polarity += [tag] * len(msgs)
    proj = answer_projections(lm, vecs["response_avg"], layer, prompts, answers, batch_size=8)
    pos = proj[torch.tensor(polarity) == 1]
    neg = proj[torch.tensor(polarity) == 0]
    log.warning("layer %d projections: positive %s, negative %s", layer, pos.tolist(), neg.tolist())
    assert pos.mean() > neg.mean()
    assert (pos.unsqueeze(1) > neg.unsqueeze(0)).float().mean() >= 0.75  # most pairs ordered correctly
