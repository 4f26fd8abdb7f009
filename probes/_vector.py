"""The persona vector: one direction per layer in the residual stream, with provenance.

A ``PersonaVector`` is data: add, subtract and scale vectors, normalise them, save several statistics of
one extraction into a single safetensors artifact, import persona_vectors-style ``.pt`` tensors and
export llama.cpp control vectors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench import ModelFingerprint, WorkbenchError, load_artifact, save_artifact
from workbench._version import __version__

KIND = "persona_vector"
STATISTICS = ("response_avg", "prompt_avg", "prompt_last")
DEFAULT_SITE = "hook_resid_post"


def _check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise WorkbenchError(f"unknown statistic '{statistic}'; expected one of {', '.join(STATISTICS)}")


@dataclass
class PersonaVector:
    """One direction per layer: ``vectors[l]`` is for site ``blocks.{l}.hook_resid_post``.

    ``vectors``: float32 ``[n_layers, d_model]``. ``statistic`` says which activations were averaged:
    ``response_avg`` (answer tokens), ``prompt_avg`` (prompt tokens) or ``prompt_last`` (last prompt token).
    """

    vectors: Tensor  # [n_layers, d_model]
    trait: str
    statistic: str = "response_avg"
    site: str = DEFAULT_SITE
    fingerprint: ModelFingerprint | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.vectors, Tensor) or self.vectors.dim() != 2:
            shape = tuple(self.vectors.shape) if isinstance(self.vectors, Tensor) else type(self.vectors)
            raise WorkbenchError(f"a persona vector needs a [n_layers, d_model] tensor, got {shape}")
        self.vectors = self.vectors.detach().to("cpu", torch.float32)
        _check_statistic(self.statistic)
        fp = self.fingerprint
        if fp is not None and tuple(self.vectors.shape) != (fp.n_layers, fp.d_model):
            raise WorkbenchError(
                f"persona vector of shape {tuple(self.vectors.shape)} does not fit model {fp.short()} "
                f"(expected [{fp.n_layers}, {fp.d_model}])"
            )

    # -- shape -----------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return int(self.vectors.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.vectors.shape[1])

    def layer(self, index: int) -> Tensor:
        """The direction for ``blocks.{index}.hook_resid_post``: ``[d_model]``. Negative indices are refused."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < self.n_layers:
            raise WorkbenchError(
                f"layer {index!r} is out of range for this '{self.trait}' vector with {self.n_layers} layers "
                f"(valid: 0..{self.n_layers - 1})"
            )
        return self.vectors[index]

    def norms(self) -> Tensor:
        """L2 norm per layer: ``[n_layers]``."""
        return self.vectors.norm(dim=-1)

    def normalized(self) -> PersonaVector:
        """A copy with unit norm per layer (zero rows stay zero)."""
        n = self.norms().clamp_min(1e-12)[:, None]
        return self._with(self.vectors / n, op="normalized")

    def check_model(self, fingerprint: ModelFingerprint | None = None, d_model: int | None = None) -> None:
        """Refuse a model this vector does not fit (width, layer count, or fingerprint)."""
        if fingerprint is not None:
            if self.d_model != fingerprint.d_model:
                raise WorkbenchError(
                    f"'{self.trait}' vector has width {self.d_model} but the model's d_model is "
                    f"{fingerprint.d_model} ({fingerprint.short()})"
                )
            if self.n_layers != fingerprint.n_layers:
                raise WorkbenchError(
                    f"'{self.trait}' vector has {self.n_layers} layers but the model has "
                    f"{fingerprint.n_layers} ({fingerprint.short()})"
                )
            if self.fingerprint is not None and not self.fingerprint.compatible(fingerprint):
                raise WorkbenchError(
                    f"'{self.trait}' vector was made for another model: [{self.fingerprint.short()}] vs "
                    f"[{fingerprint.short()}]"
                )
        if d_model is not None and self.d_model != d_model:
            raise WorkbenchError(
                f"'{self.trait}' vector has width {self.d_model} but the model's d_model is {d_model}"
            )

    # -- arithmetic ------------------------------------------------------------------------------
    def _with(self, vectors: Tensor, op: str, fingerprint: ModelFingerprint | None = None) -> PersonaVector:
        meta = dict(self.metadata)
        meta["derived"] = [*meta.get("derived", []), op]
        return replace(self, vectors=vectors, fingerprint=fingerprint or self.fingerprint, metadata=meta)

    def _combine(self, other: Any, sign: float, op: str) -> PersonaVector:
        if not isinstance(other, PersonaVector):
            return NotImplemented
        if self.vectors.shape != other.vectors.shape:
            raise WorkbenchError(
                f"cannot {op} persona vectors of shapes {tuple(self.vectors.shape)} and "
                f"{tuple(other.vectors.shape)}"
            )
        a, b = self.fingerprint, other.fingerprint
        if a is not None and b is not None and not a.compatible(b):
            raise WorkbenchError(f"cannot {op} vectors from different models: [{a.short()}] vs [{b.short()}]")
        out = self._with(self.vectors + sign * other.vectors, op=f"{op} {other.trait}", fingerprint=a or b)
        if other.trait != self.trait:
            out.trait = f"{self.trait}{'+' if sign > 0 else '-'}{other.trait}"
        return out

    def __add__(self, other: Any) -> PersonaVector:
        return self._combine(other, 1.0, "add")

    def __sub__(self, other: Any) -> PersonaVector:
        return self._combine(other, -1.0, "subtract")

    def __mul__(self, k: Any) -> PersonaVector:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return NotImplemented
        return self._with(self.vectors * float(k), op=f"scale {float(k):g}")

    __rmul__ = __mul__

    def __truediv__(self, k: Any) -> PersonaVector:
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            return NotImplemented
        return self * (1.0 / float(k))

    def __neg__(self) -> PersonaVector:
        return self._with(-self.vectors, op="negate")

    def __repr__(self) -> str:
        src = self.fingerprint.short() if self.fingerprint else "no fingerprint"
        return (
            f"PersonaVector(trait={self.trait!r}, statistic={self.statistic!r}, "
            f"shape={list(self.vectors.shape)}, site={self.site!r}, model=[{src}])"
        )

    # -- files -----------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this vector alone as a ``persona_vector`` artifact (see ``save_vectors`` for several)."""
        return save_vectors(path, {self.statistic: self})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        statistic: str = "response_avg",
        fingerprint: ModelFingerprint | None = None,
    ) -> PersonaVector:
        """One statistic from a ``persona_vector`` artifact; with ``fingerprint``, refuse another model."""
        _check_statistic(statistic)
        vecs = load_vectors(path, fingerprint=fingerprint)
        if statistic not in vecs:
            raise WorkbenchError(
                f"'{path}' holds no '{statistic}' vector (it has: {', '.join(sorted(vecs))})"
            )
        return vecs[statistic]


