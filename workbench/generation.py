"""Batched, left-padded generation from chat prompts (greedy or sampled, deterministic under a seed)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from ._errors import WorkbenchError
from .chat import Message, format_chat

log = logging.getLogger(__name__)
T = TypeVar("T")


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
    compile: bool | None = None,
) -> list[str]:
    """Answer each prompt; returns the decoded new text. ``temperature=0`` is greedy.

    ``compile``: decode with a static KV cache and ``torch.compile``, hooks included (``None``: on for CUDA,
    off elsewhere; see ``workbench/_compiled.py`` and ``docs/fast_decoding.md``).
    """
    from ._compiled import decode, default_compile

    tok = lm.tokenizer
    texts = render_prompts(tok, prompts, system)
    compiled = default_compile(lm.device) if compile is None else bool(compile)

    def one_batch(start: int, stop: int, i: int) -> list[str]:
        enc = encode_left(tok, texts[start:stop], lm.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        if temperature > 0:
            torch.manual_seed(seed + i)
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p, top_k=0)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        new = decode(lm, enc, kwargs, compile=compiled)
        return tok.batch_decode(new, skip_special_tokens=True)

    answers = map_batches_halving(
        one_batch,
        len(texts),
        batch_size,
        what=f"generating (max_new_tokens={max_new_tokens})",
        progress=progress,
        desc=desc,
    )
    return [a.strip() for a in answers]


# ---------------------------------------------------------------------------------------- out of memory
def is_out_of_memory(exc: BaseException) -> bool:
    """True for an accelerator or host out-of-memory error (CUDA, MPS, the CPU allocator)."""
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(exc, oom | MemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def map_batches_halving(
    fn: Callable[[int, int, int], list[T]],
    n: int,
    batch_size: int,
    *,
    what: str = "running a batch",
    progress: bool = False,
    desc: str = "",
) -> list[T]:
    """``fn(start, stop, i)`` over ``[0, n)`` in batches, halving the batch on out-of-memory errors.

    ``fn`` gets the item range and the running batch number ``i`` (0, 1, 2, ... as the batches succeed; use
    it to seed per-batch randomness) and returns one result per item. When a batch runs out of memory it is
    retried with half as many items, and later batches keep the smaller size; each halving is logged as a
    warning. An out-of-memory error on a single item becomes a :class:`WorkbenchError` with advice.
    Without out-of-memory errors this is exactly a loop over ``range(0, n, batch_size)``.
    """
    size = max(1, int(batch_size))
    out: list[T] = []
    start = i = 0
    with tqdm(total=n, desc=desc, disable=not progress, unit="item") as bar:
        while start < n:
            stop = min(n, start + size)
            try:
                got = fn(start, stop, i)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                failed = stop - start
                detail = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
            else:
                if len(got) != stop - start:
                    raise RuntimeError(f"batch function returned {len(got)} results for {stop - start} items")
                out.extend(got)
                bar.update(stop - start)
                start, i = stop, i + 1
                continue
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # once per failure, after the failed batch's tensors are gone
            if failed <= 1:
                raise WorkbenchError(
                    f"out of memory {what} even one item at a time ({detail}); use shorter inputs or outputs, "
                    "a smaller model or dtype, or a device with more memory"
                )
            size = failed // 2
            log.warning("out of memory %s a batch of %d; retrying with batches of %d", what, failed, size)
    return out
