"""Batched, left-padded generation from chat prompts (greedy or sampled, deterministic under a seed)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .chat import Message, format_chat


def render_prompts(
    tokenizer: Any, prompts: Sequence[str | list[Message]], system: str | None = None
) -> list[str]:
    """Chat-format each prompt (a user string or a message list) with the generation prompt appended."""
    out = []
    for p in prompts:
        msgs = [{"role": "user", "content": p}] if isinstance(p, str) else list(p)
        if system and not (msgs and msgs[0]["role"] == "system"):
            msgs = [{"role": "system", "content": system}, *msgs]
        out.append(format_chat(tokenizer, msgs, add_generation_prompt=True))
    return out


def encode_left(tokenizer: Any, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
    """Tokenize with left padding (what decoding needs) without changing the tokenizer's own setting."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = old
    return {k: v.to(device) for k, v in enc.items()}


@torch.no_grad()
def generate(
    lm: Any,
    prompts: Sequence[str | list[Message]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
    desc: str = "generating",
) -> list[str]:
    """Answer each prompt; returns the decoded new text. ``temperature=0`` is greedy."""
    tok = lm.tokenizer
    texts = render_prompts(tok, prompts, system)
    answers: list[str] = []
    steps = range(0, len(texts), batch_size)
    for i, start in enumerate(tqdm(steps, desc=desc, disable=not progress, unit="batch")):
        batch = texts[start : start + batch_size]
        enc = encode_left(tok, batch, lm.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        if temperature > 0:
            torch.manual_seed(seed + i)
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        out = lm.model.generate(**enc, **kwargs)
        new = out[:, enc["input_ids"].shape[1] :]
        answers.extend(tok.batch_decode(new, skip_special_tokens=True))
    return [a.strip() for a in answers]
