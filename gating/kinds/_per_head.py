"""Static per-head gate: one learned factor per attention head, shared by the head's ``d_head`` channels."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from workbench import WorkbenchError

from .._gate import Gate, register_gate_kind


@register_gate_kind("per_head")
class PerHeadGate(Gate):
    """``g = 2 * sigmoid(b)`` with ``b: [n_heads]``, broadcast over each head's ``d_head`` channels."""

    input_dependent = False
    placements = ("attn",)

    def __init__(self, d_in: int, channels: int, n_heads: int, rank: int = 8) -> None:
        super().__init__(d_in, channels, n_heads, rank)
        if self.n_heads < 1 or self.channels % self.n_heads:
            raise WorkbenchError(
                f"per_head gates need channels ({self.channels}) divisible by n_heads ({self.n_heads})"
            )
        self.bias = nn.Parameter(torch.zeros(self.n_heads))

    def logits(self, x: Tensor | None) -> Tensor:
        return self.bias.repeat_interleave(self.channels // self.n_heads)  # [channels]
