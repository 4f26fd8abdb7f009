"""``ldifs`` and ``repr_constraint``: distance between the trained and the reference model's residual
stream (``blocks.{l}.hook_resid_post``), on the task batch (LDIFS) or on alignment data.

``distance: l2_squared`` (the LDIFS default) is the paper's term: per token, the squared L2 distance
between the concatenations of the chosen layers' residual vectors, i.e. the sum over layers and
coordinates of squared differences. ``distance: mse`` is the mean of the same squared differences over
coordinates and layers (``l2_squared / (n_layers * d_model)``). ``reduction`` then averages the per-token
values over the mask: ``sequence_mean`` (each example's mean over its tokens, then the mean over the
examples that have tokens) or ``token_mean`` (all tokens of the micro-batch pooled).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from workbench.settings import setting

from .._losses import masked_reduce
from .._plugins import Defense, register_defense
from ._common import SourceSettings

DISTANCES = ("l2_squared", "mse")
REDUCTIONS = ("sequence_mean", "token_mean")


@dataclass
class FeatureSettings(SourceSettings):
    weight: float = setting(1.0, help="lambda: multiplier of the distance term (the LDIFS papers use 1.0)")
    distance: str = setting(
        "l2_squared",
        help="per token: l2_squared = sum over the chosen layers and coordinates of squared differences "
        "(||concat_l x_l - concat_l x0_l||^2, the paper's term); mse = their mean (the pre-audit default)",
        choices=DISTANCES,
    )
    reduction: str = setting(
        "sequence_mean",
        help="over tokens: sequence_mean = mean over each example's tokens, then over examples; "
        "token_mean = all tokens of the micro-batch pooled (the pre-audit default)",
        choices=REDUCTIONS,
    )
    every: int = setting(5, help="use every k-th layer: layers k-1, 2k-1, ... (1 = all layers)")
    layers: list[int] | None = setting(None, help="explicit layer indices (overrides 'every')")
    positions: str = setting(
        "all",
        help="tokens compared: all non-padding tokens, or assistant tokens only",
        choices=("all", "assistant"),
    )
    on: str = setting("task", help="the task batch or an alignment batch", choices=("task", "alignment"))
    batch_size: int | None = setting(None, help="alignment batch size (null: optim.batch_size)")

    def __post_init__(self) -> None:
        if self.every < 1:
            raise ValueError(f"'every' must be >= 1, got {self.every}")
        if self.distance not in DISTANCES:
            raise ValueError(f"'distance' must be one of {', '.join(DISTANCES)}, got {self.distance!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"'reduction' must be one of {', '.join(REDUCTIONS)}, got {self.reduction!r}")


@dataclass
class ReprSettings(FeatureSettings):
    distance: str = setting(
        "mse",
        help="per token: mse = mean over layers and coordinates of squared differences (kept: no paper "
        "fixes this defense's scale); l2_squared = their sum",
        choices=DISTANCES,
    )
    reduction: str = setting(
        "token_mean",
        help="over tokens: token_mean = all tokens of the micro-batch pooled; sequence_mean = per example, "
        "then over examples",
        choices=REDUCTIONS,
    )
    every: int = setting(1, help="use every k-th layer (1 = all layers)")
    on: str = setting("alignment", help="the task batch or an alignment batch", choices=("task", "alignment"))


def feature_distance(
    acts: dict[str, Tensor],
    ref: dict[str, Tensor],
    sites: list[str],
    mask: Tensor,
    distance: str = "l2_squared",
    reduction: str = "sequence_mean",
) -> Tensor:
    """The per-token feature distance over ``sites``, averaged over the masked tokens.

    ``acts[site]`` and ``ref[site]`` are ``[batch, pos, d_model]``; ``mask`` is ``[batch, pos]``.
    Per token: ``sum_site sum_coord (acts - ref)^2`` (``l2_squared``) or that divided by the number of
    summed terms (``mse``); then ``masked_reduce`` with ``reduction`` (no tokens: 0).
    """
    if distance not in DISTANCES:
        raise ValueError(f"unknown feature distance {distance!r} ({', '.join(DISTANCES)})")
    per_token = torch.zeros(mask.shape, dtype=torch.float32, device=mask.device)
    width = 0
    for s in sites:
        diff = acts[s].float() - ref[s].float()
        per_token = per_token + diff.pow(2).sum(-1)
        width += diff.shape[-1]
    if distance == "mse":
        per_token = per_token / max(1, width)
    return masked_reduce(per_token, mask.bool(), reduction)


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
        value = feature_distance(outputs.acts, ref.acts, self.sites, mask, s.distance, s.reduction)
        return {self.name: s.weight * value}


@register_defense("repr_constraint")
class ReprConstraintDefense(FeatureDistanceDefense):
    """The same distance on alignment data over all layers (default: the per-coordinate mean, pooled)."""

    Settings = ReprSettings
