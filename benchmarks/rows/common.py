"""What several row families share: deterministic filler inputs, fixed-length generation, gates with values.

Every row runs the workbench's public code path; the helpers here only build its inputs (text of a given
token length, a fixed random direction, gates at every layer) and pin the work (``fixed_length``), so the
two sides of a pair do the same amount of it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import torch

from workbench import WorkbenchError

from .._harness import Bench, patched

#: a short system prompt on every bench chat (without one, some templates, SmolLM2's among them, insert a
#: default system prompt of ~30 tokens that would dominate the short quick-mode inputs)
SYSTEM = "Be brief."

_WORDS = (
    "the river carried small stones past the old mill while a careful neighbour counted boats and "
    "wrote every number into a paper notebook before the evening light faded over quiet gardens "
    "where children asked simple questions about weather clocks maps bread music and distant cities"
).split()


def text_of(tokenizer: Any, n_tokens: int, seed: int) -> str:
    """Deterministic filler text of (at most, and as close as possible to) ``n_tokens`` tokens."""
    rng = random.Random(seed)
    words: list[str] = []

    def count(k: int) -> int:
        return len(tokenizer(" ".join(words[:k]), add_special_tokens=False)["input_ids"])

    while count(len(words)) < n_tokens:
        words.extend(rng.choice(_WORDS) for _ in range(max(4, n_tokens // 2)))
    lo, hi = 1, len(words)  # the largest k with count(k) <= n_tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def texts(bench: Bench, n: int, n_tokens: int, seed: int) -> list[str]:
    """``n`` filler texts of about ``n_tokens`` tokens of the bench's tokenizer (seeded per text)."""
    tok = bench.lm.tokenizer
    return [text_of(tok, n_tokens, seed * 10_007 + i) for i in range(n)]


def random_vector(bench: Bench, scale: float = 1.0) -> torch.Tensor:
    """A fixed random direction per layer, ``[n_layers, d_model]`` (timings do not depend on its values)."""
    g = torch.Generator().manual_seed(1234)
    v = torch.randn(bench.lm.n_layers, bench.lm.d_model, generator=g)
    return scale * v / v.norm(dim=-1, keepdim=True)


@contextlib.contextmanager
def fixed_length(lm: Any, n: int) -> Iterator[None]:
    """Every generate call in the block makes exactly ``n`` new tokens (EOS is held back until then), so
    steered, gated and plain runs do the same work whatever they sample."""
    with patched(lm.model.generation_config, min_new_tokens=n):
        yield


def generate(bench: Bench, prompts: list[str], n_new: int, *, compile: bool | None = None) -> list[str]:
    """``workbench.generation.generate`` on one batch; ``compile`` is passed only when given (``None``:
    generate's own default, which compiles on CUDA and not on the CPU)."""
    from workbench.generation import generate as wb_generate

    kwargs: dict[str, Any] = {"max_new_tokens": n_new, "batch_size": len(prompts), "system": SYSTEM}
    if compile is not None:
        kwargs["compile"] = bool(compile)
    try:
        return wb_generate(bench.lm, prompts, **kwargs)
    except TypeError as exc:
        if compile is not None and "compile" in str(exc):
            raise WorkbenchError("workbench.generation.generate has no 'compile' option") from None
        raise


def compile_label(compile: bool | None, device: torch.device) -> str:
    """How a row decoded: ``on`` / ``off`` when given, else generate's default on this device."""
    if compile is not None:
        return "on" if compile else "off"
    from workbench.generation import default_compile

    return "default (on)" if default_compile(device) else "default (off)"


def make_gates(bench: Bench, kind: str, sites: tuple[str, ...] = ("attn",)) -> Any:
    """Gates at every layer with non-trivial values (a trained-looking state; the cost is the same)."""
    from gating import GateSet

    gs = GateSet.create(bench.lm, kind=kind, sites=sites)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in gs.parameters():
            p.copy_(0.01 * torch.randn(p.shape, generator=g).to(p.device, p.dtype))
    gs.eval()
    return gs
