"""``kl``: KL divergence between the trained model and the reference (the same model, adapter disabled)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from workbench.settings import setting

from .._losses import masked_kl
from .._plugins import Defense, register_defense
from ._common import SourceSettings


@dataclass
class KLSettings(SourceSettings):
    weight: float = setting(1.0, help="multiplier of the KL term")
    direction: str = setting(
        "forward",
        help="forward = KL(ref || model); reverse = KL(model || ref)",
        choices=("forward", "reverse"),
    )
    reduction: str = setting(
        "token_mean",
        help="mean over assistant tokens pooled, or per sequence",
        choices=("token_mean", "sequence_mean"),
    )
    on: str = setting(
        "task", help="compare on the task batch or on an alignment batch", choices=("task", "alignment")
    )
    batch_size: int | None = setting(None, help="alignment batch size (null: optim.batch_size)")


@register_defense("kl")
class KLDefense(Defense):
    """Keeps next-token distributions on assistant tokens close to the reference model's."""

    Settings = KLSettings

    def setup(self, ctx: Any) -> None:
        s = self.settings
        if s.on == "alignment":
            self.stream = ctx.stream(ctx.load_rows(s.source, s.n, s.seed), s.batch_size, s.seed)

    def extra_loss(self, ctx: Any, batch: Any, outputs: Any) -> dict[str, Tensor]:
        s = self.settings
        if s.on == "alignment":
            batch = ctx.encode(self.stream.batch(ctx.global_micro))
            outputs = ctx.forward(batch)
        ref = ctx.reference_forward(batch)
        value = masked_kl(outputs.logits, ref.logits, batch.labels, s.direction, s.reduction)
        ctx.log("kl_value", float(value.detach()))
        return {"kl": s.weight * value}
