"""The alignment-gating reference checkpoint: read it as a ``GateSet``, write a ``GateSet`` back in its layout.

The reference code (a modified Qwen3 modelling file) gives every attention module a
``gate_proj_myself = nn.Linear(hidden_size, num_heads * head_dim, bias=True)`` fed with the attention's input
(the hidden state after ``input_layernorm``) and multiplies the per-head attention output, before ``o_proj``,
by ``g = 2 * sigmoid(gate_proj_myself(x))`` viewed as ``[batch, pos, num_heads, head_dim]``; its "inversion"
variant multiplies by ``2 - g``. The trained gates are saved with ``torch.save`` as a plain state dict::

    model.layers.{i}.self_attn.gate_proj_myself.weight   [num_heads * head_dim, hidden_size]
    model.layers.{i}.self_attn.gate_proj_myself.bias     [num_heads * head_dim]

That is exactly the workbench's ``input_dependent`` kind at placement ``attn`` (``proj.weight``, ``proj.bias``;
channel ``h * head_dim + d`` on both sides), and the inversion is ``alpha = -1`` (``max(0, 1 - (g - 1)) = 2 - g``
since ``g <= 2``). Layers absent from a checkpoint get no gate, which is what an identity gate does.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench import ModelLike, WorkbenchError
from workbench.io import atomic_path, check_regular_file, one_line
from workbench.options import printable

from ._gateset import GateSet, placement_channels

#: ``[prefix]layers.{i}.self_attn.gate_proj_myself.{weight,bias}``; the prefixes are the reference's own
#: (``model.``), a PEFT wrapper's (``base_model.model.model.``) and DDP's (``module.``).
REFERENCE_KEY = re.compile(
    r"^(?P<prefix>(?:module\.)?(?:base_model\.model\.)?(?:model\.)?)"
    r"layers\.(?P<layer>0|[1-9][0-9]{0,5})\.self_attn\.gate_proj_myself\.(?P<name>weight|bias)$"
)
REFERENCE_FORMAT = "alignment-gating reference (gate_proj_myself)"
TORCH_SUFFIXES = (".pth", ".pt", ".bin")
SAFETENSORS_SUFFIX = ".safetensors"
_KEY_HELP = (
    "a reference gate checkpoint holds only 'model.layers.{i}.self_attn.gate_proj_myself.weight' and '.bias' "
    "(the prefix 'model.' may also be '', 'base_model.model.model.' or start with 'module.')"
)


def reference_key(layer: int, name: str, prefix: str = "model.") -> str:
    """The reference's state-dict key of one gate parameter (``name``: ``weight`` or ``bias``)."""
    return f"{prefix}layers.{layer}.self_attn.gate_proj_myself.{name}"


