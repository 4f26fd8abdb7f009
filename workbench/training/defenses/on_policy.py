"""``on_policy``: pool prompts answered once by the reference model (cached), then interleaved."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from workbench._io import atomic_write_text
from workbench.settings import setting

from .._data import n_to_add, rows_hash, split_prompt_answer
from .._plugins import Defense, register_defense
from ._common import SourceSettings
from .interleave import mix, pick


@dataclass
class OnPolicySettings(SourceSettings):
    fraction: float = setting(
        0.1, help="share of the final training rows that are self-answered pool prompts"
    )
    max_new_tokens: int = setting(128, help="answer length limit")
    temperature: float = setting(0.0, help="0 = greedy answers")
    batch_size: int = setting(16, help="generation batch size")

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"'fraction' must be in [0, 1), got {self.fraction}")


@register_defense("on_policy")
class OnPolicyDefense(Defense):
    Settings = OnPolicySettings

    def transform_data(self, ctx: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        from workbench.generation import generate

        s = self.settings
        k = n_to_add(len(rows), s.fraction)
        if k == 0:
            return rows
        chosen = pick(ctx.load_rows(s.source, s.n, s.seed), k, s.seed)
        prompts = [split_prompt_answer(r)[0] for r in chosen]
        key = rows_hash(chosen, ctx.lm.fingerprint.source, s.max_new_tokens, s.temperature, s.seed)
        cache = ctx.cache_dir / f"on_policy_{key}.jsonl"
        if cache.exists():
            answers = [json.loads(line)["answer"] for line in cache.read_text(encoding="utf-8").splitlines()]
        else:
            answers = generate(
                ctx.lm,
                prompts,
                max_new_tokens=s.max_new_tokens,
                temperature=s.temperature,
                seed=s.seed,
                batch_size=s.batch_size,
                progress=bool(getattr(ctx, "progress", False)),
                desc=f"{self.name}: generating {len(prompts)} answers",
            )
            atomic_write_text(cache, "".join(json.dumps({"answer": a}) + "\n" for a in answers))
        extra = [
            {"messages": [*p, {"role": "assistant", "content": a}]}
            for p, a in zip(prompts, answers, strict=True)
            if a.strip()
        ]
        return mix(rows, extra, self.name)
