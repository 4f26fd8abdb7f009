"""Activation steering at inference, in scoring and in training: add, ablate or replace a direction.

``Steerer`` installs one out-of-place edit per steered site through :func:`workbench.intervene` and one
pre-hook on the decoder body that records the current ``attention_mask`` (so padding is never steered);
all of them are removed in ``finally``, also after an exception.

Edits, with ``v`` the vector at a layer (scaled to unit norm first when ``normalize=True``) and
``u = v / |v|``::

    add          x + alpha * v
    ablate       x - (x . u) u                  (alpha unused; the component along u becomes 0)
    ablate_add   x - (x . u) u + alpha * v      (the component along u becomes alpha * |v| everywhere)

Units of ``alpha``: it multiplies the vector as given, as in the persona-vectors paper, where a persona
vector is a raw difference of mean activations. ``normalize=True`` makes ``alpha`` an absolute length in
the residual stream instead (compare it with the residual norm at that layer, ~100-400 at SmolLM2's
middle layers).

Positions, per forward call ``x: [batch, pos, d_model]``:

* ``all``: every non-padding position.
* without a position mask (generation with a KV cache): a call with ``pos > 1`` is the prefill (the
  prompt); a call with ``pos == 1`` is a decoding step (one new response token per row). ``prompt``
  steers only the prefill, ``response`` only the decoding steps. This is decided from the tensor's
  shape, so it costs no host synchronisation per token. It assumes plain HF ``generate`` (one prefill,
  then one token per step); a prompt of a single token would count as a response step.
* with a position mask ``[batch, pos]`` (``mask=`` or :meth:`Steerer.set_mask`, for teacher-forced
  batches in training or scoring; True on the assistant span): ``response`` steers the masked
  positions, ``prompt`` the unmasked non-padding ones. Every forward call must then have that shape.

Padding comes from the ``attention_mask`` the model is called with (its last ``pos`` columns, which
covers left padding in generation and right padding in teacher forcing). Without an attention mask every
position counts as real. ``alpha`` may be a tensor ``[batch]``: one coefficient per batch row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from workbench import ModelFingerprint, ModelLike, SiteMap, WorkbenchError, intervene
from workbench.adapters import unwrap_model
from workbench.options import check_finite_tensor, check_number

MODES = ("add", "ablate", "ablate_add")
POSITIONS = ("all", "prompt", "response")
STEERABLE_SITES = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "hook_mlp_out")
DEFAULT_SITE = "hook_resid_post"

Layers = int | Sequence[int] | str
Alpha = float | Tensor


@dataclass(frozen=True)
class SteeringSpec:
    """One steering instruction: which vector, where, how strongly and on which tokens.

    vector:    a ``PersonaVector`` (or anything with ``.vectors [n_layers, d_model]`` and ``.layer(l)``),
               or a tensor ``[d_model]`` (the same direction at every layer) or ``[n_layers, d_model]``.
    layers:    a layer index, a list of them, or ``"all"``.
    alpha:     the coefficient; a float, or a tensor ``[batch]`` with one coefficient per batch row.
    mode:      ``add``, ``ablate`` or ``ablate_add`` (see the module docstring).
    positions: ``all``, ``prompt`` or ``response``.
    site:      the site kind steered at each layer (``hook_resid_post`` unless the vector says otherwise).
    normalize: scale each layer's vector to unit norm before multiplying by ``alpha``.
    """

    vector: Any
    layers: Layers = "all"
    alpha: Alpha = 4.0
    mode: str = "add"
    positions: str = "all"
    site: str | None = None
    normalize: bool = False


def _is_vector_like(obj: Any) -> bool:
    return hasattr(obj, "vectors") and hasattr(obj, "layer")


def _site_kind(spec: SteeringSpec) -> str:
    site = spec.site or getattr(spec.vector, "site", None) or DEFAULT_SITE
    if site not in STEERABLE_SITES:
        raise WorkbenchError(
            f"cannot steer site '{site}'; steerable site kinds (width d_model): {', '.join(STEERABLE_SITES)}"
            + (
                " (give the layer through layers=, not in the site name)"
                if site.startswith("blocks.")
                else ""
            )
        )
    return site


def _layer_list(layers: Layers, sites: SiteMap) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise WorkbenchError(f"layers must be an index, a list of indices or 'all', got '{layers}'")
        return list(range(sites.n_layers))
    if isinstance(layers, bool):
        raise WorkbenchError(f"layers must be an index, a list of indices or 'all', got {layers!r}")
    if isinstance(layers, int):
        layers = [layers]
    out = [sites.check_layer(int(l) if isinstance(l, Tensor) else l) for l in layers]
    if not out:
        raise WorkbenchError("no layers given to steer")
    return out


def _matrix(vector: Any, sites: SiteMap, fingerprint: Any) -> Tensor:
    """The vector as float32 ``[n_layers, d_model]`` (a ``[d_model]`` tensor is repeated at every layer)."""
    if _is_vector_like(vector):
        check = getattr(vector, "check_model", None)
        if callable(check) and fingerprint is not None:
            check(fingerprint)
        mat = vector.vectors
        name = f"'{getattr(vector, 'trait', 'steering')}' vector"
    elif isinstance(vector, Tensor):
        mat = vector
        name = "steering vector"
    else:
        raise WorkbenchError(
            f"a steering vector must be a PersonaVector or a tensor, got {type(vector).__name__}"
        )
    mat = mat.detach().to("cpu", torch.float32)
    if mat.dim() == 1:
        mat = mat[None].expand(sites.n_layers, -1)
    if mat.dim() != 2:
        raise WorkbenchError(
            f"{name} has shape {tuple(mat.shape)}; expected [d_model] or [n_layers, d_model]"
        )
    if mat.shape[-1] != sites.d_model:
        raise WorkbenchError(f"{name} has width {mat.shape[-1]} but the model's d_model is {sites.d_model}")
    if mat.shape[0] != sites.n_layers:
        raise WorkbenchError(
            f"{name} has {mat.shape[0]} layers but the model has {sites.n_layers}; "
            "pass one [d_model] direction or one row per layer"
        )
    if not torch.isfinite(mat).all():
        raise WorkbenchError(f"{name} contains NaN or infinite values")
    return mat


def _check_alpha(alpha: Alpha) -> Alpha:
    """A float or a ``[batch]`` tensor of finite coefficients (NaN or infinity would wreck every answer)."""
    if isinstance(alpha, Tensor):
        if alpha.dim() > 1:
            raise WorkbenchError(
                f"alpha must be a number or a [batch] tensor, got shape {tuple(alpha.shape)}"
            )
        check_finite_tensor(alpha, "alpha")
        return float(alpha) if alpha.dim() == 0 else alpha.detach()
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise WorkbenchError(f"alpha must be a number or a [batch] tensor, got {alpha!r}")
    return check_number(alpha, "alpha")


class _Edit:
    """One spec at one layer: the direction in every dtype/device it meets, and the edit itself."""

    def __init__(self, direction: Tensor, alpha: Alpha, mode: str, positions: str, normalize: bool):
        norm = direction.norm()
        self.vec = direction / norm.clamp_min(1e-12) if normalize else direction  # [d_model]
        self.unit = direction / norm.clamp_min(1e-12)  # [d_model]
        self.alpha = alpha
        self.mode = mode
        self.positions = positions
        self._cache: dict[tuple[Any, Any], tuple[Tensor, Tensor, Tensor | None]] = {}

    def _tensors(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        key = (x.device, x.dtype)
        hit = self._cache.get(key)
        if hit is None:
            alpha = self.alpha.to(x.device, x.dtype) if isinstance(self.alpha, Tensor) else None
            hit = (self.vec.to(x.device, x.dtype), self.unit.to(x.device), alpha)
            self._cache[key] = hit
        return hit

    def apply(self, x: Tensor, keep: Tensor | None) -> Tensor:  # x: [batch, pos, d_model]
        vec, unit32, alpha_t = self._tensors(x)
        if alpha_t is not None:
            if alpha_t.shape[0] != x.shape[0]:
                raise WorkbenchError(
                    f"alpha has {alpha_t.shape[0]} coefficients (one per row) but the batch has "
                    f"{x.shape[0]} rows"
                )
            scaled = alpha_t[:, None, None] * vec  # [batch, 1, d_model]
        else:
            scaled = self.alpha * vec  # [d_model]
        if self.mode == "add":
            delta = scaled
        else:
            proj = x.float() @ unit32  # [batch, pos]
            delta = -(proj[..., None] * unit32).to(x.dtype)  # [batch, pos, d_model]
            if self.mode == "ablate_add":
                delta = delta + scaled
        if keep is not None:
            delta = delta * keep[..., None].to(x.dtype)
        return x + delta


class _State:
    """What the body pre-hook saw last: the attention mask of the current forward call."""

    def __init__(self) -> None:
        self.attention_mask: Tensor | None = None
        self.position_mask: Tensor | None = None


def _body_module(model: nn.Module, sites: SiteMap) -> nn.Module:
    """The decoder body (e.g. ``model.model``): the module that receives ``attention_mask`` and runs the layers."""
    base = unwrap_model(model)
    prefix = sites.adapter.layers.rpartition(".")[0]
    return base.get_submodule(prefix) if prefix else base


class _ModelView:
    """A bare HF (or PEFT) model seen as a LoadedModel: ``.model``, ``.sites``, ``.fingerprint``."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.sites = SiteMap.for_model(model)
        self.fingerprint = ModelFingerprint.of(model, self.sites)


