"""The Interleaving+ row: the defense's ``score_pool`` (the aligned model and K adapters, each loaded, run over
the pool and unloaded) against K + 1 plain forward passes over the same tokens."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from .._harness import Bench, Measured, Side, throughput_ratio
from .common import SYSTEM, texts

N_ADAPTERS = 3


def _make_adapters(bench: Bench) -> list[str]:
    """K random LoRA adapters (r 32, every attention and MLP linear) saved as PEFT folders."""
    from peft import LoraConfig, get_peft_model

    from workbench.training import compact_targets, resolve_target_modules

    lm = bench.lm
    targets = compact_targets(lm.model, resolve_target_modules(lm, "all"))
    paths = []
    for k in range(N_ADAPTERS):
        torch.manual_seed(100 + k)
        cfg = LoraConfig(r=32, lora_alpha=64, use_rslora=True, target_modules=targets,
                         init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
        pm = get_peft_model(lm.model, cfg)
        try:
            path = bench.folder(f"adapter{k}")
            pm.save_pretrained(str(path))
            paths.append(str(path))
        finally:
            pm.unload()
    return paths


def interleave_plus_scoring(bench: Bench) -> Measured:
    from workbench.scoring import build_teacher_forced, pad_right
    from workbench.training import split_prompt_answer
    from workbench.training.defenses.interleave_plus import InterleavePlusDefense

    s = bench.sizes
    lm = bench.lm
    adapters = bench.shared("adapters", lambda: _make_adapters(bench))
    questions = texts(bench, s.pool_rows, s.prompt_tokens, seed=6)
    answers = texts(bench, s.pool_rows, s.answer_tokens, seed=7)
    pool = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in zip(questions, answers, strict=True)
    ]
    defense = InterleavePlusDefense(
        InterleavePlusDefense.Settings(adapters=adapters, batch_size=s.pool_batch)
    )
    optim = SimpleNamespace(max_length=1 << 30)

    def scoring() -> None:
        ctx = SimpleNamespace(lm=lm, cache_dir=bench.folder("ilp-cache"), config=SimpleNamespace(optim=optim))
        defense.score_pool(ctx, pool)  # a fresh cache folder: every call computes all K + 1 passes

    prompts, ans = zip(*(split_prompt_answer(r) for r in pool), strict=True)
    examples = build_teacher_forced(lm.tokenizer, list(prompts), list(ans))
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))
    pad = lm.tokenizer.pad_token_id
    batches = [
        pad_right([examples[i][0] for i in order[j : j + s.pool_batch]], pad, lm.device)
        for j in range(0, len(order), s.pool_batch)
    ]
    tokens = sum(len(e) for e, _ in examples)
    passes = N_ADAPTERS + 1

    @torch.no_grad()
    def plain() -> None:
        for _ in range(passes):
            for ids, mask in batches:
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    t = bench.time({"scoring": scoring, "plain": plain})
    a = Side(f"Interleaving+ score_pool: aligned + {N_ADAPTERS} adapters (load, score, unload)",
             t["scoring"], tokens * passes)  # fmt: skip
    b = Side(f"{passes} plain forward passes over the same tokens", t["plain"], tokens * passes)
    # how much of the scoring time is adapter loading (amortised over larger pools)
    from peft import PeftModel

    def load_unload() -> None:
        PeftModel.from_pretrained(lm.model, adapters[0], is_trainable=False).unload()

    load_t = bench.time({"load": load_unload}, repeats=2, warmup=0)["load"]
    sizes = {
        "pool_rows": s.pool_rows,
        "batch": s.pool_batch,
        "tokens_per_pass": tokens,
        "adapters": N_ADAPTERS,
    }
    load_s = min(load_t)
    passes_s = max(1e-9, a.median_s - N_ADAPTERS * load_s)
    extra = {
        "adapter_load_unload_s": round(load_s, 4),
        "model_passes": passes,
        # the per-pass cost alone: what the ratio tends to as the pool grows and loading is amortised
        "ratio_excluding_adapter_loading": round(b.median_s / passes_s, 4),
    }
    return Measured(a, b, throughput_ratio(a, b), "tokens/s per model pass, scoring / plain", sizes, extra)