def save_vectors(path: str | os.PathLike[str], vectors: Mapping[str, PersonaVector]) -> Path:
    """Write several statistics of one extraction to one safetensors artifact (kind ``persona_vector``)."""
    if not vectors:
        raise WorkbenchError(f"nothing to save to '{path}': no persona vectors given")
    items = list(vectors.items())
    first = items[0][1]
    tensors: dict[str, Tensor] = {}
    per_stat: dict[str, Any] = {}
    for stat, v in items:
        _check_statistic(stat)
        if v.statistic != stat:
            raise WorkbenchError(f"vector stored under '{stat}' has statistic '{v.statistic}'")
        if v.vectors.shape != first.vectors.shape:
            raise WorkbenchError(
                f"all statistics in one file need one shape: {tuple(v.vectors.shape)} vs "
                f"{tuple(first.vectors.shape)}"
            )
        tensors[stat] = v.vectors
        per_stat[stat] = v.metadata
    fp = next((v.fingerprint for _, v in items if v.fingerprint is not None), None)
    shared = {k: val for k, val in first.metadata.items() if all(v.metadata.get(k) == val for _, v in items)}
    meta = {
        **shared,
        "trait": first.trait,
        "site": first.site,
        "statistics": [s for s, _ in items],
        "n_layers": first.n_layers,
        "d_model": first.d_model,
        "library_version": __version__,
        "fingerprint": fp.as_dict() if fp else None,
        "per_statistic": per_stat,
    }
    return save_artifact(path, tensors, kind=KIND, fingerprint=fp, metadata=meta)


def load_vectors(
    path: str | os.PathLike[str], fingerprint: ModelFingerprint | None = None
) -> dict[str, PersonaVector]:
    """Every statistic in a ``persona_vector`` artifact, keyed by statistic name."""
    art = load_artifact(path, expect_kind=KIND, fingerprint=fingerprint)
    meta = art.metadata
    per_stat = meta.get("per_statistic", {})
    if not isinstance(per_stat, dict) or not all(isinstance(x, dict) for x in per_stat.values()):
        raise WorkbenchError(f"'{path}': metadata 'per_statistic' must map statistic names to objects")
    shared = {k: v for k, v in meta.items() if k != "per_statistic"}
    out = {}
    for stat, t in art.tensors.items():
        if stat not in STATISTICS:
            continue
        try:
            v = PersonaVector(
                vectors=t,
                trait=str(meta.get("trait", "unknown")),
                statistic=stat,
                site=str(meta.get("site", DEFAULT_SITE)),
                fingerprint=art.fingerprint,
                metadata={**shared, **per_stat.get(stat, {})},
            )
        except WorkbenchError as exc:
            raise WorkbenchError(f"'{path}': {exc}") from exc
        if fingerprint is not None:
            v.check_model(fingerprint)
        out[stat] = v
    if not out:
        raise WorkbenchError(f"'{path}' holds no persona-vector statistics (tensors: {sorted(art.tensors)})")
    return out