def as_loaded(model: Any) -> Any:
    """A ``LoadedModel`` as is; a bare ``nn.Module`` wrapped so that its sites can be resolved."""
    if hasattr(model, "sites") and hasattr(model, "model"):
        return model
    if isinstance(model, nn.Module):
        return _ModelView(model)
    raise WorkbenchError(f"expected a LoadedModel or a torch model, got {type(model).__name__}")


def _as_specs(vector: Any, defaults: dict[str, Any]) -> list[SteeringSpec]:
    """One spec, or a list of specs / ``(vector, layers, alpha)`` tuples (other fields from ``defaults``)."""
    if isinstance(vector, SteeringSpec):
        return [vector]
    if isinstance(vector, (list, tuple)) and not isinstance(vector, Tensor):
        specs = []
        for i, item in enumerate(vector):
            if isinstance(item, SteeringSpec):
                specs.append(item)
            elif isinstance(item, tuple) and 1 <= len(item) <= 3:
                fields = dict(defaults)
                fields.update(zip(("vector", "layers", "alpha"), item, strict=False))
                specs.append(SteeringSpec(**fields))
            else:
                raise WorkbenchError(
                    f"steering item {i} must be a SteeringSpec or a (vector, layers, alpha) tuple, "
                    f"got {type(item).__name__}"
                )
        if not specs:
            raise WorkbenchError("no steering vectors given")
        return specs
    return [SteeringSpec(vector=vector, **defaults)]


