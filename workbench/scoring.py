"""Teacher-forced scoring: log-probabilities of given answers under a model (batched, padding-aware)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .chat import Message
from .generation import map_batches_halving, render_prompts


@dataclass(frozen=True)
class AnswerScore:
    """Sum of token log-probs of an answer given its prompt, and its token count."""

    logprob: float
    n_tokens: int

    @property
    def mean(self) -> float:
        """Length-normalised log-prob (per answer token)."""
        return self.logprob / max(1, self.n_tokens)


def build_teacher_forced(
    tokenizer: Any, prompts: Sequence[str | list[Message]], answers: Sequence[str], system: str | None = None
) -> list[tuple[list[int], int]]:
    """Token ids of prompt + answer and the index where the answer starts, per example.

    Prompt and answer are tokenized separately and concatenated, so the answer's tokens are the same
    whatever the prompt (no merges across the boundary).
    """
    texts = render_prompts(tokenizer, prompts, system)
    out = []
    for text, answer in zip(texts, answers, strict=True):
        p = tokenizer(text, add_special_tokens=False)["input_ids"]
        a = tokenizer(answer, add_special_tokens=False)["input_ids"]
        out.append((list(p) + list(a), len(p)))
    return out


def pad_right(seqs: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def answer_logprobs(
    lm: Any,
    prompts: Sequence[str | list[Message]],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
    desc: str = "scoring",
) -> list[AnswerScore]:
    """Log-probability of each answer given its chat prompt (the assistant turn's content only)."""
    examples = build_teacher_forced(lm.tokenizer, prompts, answers, system)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))  # similar lengths together
    pad = lm.tokenizer.pad_token_id

    def one_batch(start: int, stop: int, _: int) -> list[AnswerScore]:
        idx = order[start:stop]
        ids, mask = pad_right([examples[i][0] for i in idx], pad, lm.device)
        logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
        logp = (
            torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        )  # [batch, pos-1]
        scores = []
        for row, i in enumerate(idx):
            seq, start_a = examples[i]
            # token t is predicted at position t-1
            lp = logp[row, start_a - 1 : len(seq) - 1]
            scores.append(AnswerScore(float(lp.sum()), int(lp.numel())))
        return scores

    scored = map_batches_halving(
        one_batch, len(order), batch_size, what="scoring answers", progress=progress, desc=desc
    )
    result: list[AnswerScore | None] = [None] * len(examples)
    for i, score in zip(order, scored, strict=True):
        result[i] = score
    return result  # type: ignore[return-value]
