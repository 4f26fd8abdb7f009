"""Static per-channel gate: one learned factor per channel, ``g = 2 * sigmoid(b)``, b = 0 at start."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .._gate import Gate, register_gate_kind


@register_gate_kind("per_channel")
class PerChannelGate(Gate):
    """``g = 2 * sigmoid(b)`` with ``b: [channels]`` (the same factor at every token)."""

    input_dependent = False

    def __init__(self, d_in: int, channels: int, n_heads: int, rank: int = 8) -> None:
        super().__init__(d_in, channels, n_heads, rank)
        self.bias = nn.Parameter(torch.zeros(self.channels))

    def logits(self, x: Tensor | None) -> Tensor:
        return self.bias  # [channels]
