"""Teacher-forced answer scoring equals an independent one-example computation; batching changes nothing."""

from __future__ import annotations

import torch

from tests.helpers import load_tiny
from workbench.scoring import answer_logprobs


def _manual(lm, prompt: str, answer: str) -> float:
    tok = lm.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    p = tok(text, add_special_tokens=False)["input_ids"]
    a = tok(answer, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p + a])
    with torch.no_grad():
        logp = torch.log_softmax(lm.model(input_ids=ids).logits.float(), -1)[0]
    return sum(logp[len(p) + i - 1, t].item() for i, t in enumerate(a))


def test_answer_logprobs_match_manual_and_batching():
    lm = load_tiny("tiny-qwen2")
    prompts = ["What is 2+2?", "Name a colour.", "Tell me a long story about a dragon and a knight."]
    answers = ["Four.", "Blue, or perhaps a deep green.", "No."]
    batched = answer_logprobs(lm, prompts, answers, batch_size=3)
    single = [answer_logprobs(lm, [p], [a], batch_size=1)[0] for p, a in zip(prompts, answers, strict=True)]
    for b, s, p, a in zip(batched, single, prompts, answers, strict=True):
        assert b.n_tokens == len(lm.tokenizer(a, add_special_tokens=False)["input_ids"])
        assert abs(b.logprob - s.logprob) < 1e-3
        assert abs(b.logprob - _manual(lm, p, a)) < 1e-3
        assert b.mean == b.logprob / b.n_tokens
