"""Teacher-forced activation statistics: one forward pass per batch, every layer read at once.

Each example is a chat prompt plus a given answer, tokenized as in ``workbench.scoring`` (prompt and answer
separately, then concatenated) and right-padded. A ``reduce`` function on each ``resid_post`` hook keeps
only per-example summaries, so memory does not grow with sequence length. Padding never enters a mean.

The sequence ends with the answer's last token: nothing (no end-of-turn token) is appended after the
answer, so ``response_last`` is the last non-padding token of prompt + answer, the token repeng reads when
given the string ``rendered prompt + answer``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench import ModelLike, forward_until, read_sites
from workbench.chat import Message
from workbench.scoring import build_teacher_forced, pad_right

STAT_ORDER = ("response_avg", "prompt_avg", "prompt_last", "response_last")
_NEEDS_ANSWER = ("response_avg", "response_last")


@dataclass
class ActivationStats:
    """Per-example summaries of ``resid_post``: each tensor is ``[n_examples, n_read_layers, d_model]``.

    ``layers`` lists the model layers read, in order. ``n_answer_tokens[i] == 0`` means example ``i`` had an
    empty answer; its ``response_avg`` row is zero and its ``response_last`` row is the last prompt token:
    neither may enter a mean (see ``valid``).
    """

    response_avg: Tensor  # [n, L, d_model]
    prompt_avg: Tensor  # [n, L, d_model]
    prompt_last: Tensor  # [n, L, d_model]
    response_last: Tensor  # [n, L, d_model]
    n_answer_tokens: Tensor  # [n] long
    n_prompt_tokens: Tensor  # [n] long
    layers: list[int]

    def get(self, statistic: str) -> Tensor:
        return getattr(self, statistic)

    def valid(self, statistic: str) -> Tensor:
        """Boolean ``[n]``: which examples have this statistic (an empty answer has no answer token)."""
        if statistic in _NEEDS_ANSWER:
            return self.n_answer_tokens > 0
        return torch.ones_like(self.n_answer_tokens, dtype=torch.bool)


def _sites(layers: Sequence[int]) -> list[str]:
    return [f"blocks.{layer}.hook_resid_post" for layer in layers]


def _batches(examples: list[tuple[list[int], int]], batch_size: int) -> list[list[int]]:
    """Indices grouped so examples of similar length share a batch (less padding)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i][0]), i))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _masks(
    examples: list[tuple[list[int], int]], idx: list[int], width: int, device: torch.device
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Response mask, prompt mask (``[batch, pos]`` float), the last prompt position and the last position
    of the sequence, i.e. the last answer token (``[batch]`` each)."""
    resp = torch.zeros(len(idx), width)
    prompt = torch.zeros(len(idx), width)
    last = torch.zeros(len(idx), dtype=torch.long)
    end = torch.zeros(len(idx), dtype=torch.long)
    for row, i in enumerate(idx):
        seq, start = examples[i]
        prompt[row, :start] = 1.0
        resp[row, start : len(seq)] = 1.0
        last[row] = start - 1
        end[row] = len(seq) - 1
    return resp.to(device), prompt.to(device), last.to(device), end.to(device)


def _stat_reducer(resp: Tensor, prompt: Tensor, last: Tensor, end: Tensor) -> Callable[[str, Tensor], Tensor]:
    """A ``read_sites`` reduce that keeps ``[4, batch, d_model]`` in ``STAT_ORDER``: response mean, prompt
    mean, last prompt token, last answer token."""
    rows = torch.arange(resp.shape[0], device=resp.device)
    n_resp = resp.sum(1, keepdim=True).clamp_min(1.0)
    n_prompt = prompt.sum(1, keepdim=True).clamp_min(1.0)

    def reduce(site: str, x: Tensor) -> Tensor:  # x: [batch, pos, d_model]
        x = x.float()
        r = torch.einsum("bp,bpd->bd", resp, x) / n_resp
        p = torch.einsum("bp,bpd->bd", prompt, x) / n_prompt
        return torch.stack([r, p, x[rows, last], x[rows, end]], dim=0)  # stays on the device: no host sync

    return reduce


@torch.no_grad()
def teacher_forced_stats(
    lm: ModelLike,
    prompts: Sequence[str | list[Message]],
    answers: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
    desc: str = "reading activations",
) -> ActivationStats:
    """Mean over answer tokens, mean over prompt tokens, the last prompt token and the last answer token
    (``STAT_ORDER``), per example and layer. The pass stops after the deepest layer read."""
    chosen = list(range(lm.n_layers)) if layers is None else [lm.sites.check_layer(x) for x in layers]
    examples = build_teacher_forced(lm.tokenizer, prompts, answers, system)
    n, d = len(examples), lm.d_model
    out = torch.zeros(len(STAT_ORDER), n, len(chosen), d)
    n_ans = torch.tensor([len(s) - a for s, a in examples], dtype=torch.long)
    n_prompt = torch.tensor([a for _, a in examples], dtype=torch.long)
    sites = _sites(chosen)
    col = {s: j for j, s in enumerate(sites)}
    pad = lm.tokenizer.pad_token_id
    for idx in tqdm(_batches(examples, batch_size), desc=desc, disable=not progress, unit="batch"):
        ids, mask = pad_right([examples[i][0] for i in idx], pad, lm.device)
        reduce = _stat_reducer(*_masks(examples, idx, ids.shape[1], lm.device))
        with read_sites(lm, sites, reduce=reduce) as cache:
            forward_until(lm, sites, input_ids=ids, attention_mask=mask)
        index = torch.tensor(idx, dtype=torch.long)
        cols = torch.tensor([col[site] for site in sites], dtype=torch.long)
        stacked = torch.stack([cache[site] for site in sites], dim=2).cpu()  # [4, batch, L, d]: one copy
        out[:, index[:, None], cols[None, :]] = stacked
    return ActivationStats(
        response_avg=out[0],
        prompt_avg=out[1],
        prompt_last=out[2],
        response_last=out[3],
        n_answer_tokens=n_ans,
        n_prompt_tokens=n_prompt,
        layers=chosen,
    )


@torch.no_grad()
def answer_token_values(
    lm: ModelLike,
    direction: Tensor,
    layer: int,
    prompts: Sequence[str | list[Message]],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
    desc: str = "projecting",
) -> list[Tensor]:
    """Per answer token, ``resid_post`` at ``layer`` dotted with ``direction`` (``[d_model]``)."""
    lm.sites.check_layer(layer)
    examples = build_teacher_forced(lm.tokenizer, prompts, answers, system)
    site = f"blocks.{layer}.hook_resid_post"
    u = direction.to(lm.device, torch.float32)
    result: list[Tensor | None] = [None] * len(examples)
    pad = lm.tokenizer.pad_token_id
    for idx in tqdm(_batches(examples, batch_size), desc=desc, disable=not progress, unit="batch"):
        ids, mask = pad_right([examples[i][0] for i in idx], pad, lm.device)

        def reduce(site: str, x: Tensor) -> Tensor:  # x: [batch, pos, d_model] -> [batch, pos]
            return (x.float() @ u).cpu()

        with read_sites(lm, [site], reduce=reduce) as cache:
            forward_until(lm, layer, input_ids=ids, attention_mask=mask)
        values = cache[site]
        for row, i in enumerate(idx):
            seq, start = examples[i]
            result[i] = values[row, start : len(seq)].clone()
    return result  # type: ignore[return-value]
