"""The alpha control: ``g_alpha = max(0, 1 + alpha * (g - 1))``.

alpha = 1 is the trained gate, 0 switches it off (identity), -1 suppresses (``2 - g``), > 1 amplifies.

Accepted forms of ``alpha``:

- a number: the same coefficient at every gated layer;
- a mapping ``{layer: alpha}``: per layer; gated layers missing from the mapping are off (alpha 0);
- a list or tuple of ``n_layers`` numbers: per layer (index = layer);
- a 1-D tensor of shape ``[batch]``: one coefficient per batch row, at every gated layer;
- a 2-D tensor of shape ``[n_layers, batch]`` (or ``[n_layers, 1]``): per layer and per row.

Mapping values may themselves be numbers or ``[batch]`` tensors. A per-row tensor must have as many
rows as the batch that runs through the model (or one row, which broadcasts).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from workbench import WorkbenchError
from workbench.options import check_finite_tensor

AlphaSpec = float | int | Mapping[int, float | Tensor] | Sequence[float] | Tensor
LayerAlpha = float | Tensor  # a number, or a [batch] tensor


def _one(value: object, where: str) -> LayerAlpha:
    if isinstance(value, Tensor):
        if value.dim() > 1:
            raise WorkbenchError(
                f"{where}: a per-row alpha must be a 1-D [batch] tensor, got shape {tuple(value.shape)}"
            )
        check_finite_tensor(value, f"{where}: alpha")
        return float(value.item()) if value.dim() == 0 else value.detach().float()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WorkbenchError(f"{where}: alpha must be a number or a tensor, got {value!r}")
    if not math.isfinite(value):
        raise WorkbenchError(f"{where}: alpha must be a finite number, got {value:g}")
    return float(value)


def resolve_alpha(alpha: AlphaSpec, gated_layers: Sequence[int], n_layers: int) -> dict[int, LayerAlpha]:
    """Per gated layer: a float or a ``[batch]`` tensor."""
    layers = list(gated_layers)
    if isinstance(alpha, Tensor):
        if alpha.dim() <= 1:
            v = _one(alpha, "alpha")
            return {l: v for l in layers}
        if alpha.dim() == 2 and alpha.shape[0] == n_layers:
            return {l: _one(alpha[l], f"alpha[{l}]") for l in layers}
        raise WorkbenchError(
            f"alpha tensor of shape {tuple(alpha.shape)} is not understood; use [batch] (per row) or "
            f"[n_layers={n_layers}, batch] (per layer and row); per-layer numbers go in a dict or list"
        )
    if isinstance(alpha, Mapping):
        out: dict[int, LayerAlpha] = {}
        for key, value in alpha.items():
            try:
                layer = int(key)
            except (TypeError, ValueError) as exc:
                raise WorkbenchError(f"alpha mapping keys must be layer indices, got {key!r}") from exc
            if layer not in layers:
                raise WorkbenchError(
                    f"alpha given for layer {layer}, which has no gates (gated layers: {layers})"
                )
            out[layer] = _one(value, f"alpha[{layer}]")
        return {l: out.get(l, 0.0) for l in layers}
    if isinstance(alpha, (list, tuple)):
        if len(alpha) != n_layers:
            raise WorkbenchError(
                f"a per-layer alpha list needs one value per layer ({n_layers}), got {len(alpha)}"
            )
        return {l: _one(alpha[l], f"alpha[{l}]") for l in layers}
    return {l: _one(alpha, "alpha") for l in layers}


def apply_alpha(g: Tensor, alpha: LayerAlpha, like: Tensor) -> Tensor:
    """``max(0, 1 + alpha * (g - 1))`` shaped to multiply ``like`` (``[batch, pos, channels]``)."""
    if isinstance(alpha, float):
        if alpha == 1.0:
            return g
        return torch.clamp(1.0 + alpha * (g - 1.0), min=0.0)
    rows = alpha.shape[0]
    if rows not in (1, like.shape[0]):
        raise WorkbenchError(f"per-row alpha has {rows} entries but the batch has {like.shape[0]} rows")
    a = alpha.to(device=g.device, dtype=g.dtype).reshape(rows, *([1] * (like.dim() - 1)))
    return torch.clamp(1.0 + a * (g - 1.0), min=0.0)
