"""``mixed`` (alignment rows concatenated to the task rows) and ``upweighted`` (each task micro-batch paired
with an alignment micro-batch whose cross-entropy is added with weight lambda)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from workbench.settings import setting

from .._data import ORIGIN
from .._losses import masked_reduce, token_nll
from .._plugins import Defense, register_defense
from ._common import SourceSettings


@register_defense("mixed")
class MixedDefense(Defense):
    """Alignment rows are added to the training set (and shuffled in with it)."""

    Settings = SourceSettings

    def transform_data(self, ctx: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        s = self.settings
        extra = [{**r, ORIGIN: self.name} for r in ctx.load_rows(s.source, s.n, s.seed)]
        return rows + extra


@dataclass
class UpweightedSettings(SourceSettings):
    weight: float = setting(1.0, help="lambda: multiplier of the alignment cross-entropy")
    pairing: str = setting(
        "cycle",
        help="cycle: the alignment loader restarts when exhausted; stop: training stops when either runs out",
        choices=("cycle", "stop"),
    )
    batch_size: int | None = setting(None, help="alignment micro-batch size (null: optim.batch_size)")
    reduction: str = setting(
        "token_mean", help="alignment CE reduction", choices=("token_mean", "sequence_mean")
    )


@register_defense("upweighted")
class UpweightedDefense(Defense):
    Settings = UpweightedSettings

    def setup(self, ctx: Any) -> None:
        s = self.settings
        self.stream = ctx.stream(ctx.load_rows(s.source, s.n, s.seed), s.batch_size, s.seed)

    def limit_steps(self, ctx: Any, steps: int) -> int:
        if self.settings.pairing != "stop":
            return steps
        per_step = ctx.micro_per_step
        available = math.floor(len(self.stream.rows) / self.stream.batch_size) // per_step
        return max(1, min(steps, available))

    def extra_loss(self, ctx: Any, batch: Any, outputs: Any) -> dict[str, Tensor]:
        s = self.settings
        ab = ctx.encode(self.stream.batch(ctx.global_micro))
        out = ctx.forward(ab)
        nll, mask = token_nll(out.logits, ab.labels)
        return {"upweighted": s.weight * masked_reduce(nll, mask, s.reduction)}
