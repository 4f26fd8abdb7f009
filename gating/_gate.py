"""Gate kinds: the ``Gate`` base class and the registry that names them.

A gate maps the layer's normalised input ``x`` (``[batch, pos, d_in]``) to a multiplicative factor
``g`` in ``[0, 2]`` per channel: ``[batch, pos, channels]`` for input-dependent kinds, ``[channels]``
for static ones. Every kind starts as the identity (``g == 1`` exactly).

Add a kind by subclassing ``Gate`` in its own module and decorating it::

    @register_gate_kind("my_kind")
    class MyGate(Gate):
        input_dependent = False
        def logits(self, x): ...   # pre-sigmoid values; g = 2 * sigmoid(logits)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import Tensor, nn

from workbench import WorkbenchError

#: name -> gate class, filled by ``register_gate_kind``.
GATE_KINDS: dict[str, type[Gate]] = {}

#: a gate's *placement*: ``attn`` multiplies the attention output before the output projection (hook site
#: ``blocks.{l}.attn.hook_z``), ``mlp`` the MLP output (``blocks.{l}.hook_mlp_out``). "Site" is kept for the
#: hook-site names; ``GATE_SITES`` is the old name of this tuple.
GATE_PLACEMENTS = ("attn", "mlp")
GATE_SITES = GATE_PLACEMENTS

G = TypeVar("G", bound="type[Gate]")


class Gate(nn.Module):
    """One gate at one (placement, layer): ``g = 2 * sigmoid(logits(x))`` per channel.

    Parameters are kept in float32 whatever the model's dtype; the hook casts ``g`` to the activation's dtype.

    Args:
        d_in: width of the gate's input ``x`` (the model's ``d_model``).
        channels: number of gated channels (``n_heads * d_head`` at ``attn``, ``d_model`` at ``mlp``).
        n_heads: attention heads (per-head kinds share one factor across a head's ``d_head`` channels).
        rank: rank of low-rank kinds (ignored by the others).

    ``placements`` lists where the kind may sit (a subclass may still set the old name ``sites``; the
    registry copies it to ``placements``).
    """

    kind: ClassVar[str] = ""
    input_dependent: ClassVar[bool] = False
    placements: ClassVar[tuple[str, ...]] = GATE_PLACEMENTS
    sites: ClassVar[tuple[str, ...]] = GATE_PLACEMENTS  # the old name of ``placements``

    def __init__(self, d_in: int, channels: int, n_heads: int, rank: int = 8) -> None:
        super().__init__()
        self.d_in = int(d_in)
        self.channels = int(channels)
        self.n_heads = int(n_heads)
        self.rank = int(rank)

    def logits(self, x: Tensor | None) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: Tensor | None = None) -> Tensor:
        """``g`` for input ``x`` (``[..., d_in]`` -> ``[..., channels]``; static kinds return ``[channels]``)."""
        if self.input_dependent:
            if x is None:
                raise WorkbenchError(f"gate kind '{self.kind}' depends on the input; call it with x")
            x = x.to(self._param_dtype())
        return 2.0 * torch.sigmoid(self.logits(x))

    def _param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def register_gate_kind(name: str) -> Callable[[G], G]:
    """Class decorator: register a ``Gate`` subclass under ``name``; a name can be registered only once."""

    def deco(cls: G) -> G:
        if name in GATE_KINDS:
            raise WorkbenchError(
                f"gate kind '{name}' is already registered (by {GATE_KINDS[name].__qualname__})"
            )
        if not (isinstance(cls, type) and issubclass(cls, Gate)):
            raise WorkbenchError(f"gate kind '{name}' must be a subclass of gating.Gate, got {cls!r}")
        own = cls.__dict__
        if "sites" in own and "placements" not in own:  # a kind written with the old attribute name
            cls.placements = tuple(cls.sites)
        bad = [p for p in cls.placements if p not in GATE_PLACEMENTS]
        if bad:
            raise WorkbenchError(
                f"gate kind '{name}' names unknown placements {bad}; choose from: {', '.join(GATE_PLACEMENTS)}"
            )
        cls.sites = tuple(cls.placements)
        cls.kind = name
        GATE_KINDS[name] = cls
        return cls

    return deco


def gate_class(name: str) -> type[Gate]:
    from . import kinds  # noqa: F401  (registers the shipped kinds)

    if name not in GATE_KINDS:
        raise WorkbenchError(f"unknown gate kind '{name}'; known kinds: {', '.join(sorted(GATE_KINDS))}")
    return GATE_KINDS[name]