class Steerer:
    """Steer a model along one or several vectors while the ``with`` block runs.

    >>> with Steerer(lm, vector, layers=[12], alpha=4.0):          # doctest: +SKIP
    ...     out = lm.model.generate(**enc, max_new_tokens=40)
    >>> specs = [SteeringSpec(evil, [10], 4.0), SteeringSpec(syco, [14], -2.0, mode="ablate_add")]
    >>> with Steerer(lm, specs):                                     # doctest: +SKIP
    ...     logits = lm.model(**batch).logits

    ``lm`` is a ``LoadedModel`` (or a bare HF/PEFT model). ``vector`` is one vector (see
    :class:`SteeringSpec`), a ``SteeringSpec``, or a list of specs or ``(vector, layers, alpha)`` tuples;
    the keyword arguments are the defaults for what a tuple leaves out. Specs at the same site are applied
    in list order. ``mask`` is a ``[batch, pos]`` position mask (True on the assistant span) for
    teacher-forced batches; change it between batches with :meth:`set_mask`. ``training_only`` leaves
    forward passes run in eval mode untouched (see :class:`PreventiveSteering`).

    The vector itself is a constant: gradients flow through the edit to the inputs and to trainable
    parameters (LoRA), never into the vector. Edits are out-of-place, so they are safe under autograd and
    gradient checkpointing (the recomputed forward sees the same masks as long as each backward follows
    its own forward). A Steerer can be entered again after it exits, but not twice at once.
    """

    def __init__(
        self,
        lm: ModelLike | nn.Module,
        vector: Any,
        layers: Layers = "all",
        alpha: Alpha = 4.0,
        *,
        site: str | None = None,
        positions: str = "all",
        mode: str = "add",
        normalize: bool = False,
        mask: Tensor | None = None,
        training_only: bool = False,
    ):
        self.lm = as_loaded(lm)
        defaults = dict(
            layers=layers, alpha=alpha, mode=mode, positions=positions, site=site, normalize=normalize
        )
        self.specs = _as_specs(vector, defaults)
        self.training_only = training_only
        self._state = _State()
        self._stack: contextlib.ExitStack | None = None
        self._edits = self._resolve()
        self.set_mask(mask)

    # -- set-up ----------------------------------------------------------------------------------
    def _resolve(self) -> dict[str, list[_Edit]]:
        sites: SiteMap = self.lm.sites
        fingerprint = getattr(self.lm, "fingerprint", None)
        edits: dict[str, list[_Edit]] = {}
        for spec in self.specs:
            if spec.mode not in MODES:
                raise WorkbenchError(
                    f"unknown steering mode '{spec.mode}'; expected one of {', '.join(MODES)}"
                )
            if spec.positions not in POSITIONS:
                raise WorkbenchError(
                    f"unknown positions '{spec.positions}'; expected one of {', '.join(POSITIONS)}"
                )
            kind = _site_kind(spec)
            alpha = _check_alpha(spec.alpha)
            mat = _matrix(spec.vector, sites, fingerprint)
            for layer in _layer_list(spec.layers, sites):
                direction = mat[layer]
                if spec.mode != "add" and float(direction.norm()) == 0.0:
                    raise WorkbenchError(f"cannot ablate a zero vector (layer {layer})")
                edit = _Edit(direction, alpha, spec.mode, spec.positions, spec.normalize)
                edits.setdefault(f"blocks.{layer}.{kind}", []).append(edit)
        return edits

    @property
    def sites(self) -> list[str]:
        """The hook sites this steerer edits."""
        return list(self._edits)

    def set_mask(self, mask: Tensor | None) -> None:
        """Set (or clear with ``None``) the ``[batch, pos]`` position mask: True on assistant tokens."""
        if mask is not None:
            if not isinstance(mask, Tensor) or mask.dim() != 2:
                shape = tuple(mask.shape) if isinstance(mask, Tensor) else type(mask).__name__
                raise WorkbenchError(f"the position mask must be a [batch, pos] tensor, got {shape}")
            mask = mask.detach().to(torch.bool)
        self._state.position_mask = mask

    # -- the hooks -------------------------------------------------------------------------------
    def _keep(self, x: Tensor, positions: str, pad: Tensor | None) -> Tensor | None | bool:
        """Which positions of ``x`` to steer: a bool ``[batch, pos]``, ``None`` (all) or False (none)."""
        if positions == "all":
            return pad
        pm = self._state.position_mask
        if pm is not None:
            if tuple(pm.shape) != tuple(x.shape[:2]):
                raise WorkbenchError(
                    f"the position mask has shape {tuple(pm.shape)} but this forward call has "
                    f"[batch, pos] = {list(x.shape[:2])}; set a mask for each batch with set_mask()"
                )
            pm = pm.to(x.device)
            keep = pm if positions == "response" else ~pm
            return keep if pad is None else keep & pad
        decoding = x.shape[1] == 1
        if (positions == "response") != decoding:
            return False
        return pad

    def _pad(self, x: Tensor) -> Tensor | None:
        am = self._state.attention_mask
        if am is None or am.dim() != 2 or am.shape[0] != x.shape[0] or am.shape[1] < x.shape[1]:
            return None
        return am[:, -x.shape[1] :].to(x.device, torch.bool)

    def _site_fn(self, edits: list[_Edit], layer_module: nn.Module):
        def fn(x: Tensor) -> Tensor:  # [batch, pos, d_model]
            if self.training_only and not layer_module.training:
                return x
            pad = self._pad(x)
            for e in edits:
                keep = self._keep(x, e.positions, pad)
                if keep is False:
                    continue
                x = e.apply(x, keep)  # type: ignore[arg-type]
            return x

        return fn

    def _on_body(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        am = kwargs.get("attention_mask")
        self._state.attention_mask = am if isinstance(am, Tensor) else None

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> Steerer:
        if self._stack is not None:
            raise WorkbenchError("this Steerer is already active; a Steerer cannot be entered twice at once")
        sites: SiteMap = self.lm.sites
        stack = contextlib.ExitStack()
        try:
            body = _body_module(self.lm.model, sites)
            handle = body.register_forward_pre_hook(self._on_body, with_kwargs=True)
            stack.callback(handle.remove)
            fns = {}
            for site, edits in self._edits.items():
                layer, _ = sites.parse(site)
                fns[site] = self._site_fn(edits, sites.layers[layer])
            stack.enter_context(intervene(self.lm, fns))
        except BaseException:
            stack.close()
            raise
        self._stack = stack
        return self

    def __exit__(self, *exc: Any) -> None:
        stack, self._stack = self._stack, None
        self._state.attention_mask = None
        if stack is not None:
            stack.close()

    def __repr__(self) -> str:
        parts = []
        for s in self.specs:
            a = f"tensor[{s.alpha.shape[0]}]" if isinstance(s.alpha, Tensor) else f"{float(s.alpha):g}"
            parts.append(f"{s.mode}(layers={s.layers}, alpha={a}, positions={s.positions})")
        return f"Steerer({', '.join(parts)}, active={self._stack is not None})"


def unit_direction(vector: Any, layer: int, sites: SiteMap, fingerprint: Any = None) -> Tensor:
    """The unit direction of ``vector`` at ``layer``: float32 ``[d_model]`` (checks width and layer)."""
    sites.check_layer(layer)
    d = _matrix(vector, sites, fingerprint)[layer]
    return d / d.norm().clamp_min(1e-12)


def layer_vector(vector: Any, layer: int, sites: SiteMap, fingerprint: Any = None) -> Tensor:
    """The raw vector at ``layer``: float32 ``[d_model]`` (checks width and layer)."""
    sites.check_layer(layer)
    return _matrix(vector, sites, fingerprint)[layer].clone()