def import_pt(
    path: str | os.PathLike[str],
    fingerprint: ModelFingerprint | None = None,
    *,
    trait: str = "imported",
    statistic: str = "response_avg",
) -> PersonaVector | dict[str, PersonaVector]:
    """Import a persona_vectors-style ``.pt`` file of shape ``[n_layers + 1, d_model]``.

    Row 0 of such a file is the embedding output (``hidden_states[0]``), so our layer ``l`` (the output of
    decoder layer ``l``) is their row ``l + 1``. A file holding a dict of such tensors gives a dict of
    vectors keyed as in the file (statistic names are kept when they are ours). Loaded with
    ``weights_only=True`` (no pickle code runs).

    Such files carry no model fingerprint: with ``fingerprint`` the shape must be exactly
    ``[n_layers + 1, d_model]`` of that model (layer count and width), and the vector then takes that
    fingerprint; its metadata records ``source_format: pt``, ``source_fingerprint: null`` and a
    ``provenance`` note, so a saved copy still says that the model was never verified.
    """
    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"vector file '{p}' does not exist")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad or unsafe files
        from workbench._io import one_line

        raise WorkbenchError(
            f"'{p}' is not a plain tensor file ({type(exc).__name__}: {one_line(str(exc), 200)})"
        ) from exc

    def one(t: Any, name: str, stat: str) -> PersonaVector:
        if not isinstance(t, Tensor) or t.dim() != 2:
            shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise WorkbenchError(f"'{p}'{name}: expected a [n_layers+1, d_model] tensor, got {shape}")
        if fingerprint is not None and tuple(t.shape) != (fingerprint.n_layers + 1, fingerprint.d_model):
            raise WorkbenchError(
                f"'{p}'{name}: shape {tuple(t.shape)} does not fit model {fingerprint.short()} "
                f"(expected [{fingerprint.n_layers + 1}, {fingerprint.d_model}]: embeddings + one row per layer)"
            )
        if t.shape[0] < 2:
            raise WorkbenchError(
                f"'{p}'{name}: shape {tuple(t.shape)} has no layer rows after the embedding row"
            )
        if t.is_complex() or t.dtype == torch.bool:
            raise WorkbenchError(f"'{p}'{name}: expected real numbers, got a {t.dtype} tensor")
        if not bool(torch.isfinite(t[1:]).all()):
            raise WorkbenchError(f"'{p}'{name}: the vector holds NaN or infinite values")
        # a .pt file says nothing about its model: only its shape was checked (against ``fingerprint``)
        meta = {
            "method": "import_pt",
            "source_file": str(p),
            "source_format": "pt",
            "source_fingerprint": None,
            "provenance": (
                "imported from an unfingerprinted .pt file; only its shape "
                + (
                    f"[{t.shape[0]}, {t.shape[1]}] was checked against the model"
                    if fingerprint
                    else "is known"
                )
            ),
            "library_version": __version__,
        }
        return PersonaVector(
            vectors=t[1:].float(), trait=trait, statistic=stat, fingerprint=fingerprint, metadata=meta
        )

    if isinstance(obj, Tensor):
        return one(obj, "", statistic)
    if isinstance(obj, dict):
        out = {}
        for k, t in obj.items():
            stat = k if k in STATISTICS else statistic
            out[str(k)] = one(t, f" key '{k}'", stat)
        if not out:
            raise WorkbenchError(
                f"'{p}' holds an empty dict; expected tensors of shape [n_layers+1, d_model]"
            )
        return out
    raise WorkbenchError(f"'{p}' holds a {type(obj).__name__}; expected a tensor or a dict of tensors")


def export_gguf(
    vector: PersonaVector,
    path: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    layers: list[int] | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write a llama.cpp control vector (GGUF, architecture ``controlvector``).

    Keys: ``controlvector.model_hint`` (the architecture, e.g. ``llama``) and ``controlvector.layer_count``;
    one float32 tensor ``direction.{n}`` per exported layer. Control-vector files number layers from 1 as
    hidden-state indices (``hidden_states[0]`` is the embedding output, which has no direction), the way
    llama.cpp's own generator and repeng write them, so our ``vectors[l]`` (output of decoder block ``l``)
    is written as ``direction.{l + 1}``. ``layers`` restricts the export; ``scale`` multiplies every row.
    """
    try:
        import gguf
    except ImportError as exc:  # optional at run time
        from workbench import MissingPackageError

        raise MissingPackageError("gguf", "pip install gguf", "GGUF export") from exc
    import numpy as np

    chosen = list(range(vector.n_layers)) if layers is None else list(layers)
    for index in chosen:
        vector.layer(index)  # clear error when out of range
    hint = model_hint or (vector.fingerprint.architecture if vector.fingerprint else "unknown")
    target = Path(path)
    from workbench._io import atomic_path

    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(str(tmp), "controlvector")
        writer.add_string("controlvector.model_hint", hint)
        writer.add_uint32("controlvector.layer_count", len(chosen))
        for index in chosen:
            data = (vector.layer(index) * float(scale)).numpy().astype(np.float32)
            writer.add_tensor(f"direction.{index + 1}", data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target
