"""The paper's gate: per channel and input dependent, ``g = 2 * sigmoid(W x + b)``, W = 0 and b = 0 at start."""

from __future__ import annotations

from torch import Tensor, nn

from .._gate import Gate, register_gate_kind


@register_gate_kind("input_dependent")
class InputDependentGate(Gate):
    """``g = 2 * sigmoid(W x + b)`` with ``W: [channels, d_in]``, ``b: [channels]``, both zero at init."""

    input_dependent = True

    def __init__(self, d_in: int, channels: int, n_heads: int, rank: int = 8) -> None:
        super().__init__(d_in, channels, n_heads, rank)
        self.proj = nn.Linear(self.d_in, self.channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def logits(self, x: Tensor | None) -> Tensor:
        return self.proj(x)  # [..., channels]
