"""Low-rank input-dependent gate: ``g = 2 * sigmoid(U (V x) + b)``, V = 0 at start so ``g == 1`` exactly."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .._gate import Gate, register_gate_kind


@register_gate_kind("low_rank")
class LowRankGate(Gate):
    """``W = U @ V`` of rank ``r``: ``U: [channels, r]`` random, ``V: [r, d_in]`` zero (so gradients reach V)."""

    input_dependent = True

    def __init__(self, d_in: int, channels: int, n_heads: int, rank: int = 8) -> None:
        super().__init__(d_in, channels, n_heads, rank)
        if self.rank < 1:
            raise ValueError(f"low_rank gates need rank >= 1, got {rank}")
        self.U = nn.Parameter(torch.randn(self.channels, self.rank) / math.sqrt(self.rank))
        self.V = nn.Parameter(torch.zeros(self.rank, self.d_in))
        self.bias = nn.Parameter(torch.zeros(self.channels))

    def logits(self, x: Tensor | None) -> Tensor:
        if x is None:
            raise ValueError("low_rank gates are input-dependent: logits() needs the layer input")
        return (x @ self.V.T) @ self.U.T + self.bias  # [..., channels]
