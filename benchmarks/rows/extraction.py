"""Extraction rows: ``teacher_forced_stats`` (persona-vector activation statistics) against a plain forward
pass, and batched against one example at a time. Both rows come from one round-robin (``Bench.shared``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .._harness import Bench, Measured, Side, throughput_ratio
from .common import SYSTEM, texts


@dataclass
class _Extraction:
    times: dict[str, list[float]]
    tokens: int
    sizes: dict[str, Any]


def length_sorted_batches(examples: list[tuple[list[int], int]], batch_size: int) -> list[list[int]]:
    """Indices grouped as ``teacher_forced_stats`` groups them: longest first (ties by index), so the plain
    forward pads exactly the batches the extraction pads."""
    order = sorted(range(len(examples)), key=lambda i: (-len(examples[i][0]), i))
    return [order[s : s + batch_size] for s in range(0, len(order), batch_size)]


def _persona_vectors_way(bench: Bench, prompts: list[str], answers: list[str]) -> None:
    """The one-example-at-a-time reading of the persona_vectors code: for each (prompt, answer), one forward
    pass with ``output_hidden_states``, then per layer the response mean, prompt mean and last prompt token
    moved to the host."""
    from workbench.generation import render_prompts

    lm, tok = bench.lm, bench.lm.tokenizer
    for text, answer in zip(render_prompts(tok, prompts, SYSTEM), answers, strict=True):
        p = tok(text, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + a], device=lm.device)
        with torch.no_grad():
            hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
        start = len(p)
        for layer in range(1, len(hs)):
            h = hs[layer]
            h[:, start:].mean(dim=1).detach().cpu()
            h[:, :start].mean(dim=1).detach().cpu()
            h[:, start - 1].detach().cpu()


def _measure_extraction(bench: Bench) -> _Extraction:
    from probes import teacher_forced_stats
    from workbench.scoring import build_teacher_forced, pad_right

    s = bench.sizes
    lm = bench.lm
    prompts = texts(bench, s.fwd_examples, s.prompt_tokens, seed=1)
    answers = texts(bench, s.fwd_examples, s.answer_tokens, seed=2)
    examples = build_teacher_forced(lm.tokenizer, prompts, answers, SYSTEM)
    pad = lm.tokenizer.pad_token_id
    batches = [
        pad_right([examples[i][0] for i in idx], pad, lm.device)
        for idx in length_sorted_batches(examples, s.fwd_batch)
    ]
    tokens = sum(len(ids) for ids, _ in examples)

    def extraction() -> None:
        teacher_forced_stats(lm, prompts, answers, batch_size=s.fwd_batch, system=SYSTEM)

    @torch.no_grad()
    def plain() -> None:
        for ids, mask in batches:
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    def one_at_a_time() -> None:
        _persona_vectors_way(bench, prompts, answers)

    times = bench.time({"extraction": extraction, "plain": plain, "one_at_a_time": one_at_a_time})
    lengths = [len(ids) for ids, _ in examples]
    sizes = {
        "examples": s.fwd_examples,
        "batch": s.fwd_batch,
        "seq_min": min(lengths),
        "seq_max": max(lengths),
        "tokens": tokens,
        "layers_read": lm.n_layers,
    }
    return _Extraction(times, tokens, sizes)


def extraction_vs_forward(bench: Bench) -> Measured:
    m: _Extraction = bench.shared("extraction", lambda: _measure_extraction(bench))
    a = Side("teacher_forced_stats (all layers: response mean, prompt mean, last prompt token)",
             m.times["extraction"], m.tokens)  # fmt: skip
    b = Side("plain forward (logits) over the same padded batches", m.times["plain"], m.tokens)
    return Measured(
        a, b, throughput_ratio(a, b), "extraction tokens/s / plain forward tokens/s", m.sizes,
        notes="extraction includes tokenization and stops after the last read layer (no final norm and "
        "unembedding); the plain forward starts from token ids",
    )  # fmt: skip


def batched_vs_one_at_a_time(bench: Bench) -> Measured:
    m: _Extraction = bench.shared("extraction", lambda: _measure_extraction(bench))
    a = Side(f"teacher_forced_stats, batches of {bench.sizes.fwd_batch}", m.times["extraction"], m.tokens)
    b = Side("one example at a time with output_hidden_states (the persona_vectors way)",
             m.times["one_at_a_time"], m.tokens)  # fmt: skip
    return Measured(a, b, throughput_ratio(a, b), "speed-up: one-at-a-time time / batched time", m.sizes)
