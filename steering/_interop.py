"""Steering inside other libraries' forward passes: an nnsight trace and TransformerLens bridge hooks.

Both apply the same edit as :class:`steering.Steerer` (``add``, ``ablate`` or ``ablate_add`` at one
layer's ``hook_resid_post``, every position) so results can be compared across libraries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from workbench import WorkbenchError
from workbench._sites import SiteMap

from ._steerer import MODES, _Edit, _matrix


def _direction(vector: Any, layer: int, d_model: int | None = None) -> Tensor:
    """The raw direction of ``vector`` at ``layer`` as float32 ``[d_model]``."""
    if hasattr(vector, "vectors") and hasattr(vector, "layer"):
        d = vector.layer(layer)
    elif isinstance(vector, Tensor) and vector.dim() == 1:
        d = vector
    elif isinstance(vector, Tensor) and vector.dim() == 2:
        if not 0 <= layer < vector.shape[0]:
            raise WorkbenchError(f"layer {layer} is out of range for a vector with {vector.shape[0]} layers")
        d = vector[layer]
    else:
        raise WorkbenchError(
            "a steering vector must be a PersonaVector or a [d_model] / [n_layers, d_model] tensor"
        )
    d = d.detach().to("cpu", torch.float32)
    if d_model is not None and d.shape[-1] != d_model:
        raise WorkbenchError(f"steering vector has width {d.shape[-1]} but the model's d_model is {d_model}")
    return d


def _edit(direction: Tensor, alpha: float, mode: str, normalize: bool) -> _Edit:
    if mode not in MODES:
        raise WorkbenchError(f"unknown steering mode '{mode}'; expected one of {', '.join(MODES)}")
    return _Edit(direction, float(alpha), mode, "all", normalize)


def nnsight_steer(
    nn_model: Any, vector: Any, layer: int, alpha: float, *, mode: str = "add", normalize: bool = False
) -> None:
    """Steer decoder layer ``layer``'s output inside an nnsight trace (call it in the ``with`` body).

    >>> wrapped = nnsight.TransformersModel(lm.model, tokenizer=lm.tokenizer)   # doctest: +SKIP
    >>> with wrapped.trace(input_ids):                                          # doctest: +SKIP
    ...     nnsight_steer(wrapped, vector, layer=12, alpha=4.0)
    ...     logits = wrapped.output.logits.save()

    Works with nnsight 0.8 (``TransformersModel``; ``LanguageModel`` also). nnsight reads the trace body
    from its source file, so run it from a file or notebook, not from standard input.
    """
    module = getattr(nn_model, "_module", None)
    if module is None:
        raise WorkbenchError("nnsight_steer needs an nnsight model wrapper (nnsight.TransformersModel(...))")
    sites = SiteMap.for_model(module)
    sites.check_layer(layer)
    edit = _edit(_matrix(vector, sites, None)[layer], alpha, mode, normalize)  # checks width and layers
    envoy = nn_model
    for part in sites.adapter.layers.split("."):
        envoy = getattr(envoy, part)
    target = envoy[layer]
    out = target.output
    if isinstance(out, tuple):
        target.output = (edit.apply(out[0], None), *out[1:])
    else:
        target.output = edit.apply(out, None)


def tl_hooks(
    vector: Any,
    layer: int,
    alpha: float,
    *,
    mode: str = "add",
    normalize: bool = False,
    site: str = "hook_resid_post",
) -> list[tuple[str, Callable[..., Tensor]]]:
    """Forward hooks for a TransformerLens model or ``TransformerBridge``: ``bridge.run_with_hooks(x,
    fwd_hooks=tl_hooks(vector, 12, 4.0))``. TransformerLens names the same sites as the workbench."""
    edit = _edit(_direction(vector, layer), alpha, mode, normalize)
    width = edit.vec.shape[-1]

    def hook(tensor: Tensor, hook: Any = None) -> Tensor:
        if tensor.shape[-1] != width:
            raise WorkbenchError(f"steering vector has width {width} but {site} has width {tensor.shape[-1]}")
        return edit.apply(tensor, None)

    return [(f"blocks.{layer}.{site}", hook)]
