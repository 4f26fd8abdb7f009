"""Steering inside other libraries' forward passes: an nnsight trace and TransformerLens bridge hooks.

Both apply the same edit as :class:`steering.Steerer` (``add``, ``ablate`` or ``ablate_add`` at one
layer's ``hook_resid_post``, every position) so results can be compared across libraries.
``nnsight_model`` wraps a model for nnsight for one ``with`` block and leaves the caller's model and
tokenizer as they were (nnsight itself left-pads the tokenizer it is given and patches every module's
``forward``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from workbench import MissingPackageError, ModelLike, SiteMap, WorkbenchError

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


_NNSIGHT_PREFIX = "__nnsight"  # nnsight keeps its per-module state in ``module.__dict__["__nnsight__"]``


@contextlib.contextmanager
def nnsight_model(lm: ModelLike | nn.Module, tokenizer: Any = None) -> Iterator[Any]:
    """An nnsight wrapper of ``lm`` (a ``LoadedModel`` or an HF model) for one ``with`` block.

    nnsight makes edits of its own when it wraps a model: it sets the tokenizer it is given to
    ``padding_side="left"`` (and a pad token if there is none) and installs an instance ``forward`` on
    every module. This wrapper gives nnsight a copy of the tokenizer (``tokenizer``, else ``lm.tokenizer``)
    and, on exit, even after an exception, puts back each module's ``forward``, removes nnsight's state
    and restores each module's ``training`` flag; it adds no hooks. The wrapper is for use inside the
    block only.

    >>> with nnsight_model(lm) as wrapped:                                   # doctest: +SKIP
    ...     with wrapped.trace(input_ids):
    ...         nnsight_steer(wrapped, vector, layer=12, alpha=4.0)
    ...         logits = wrapped.output.logits.save()
    """
    try:
        import nnsight
    except ImportError as exc:
        raise MissingPackageError("nnsight", "pip install nnsight", "steering inside nnsight traces") from exc
    wrapper_cls = getattr(nnsight, "TransformersModel", None) or nnsight.LanguageModel  # 0.8+, else older
    # a LoadedModel's .model; an HF model is itself the module (its own .model is the inner stack)
    model = lm if isinstance(lm, torch.nn.Module) else getattr(lm, "model", None)
    if not isinstance(model, torch.nn.Module):
        raise WorkbenchError(f"nnsight_model needs a LoadedModel or a torch module, got {type(lm).__name__}")
    if tokenizer is None:
        tokenizer = getattr(lm, "tokenizer", None)
    saved = [(m, m.training, dict(m.__dict__)) for m in model.modules()]
    try:
        yield wrapper_cls(model, tokenizer=copy.deepcopy(tokenizer) if tokenizer is not None else None)
    finally:
        for module, training, before in saved:
            now = module.__dict__
            for key in [k for k in now if k.startswith(_NNSIGHT_PREFIX) and k not in before]:
                del now[key]
            if "forward" in before:
                now["forward"] = before["forward"]
            else:
                now.pop("forward", None)
            module.training = training


def nnsight_steer(
    nn_model: Any, vector: Any, layer: int, alpha: float, *, mode: str = "add", normalize: bool = False
) -> None:
    """Steer decoder layer ``layer``'s output inside an nnsight trace (call it in the ``with`` body).

    >>> with nnsight_model(lm) as wrapped:                                   # doctest: +SKIP
    ...     with wrapped.trace(input_ids):
    ...         nnsight_steer(wrapped, vector, layer=12, alpha=4.0)
    ...         logits = wrapped.output.logits.save()

    Works with nnsight 0.8 (``TransformersModel``; ``LanguageModel`` also). ``nnsight_model`` leaves the
    caller's model and tokenizer unchanged; wrapping with ``nnsight.TransformersModel(lm.model,
    tokenizer=lm.tokenizer)`` directly left-pads ``lm.tokenizer`` for good. The edit itself lives only
    inside the trace. nnsight reads the trace body from its source file, so run it from a file or
    notebook, not from standard input.
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
