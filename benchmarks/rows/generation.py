"""Generation rows: ``generate`` under a ``Steerer`` (one layer, all layers) or a ``GateSet`` (input_dependent,
per_head) against plain ``generate``, all from one round-robin per ``compile`` setting; and a sweep of 8
steering alphas as one batched call against 8 sequential calls."""

from __future__ import annotations

from typing import Any

import torch

from .._harness import Bench, Measured, Side, throughput_ratio
from .common import SYSTEM, compile_label, fixed_length, generate, make_gates, random_vector, texts

N_ALPHAS = 8


def _measure_generation(bench: Bench, compile: bool | None) -> dict[str, Any]:
    from steering import Steerer

    s = bench.sizes
    lm = bench.lm
    prompts = texts(bench, s.gen_batch, s.gen_prompt_tokens, seed=3)
    vec = random_vector(bench)
    mid = lm.n_layers // 2
    gates_full = make_gates(bench, "input_dependent")
    gates_head = make_gates(bench, "per_head")
    n = s.gen_new_tokens

    def plain() -> None:
        generate(bench, prompts, n, compile=compile)

    def steer_one() -> None:
        with Steerer(lm, vec, layers=[mid], alpha=4.0):
            generate(bench, prompts, n, compile=compile)

    def steer_all() -> None:
        with Steerer(lm, vec, layers="all", alpha=4.0):
            generate(bench, prompts, n, compile=compile)

    def gated() -> None:
        with gates_full.attached(lm, alpha=-1.0):
            generate(bench, prompts, n, compile=compile)

    def gated_head() -> None:
        with gates_head.attached(lm, alpha=-1.0):
            generate(bench, prompts, n, compile=compile)

    with fixed_length(lm, n):
        times = bench.time(
            {
                "plain": plain,
                "steer_one": steer_one,
                "steer_all": steer_all,
                "gated": gated,
                "gated_head": gated_head,
            }
        )
    from workbench.generation import render_prompts

    rendered = render_prompts(lm.tokenizer, prompts, SYSTEM)
    enc_len = [len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in rendered]
    return {
        "times": times,
        "tokens": s.gen_batch * n,
        "sizes": {
            "batch": s.gen_batch,
            "prompt_tokens_max": max(enc_len),  # chat-formatted, system prompt included
            "new_tokens": n,
            "greedy": True,
            "compile": compile_label(compile, bench.device),
        },
        "mid": mid,
        "gate_params": {
            "input_dependent": sum(p.numel() for p in gates_full.parameters()),
            "per_head": sum(p.numel() for p in gates_head.parameters()),
        },
    }


def generation_pair(bench: Bench, variant: str, compile: bool | None = None) -> Measured:
    m = bench.shared(f"generation:{compile}", lambda: _measure_generation(bench, compile))
    labels = {
        "steer_one": f"generate under Steerer, 1 layer ({m['mid']}), add",
        "steer_all": "generate under Steerer, all layers, add",
        "gated": "generate with input_dependent gates at attn, every layer, alpha -1 (suppressed)",
        "gated_head": "generate with per_head gates at attn, every layer, alpha -1 (suppressed)",
    }
    a = Side(labels[variant], m["times"][variant], m["tokens"])
    b = Side("plain generate", m["times"]["plain"], m["tokens"])
    extra = {}
    if variant.startswith("gated"):
        kind = "input_dependent" if variant == "gated" else "per_head"
        extra = {"gate_kind": kind, "gate_parameters": m["gate_params"][kind]}
    return Measured(a, b, throughput_ratio(a, b), "new tokens/s with / without", m["sizes"], extra)


def alpha_sweep(bench: Bench, compile: bool | None = None) -> Measured:
    """8 alphas as one batched call (per-row alpha tensor) vs 8 sequential calls with one float alpha."""
    from steering import Steerer

    s = bench.sizes
    lm = bench.lm
    prompts = texts(bench, s.sweep_prompts, s.gen_prompt_tokens, seed=4)
    alphas = [float(a) for a in range(N_ALPHAS)]
    rows = [p for _ in alphas for p in prompts]
    per_row = torch.tensor([a for a in alphas for _ in prompts])  # [8 * prompts]
    vec = random_vector(bench)
    layer = lm.n_layers // 2
    n = s.sweep_new_tokens

    def batched() -> None:
        with Steerer(lm, vec, layers=[layer], alpha=per_row):
            generate(bench, rows, n, compile=compile)

    def sequential() -> None:
        for a in alphas:
            with Steerer(lm, vec, layers=[layer], alpha=a):
                generate(bench, prompts, n, compile=compile)

    with fixed_length(lm, n):
        t = bench.time({"batched": batched, "sequential": sequential})
    work = len(rows) * n
    a = Side(f"one generate call, {len(rows)} rows, per-row alpha tensor", t["batched"], work)
    b = Side(f"{N_ALPHAS} generate calls of {len(prompts)} rows, one float alpha each", t["sequential"], work)
    sizes = {
        "alphas": N_ALPHAS,
        "prompts": len(prompts),
        "batch_batched": len(rows),
        "new_tokens": n,
        "compile": compile_label(compile, bench.device),
    }
    return Measured(a, b, throughput_ratio(a, b), "speed-up: sequential time / batched time", sizes)
