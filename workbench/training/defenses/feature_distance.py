"""``ldifs`` and ``repr_constraint``: L2 distance between the trained and the reference model's
residual stream (``blocks.{l}.hook_resid_post``), on the task batch (LDIFS) or on alignment data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._config import _f
from .._plugins import Defense, register_defense
from ._common import SourceSettings


@dataclass
class FeatureSettings(SourceSettings):
    weight: float = _f(1.0, help="multiplier of the distance term")
    every: int = _f(5, help="use every k-th layer: layers k-1, 2k-1, ... (1 = all layers)")
    layers: list[int] | None = _f(None, help="explicit layer indices (overrides 'every')")
    positions: str = _f(
        "all",
        help="tokens compared: all non-padding tokens, or assistant tokens only",
        choices=("all", "assistant"),
    )
    on: str = _f("task", help="the task batch or an alignment batch", choices=("task", "alignment"))
    batch_size: int | None = _f(None, help="alignment batch size (null: optim.batch_size)")

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"'every' must be >= 1, got {self.every}")


@dataclass
class ReprSettings(FeatureSettings):
    every: int = _f(1, help="use every k-th layer (1 = all layers)")
    on: str = _f("alignment", help="the task batch or an alignment batch", choices=("task", "alignment"))


def feature_distance(
    acts: dict[str, Tensor], ref: dict[str, Tensor], sites: list[str], mask: Tensor
) -> Tensor:
    """Mean over sites and masked tokens of the squared L2 distance per coordinate (an MSE).

    ``acts[site]`` and ``ref[site]`` are ``[batch, pos, d_model]``; ``mask`` is ``[batch, pos]``.
    """
    m = mask.to(torch.float32)
    total = []
    for s in sites:
        d = (acts[s].float() - ref[s].float()).pow(2).mean(-1)  # [batch, pos]
        total.append((d * m).sum() / m.sum().clamp_min(1.0))
    return torch.stack(total).mean()


@register_defense("ldifs")
class FeatureDistanceDefense(Defense):
    """LDIFS (feature-space distance to the pre-trained model) at every k-th layer."""

    Settings = FeatureSettings

    def setup(self, ctx: Any) -> None:
        s = self.settings
        n = ctx.lm.n_layers
        layers = (
            s.layers if s.layers is not None else [l for l in range(n) if (l + 1) % s.every == 0] or [n - 1]
        )
        for l in layers:
            ctx.lm.sites.check_layer(l)
        self.sites = [f"blocks.{l}.hook_resid_post" for l in layers]
        if s.on == "task":
            ctx.request_policy_sites(self.sites)
            ctx.request_reference_sites(self.sites)
        else:
            self.stream = ctx.stream(ctx.load_rows(s.source, s.n, s.seed), s.batch_size, s.seed)

    def extra_loss(self, ctx: Any, batch: Any, outputs: Any) -> dict[str, Tensor]:
        s = self.settings
        if s.on == "alignment":
            batch = ctx.encode(self.stream.batch(ctx.global_micro))
            outputs = ctx.forward(batch, self.sites)
        ref = ctx.reference_forward(batch, self.sites)
        if s.positions == "assistant":
            mask = batch.labels != -100
        else:
            mask = batch.attention_mask.bool()
        value = feature_distance(outputs.acts, ref.acts, self.sites, mask)
        return {self.name: s.weight * value}


@register_defense("repr_constraint")
class ReprConstraintDefense(FeatureDistanceDefense):
    """The same distance on alignment data over all layers."""

    Settings = ReprSettings
