"""Batched, left-padded generation from chat prompts (greedy or sampled, deterministic under a seed).

Sampling is seeded per **row**, not per batch: each row draws its noise from a generator seeded by the row's
seed and the decoding step (:class:`RowSeededSampler`, the Gumbel-max trick), so how rows are batched (batch
size, resumption, out-of-memory halving, sharing a batch with other settings) does not change what a row
samples.
"""

from __future__ import annotations

import hashlib
import json
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


# ---------------------------------------------------------------------------------------- per-row sampling
_MASK64 = (1 << 64) - 1


def row_seed(*parts: Any) -> int:
    """A 63-bit seed for one row from what identifies it, e.g. ``row_seed(seed, "question/0/2")``.

    Stable across processes and Python versions (SHA-256 of the JSON of ``parts``; not ``hash``, which is
    salted per process). ``generate`` seeds row ``i`` of a call with ``row_seed(seed, i)`` unless given
    ``row_seeds``.
    """
    data = json.dumps(list(parts), separators=(",", ":"), default=str).encode()
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def step_seed(seed: int, step: int) -> int:
    """The generator seed of a row with seed ``seed`` at decoding step ``step`` (63 bits)."""
    return _splitmix64(_splitmix64(int(seed) & _MASK64) ^ int(step)) >> 1


class RowSeededSampler:
    """A logits processor that turns greedy decoding into sampling with one random stream per row.

    At each step it scales the logits by ``1 / temperature``, removes tokens outside the top-``p`` nucleus
    (``-inf``, as transformers' ``TopPLogitsWarper`` does) and adds Gumbel noise ``-log(-log(u))`` with ``u``
    drawn from a ``torch.Generator`` seeded by ``step_seed(row seed, step)``; the argmax that greedy decoding
    then takes is an exact sample from ``softmax(logits / temperature)`` restricted to the nucleus
    (Gumbel-max). Use with ``do_sample=False``. A row's noise depends only on its seed and the step, so the
    same row draws the same tokens alone, in any batch, with any padding, eagerly or compiled (up to ties
    within float rounding of the logits, which padding can move in the last bits).

    The step is counted from the first call of a ``generate`` run (a call whose sequence length is not
    longer than the previous call's starts a new run), so one instance can be retried, e.g. by the eager
    fallback of compiled decoding.
    """

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float = 1.0) -> None:
        self.seeds = [int(s) for s in seeds]
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self._start: int | None = None
        self._last: int | None = None
        self._gen: dict[torch.device, torch.Generator] = {}

    def noise(self, step: int, vocab: int, device: torch.device) -> torch.Tensor:
        """The Gumbel noise ``[rows, vocab]`` (float32) added at decoding step ``step``."""
        device = torch.device(device)
        g = self._gen.get(device)
        if g is None:
            g = self._gen[device] = torch.Generator(device=device)
        out = torch.empty(len(self.seeds), vocab, dtype=torch.float32, device=device)
        for i, s in enumerate(self.seeds):
            g.manual_seed(step_seed(s, step))
            torch.rand(vocab, generator=g, device=device, dtype=torch.float32, out=out[i])
        tiny = torch.finfo(torch.float32).tiny
        return -torch.log(-torch.log(out.clamp_(min=tiny)))

    def warp(self, scores: torch.Tensor) -> torch.Tensor:
        """``scores / temperature`` with tokens outside the top-``p`` nucleus set to ``-inf``."""
        scores = scores.float() / self.temperature
        if self.top_p < 1.0:
            srt, idx = torch.sort(scores, descending=False)
            cum = srt.softmax(dim=-1).cumsum(dim=-1)
            remove = cum <= (1 - self.top_p)
            remove[..., -1:] = False  # keep at least the most likely token
            scores = scores.masked_fill(remove.scatter(1, idx, remove), float("-inf"))
        return scores

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if scores.shape[0] != len(self.seeds):
            raise WorkbenchError(
                f"sampler has {len(self.seeds)} row seeds for a batch of {scores.shape[0]} rows"
            )
        cur = int(input_ids.shape[1])
        if self._last is None or cur <= self._last:
            self._start = cur  # a new generate run (or a retry of one)
        self._last = cur
        step = cur - int(self._start or 0)
        return self.warp(scores) + self.noise(step, scores.shape[-1], scores.device)