def is_reference_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True for a ``.pth``/``.pt``/``.bin`` file (the workbench writes gates only as safetensors artifacts), or a
    safetensors file without workbench metadata whose keys are reference gate keys. Reads no tensor data."""
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        return p.is_file()
    if suffix != SAFETENSORS_SUFFIX or not p.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
            keys = list(fh.keys())
    except Exception:  # a damaged file: let the ordinary loader say what is wrong with it
        return False
    if any(k.startswith("workbench.") for k in header):
        return False
    return any(REFERENCE_KEY.match(k) for k in keys)


def _read_tensors(p: Path) -> Mapping[str, Any]:
    suffix = p.suffix.lower()
    if suffix in TORCH_SUFFIXES:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:  # an unsafe pickle (code in it), a damaged or foreign file
            raise WorkbenchError(
                f"'{p}' is not a plain tensor checkpoint that loads with weights_only=True "
                f"({type(exc).__name__}: {one_line(str(exc), 160)})"
            ) from None
        if not isinstance(obj, Mapping):
            raise WorkbenchError(
                f"'{p}' holds a {type(obj).__name__}, expected a state dict (a mapping of key -> tensor)"
            )
        return obj
    if suffix == SAFETENSORS_SUFFIX:
        from safetensors import safe_open

        try:
            with safe_open(str(p), framework="pt") as fh:
                return {k: fh.get_tensor(k) for k in fh.keys()}
        except Exception as exc:  # safetensors raises several error types for damaged files
            raise WorkbenchError(
                f"'{p}' is not a readable safetensors file ({type(exc).__name__}: {one_line(str(exc), 160)})"
            ) from None
    raise WorkbenchError(
        f"'{p}': unknown checkpoint suffix '{printable(p.suffix)}'; accepted: "
        f"{', '.join(TORCH_SUFFIXES)} (torch.save state dict) or {SAFETENSORS_SUFFIX}"
    )


def _parse(p: Path, state: Mapping[str, Any]) -> dict[int, dict[str, tuple[str, Tensor]]]:
    """``{layer: {"weight": (key, W), "bias": (key, b)}}``; refuses unknown keys, non-tensors, a key given twice."""
    if not state:
        raise WorkbenchError(f"'{p}' holds no tensors; {_KEY_HELP}")
    found: dict[int, dict[str, tuple[str, Tensor]]] = {}
    first: dict[tuple[int, str], str] = {}
    for key, value in state.items():
        shown = printable(one_line(str(key), 120))
        m = REFERENCE_KEY.match(key) if isinstance(key, str) else None
        if m is None:
            raise WorkbenchError(f"'{p}': unknown key '{shown}'; {_KEY_HELP}")
        layer, name = int(m["layer"]), m["name"]
        if (layer, name) in first:
            raise WorkbenchError(
                f"'{p}': layer {layer} {name} is given twice ('{printable(first[layer, name])}' and '{shown}')"
            )
        first[layer, name] = key
        if not isinstance(value, Tensor):
            raise WorkbenchError(f"'{p}': key '{shown}' holds a {type(value).__name__}, expected a tensor")
        if not value.is_floating_point():
            raise WorkbenchError(
                f"'{p}': key '{shown}' holds a {value.dtype} tensor, expected floating point"
            )
        found.setdefault(layer, {})[name] = (key, value)
    for layer, pair in sorted(found.items()):
        missing = {"weight", "bias"} - set(pair)
        if missing:
            ((key, _),) = pair.values()
            raise WorkbenchError(
                f"'{p}': key '{printable(key)}' has no matching {missing.pop()} "
                f"(layer {layer}: every gate needs both weight and bias)"
            )
    return found


def load_reference_gates(path: str | os.PathLike[str], lm: ModelLike) -> GateSet:
    """Read an alignment-gating reference checkpoint (``gating_params.pth``) as ``input_dependent`` gates at ``attn``.

    ``.pth``/``.pt``/``.bin`` files are read with ``torch.load(weights_only=True)`` (a pickle that would run code
    is refused), ``.safetensors`` files with safetensors. Keys may carry the prefix ``model.`` (the reference's),
    none, ``base_model.model.model.`` (PEFT) or ``module.``. Every key must be a gate weight or bias, every gate
    needs both, at a layer of ``lm``, with shapes ``[n_heads * d_head, d_model]`` and ``[n_heads * d_head]``;
    anything else is a one-line ``WorkbenchError`` naming the file and key. Layers absent from the file get no
    gate (the same as an identity gate). The checkpoint carries no model fingerprint: only its shapes are checked
    against ``lm``, whose fingerprint the gates then take (``metadata['provenance']`` says so).
    """
    p = check_regular_file(path)
    found = _parse(p, _read_tensors(p))
    sm = lm.sites
    bad = sorted(l for l in found if l >= sm.n_layers)
    if bad:
        raise WorkbenchError(
            f"'{p}': gates at layer(s) {bad}, but the model has {sm.n_layers} layers (0..{sm.n_layers - 1})"
        )
    layers = sorted(found)
    widths = {placement_channels(lm, "attn", l) for l in layers}
    if len(widths) != 1:
        raise WorkbenchError(
            f"'{p}': the model's gated layers have different attention widths {sorted(widths)}"
        )
    channels = widths.pop()
    for layer in layers:
        for name, shape in (("weight", (channels, sm.d_model)), ("bias", (channels,))):
            key, t = found[layer][name]
            shown = printable(key)
            if tuple(t.shape) != shape:
                raise WorkbenchError(
                    f"'{p}': key '{shown}' has shape {list(t.shape)}, expected {list(shape)} "
                    f"(n_heads * d_head = {channels}, d_model = {sm.d_model} for this model)"
                )
            if not bool(torch.isfinite(t).all()):
                raise WorkbenchError(f"'{p}': key '{shown}' holds NaN or infinite values")
    gates = GateSet(
        "input_dependent",
        ("attn",),
        layers,
        d_in=sm.d_model,
        channels={"attn": channels},
        n_heads=sm.n_heads,
        fingerprint=lm.fingerprint,
    )
    with torch.no_grad():
        for layer in layers:
            proj: Any = gates.gate("attn", layer).proj
            proj.weight.copy_(found[layer]["weight"][1].float())
            proj.bias.copy_(found[layer]["bias"][1].float())
    gates.metadata = {
        "source_format": REFERENCE_FORMAT,
        "source_file": str(p),
        "source_fingerprint": None,
        "provenance": (
            "imported from an alignment-gating reference checkpoint (no fingerprint); only its shapes were "
            f"checked against the model ({len(layers)} gated layers of {sm.n_layers})"
        ),
    }
    return gates.to(lm.device)


def export_reference_gates(gates: GateSet, path: str | os.PathLike[str], *, prefix: str = "model.") -> Path:
    """Write ``gates`` in the reference layout: safetensors for ``.safetensors``, ``torch.save`` of a plain dict of
    float32 tensors for ``.pth``/``.pt`` (what the reference code's ``load_state_dict(strict=False)`` takes).

    Only ``input_dependent`` gates at ``attn`` alone have that layout; other kinds or placements are refused.
    ``prefix`` is put before ``layers.{i}`` (the reference's ``model.``, or ``base_model.model.model.`` for a
    PEFT-wrapped model, or ``''``). The write is atomic (temp file + rename).
    """
    if gates.kind != "input_dependent" or tuple(gates.placements) != ("attn",):
        raise WorkbenchError(
            f"the reference checkpoint holds only input_dependent gates at site 'attn'; these are "
            f"'{gates.kind}' gates at {list(gates.placements)}"
            + (" (save the attn gates as their own GateSet)" if gates.kind == "input_dependent" else "")
        )
    if prefix and not REFERENCE_KEY.match(reference_key(0, "bias", prefix)):
        raise WorkbenchError(
            f"prefix '{printable(prefix)}' is not one the reference layout uses; choose 'model.', '', "
            "'base_model.model.model.' or one of them after 'module.'"
        )
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in (*TORCH_SUFFIXES, SAFETENSORS_SUFFIX):
        raise WorkbenchError(
            f"'{target}': choose the format by suffix: {SAFETENSORS_SUFFIX} (safetensors) or "
            f"{', '.join(TORCH_SUFFIXES[:2])} (torch.save, loadable by the reference code)"
        )
    tensors: dict[str, Tensor] = {}
    for _, layer, gate in gates.items():
        proj: Any = gate.proj
        tensors[reference_key(layer, "weight", prefix)] = (
            proj.weight.detach().float().cpu().clone().contiguous()
        )
        tensors[reference_key(layer, "bias", prefix)] = proj.bias.detach().float().cpu().clone().contiguous()
    with atomic_path(target) as tmp:
        if suffix == SAFETENSORS_SUFFIX:
            from safetensors.torch import save_file

            save_file(tensors, str(tmp), metadata={"format": "pt", "source_format": REFERENCE_FORMAT})
        else:
            torch.save(tensors, str(tmp))
    return target