@torch.no_grad()
def generate(
    lm: Any,
    prompts: Sequence[str | list[Message]],
    *,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    row_seeds: Sequence[int] | None = None,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
    desc: str = "generating",
    compile: bool | None = None,
) -> list[str]:
    """Answer each prompt; returns the decoded new text. ``temperature=0`` is greedy.

    Sampling (``temperature > 0``) is seeded per row: prompt ``i`` samples with ``row_seeds[i]``, by default
    ``row_seed(seed, i)``, so its answer does not depend on ``batch_size``, on out-of-memory halving or on
    the other prompts in its batch (:class:`RowSeededSampler`). Give ``row_seeds`` derived from what
    identifies each row (``row_seed(seed, uid)``) to get the same answers when rows are split across calls.

    ``compile``: decode with a static KV cache and ``torch.compile``, hooks included (``None``: on for CUDA,
    off elsewhere; see ``workbench/_compiled.py`` and ``docs/fast_decoding.md``).
    """
    from transformers import LogitsProcessorList

    from ._compiled import decode, default_compile

    tok = lm.tokenizer
    _check_arguments(max_new_tokens, temperature, top_p, batch_size)
    texts = render_prompts(tok, prompts, system)
    check_prompt_lengths(lm, texts)
    compiled = default_compile(lm.device) if compile is None else bool(compile)
    if row_seeds is None:
        seeds = [row_seed(seed, i) for i in range(len(texts))]
    else:
        seeds = [int(s) for s in row_seeds]
        if len(seeds) != len(texts):
            raise WorkbenchError(f"row_seeds has {len(seeds)} seeds for {len(texts)} prompts")

    def one_batch(start: int, stop: int, i: int) -> list[str]:
        enc = encode_left(tok, texts[start:stop], lm.device)
        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id)
        kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if temperature > 0:  # sampled: greedy over logits + per-row Gumbel noise (independent of batching)
            sampler = RowSeededSampler(seeds[start:stop], temperature, top_p)
            kwargs["logits_processor"] = LogitsProcessorList([sampler])
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
def default_compile(device: torch.device | str) -> bool:
    """Whether :func:`generate` decodes compiled on ``device`` when its ``compile`` is ``None`` (the default)."""
    from ._compiled import default_compile as _default_compile

    return _default_compile(device)


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
    it to label batches; seed randomness per item, not per batch, since halving changes the batches) and
    returns one result per item. When a batch runs out of memory it is
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


# ---------------------------------------------------------------------------------------- argument checks
def _check_arguments(max_new_tokens: Any, temperature: Any, top_p: Any, batch_size: Any) -> None:
    """One-line errors for values that would fail deep inside transformers or silently change the answers."""
    from ._options import check_int, check_number

    check_int(max_new_tokens, "max_new_tokens")
    check_number(temperature, "temperature", minimum=0, note=" (0 = greedy)")
    check_number(top_p, "top_p", above=0, maximum=1)
    check_int(batch_size, "batch_size")


def check_prompt_lengths(lm: Any, texts: Sequence[str]) -> None:
    """Refuse a prompt (chat template included) that leaves no room for an answer in the model's context.

    Checked for every prompt before anything is generated, so a 100 KB prompt is refused at once instead
    of running for minutes at positions the model was never trained on. (Answers that run past the context
    are handled by the model's forward check, ``workbench._models``.)
    """
    from ._models import context_length

    limit = context_length(lm.model)
    if limit is None or not texts:
        return
    lengths = [len(ids) for ids in lm.tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
    for i, n in enumerate(lengths):
        if n >= limit:
            raise WorkbenchError(
                f"prompt {i + 1} of {len(texts)} is {n} tokens long with the chat template; it must be "
                f"shorter than the model's context of {limit} tokens"
            )
