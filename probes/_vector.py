"""The persona vector: one direction per layer in the residual stream, with provenance.

A ``PersonaVector`` is data: add, subtract and scale vectors, normalise them, save several statistics of
one extraction into a single safetensors artifact, import persona_vectors-style ``.pt`` tensors, and
import and export llama.cpp control vectors (GGUF; ``direction.N`` = output of block ``N``).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench import ModelFingerprint, WorkbenchError, __version__, load_artifact, save_artifact

KIND = "persona_vector"
STATISTICS = ("response_avg", "prompt_avg", "prompt_last", "response_last")
DEFAULT_SITE = "hook_resid_post"

log = logging.getLogger(__name__)


def _check_statistic(statistic: str) -> None:
    if statistic not in STATISTICS:
        raise WorkbenchError(f"unknown statistic '{statistic}'; expected one of {', '.join(STATISTICS)}")


@dataclass
class PersonaVector:
    """One direction per layer: ``vectors[l]`` is for site ``blocks.{l}.hook_resid_post``.

    ``vectors``: float32 ``[n_layers, d_model]``. ``statistic`` says which activations were averaged:
    ``response_avg`` (answer tokens), ``prompt_avg`` (prompt tokens), ``prompt_last`` (last prompt token) or
    ``response_last`` (last answer token).
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
        from workbench.io import one_line

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


# -- llama.cpp control vectors (GGUF) ----------------------------------------------------------------
#
# llama.cpp (common_control_vector_load_one, llama_adapter_cvec::apply) reads tensor ``direction.N``
# (N >= 1; ``direction.0`` is refused) into its layer tensor N and adds it to the output of layer N
# (0-based, after the FFN residual). repeng keys layer L by ``hidden_states[L + 1]`` (the output of block
# L), steers the output of ``model.layers[L]`` and writes ``direction.L``. Both agree: direction.N is the
# output of block N, our ``vectors[N]`` (site ``blocks.{N}.hook_resid_post``). Block 0 has no direction.

GGUF_ARCH = "controlvector"
GGUF_DIRECTION_INDEX = "block output (direction.N = output of block N, as llama.cpp and repeng)"
"""Value of the ``workbench.direction_index`` key written into every exported control vector."""
OLD_WORKBENCH_INDEX = "old workbench (direction.N = output of block N - 1)"
_INDEX_KEY = "workbench.direction_index"
_DIRECTION = re.compile(r"direction\.(0|[1-9][0-9]*)")


def _gguf(purpose: str) -> Any:
    try:
        import gguf
    except ImportError as exc:  # optional at run time
        from workbench import MissingPackageError

        raise MissingPackageError("gguf", "pip install gguf", purpose) from exc
    return gguf


def export_gguf(
    vector: PersonaVector,
    path: str | os.PathLike[str],
    *,
    scale: float = 1.0,
    layers: list[int] | None = None,
    model_hint: str | None = None,
) -> Path:
    """Write a llama.cpp control vector (GGUF, architecture ``controlvector``).

    Our ``vectors[l]`` (output of decoder block ``l``, ``blocks.{l}.hook_resid_post``) is written as
    tensor ``direction.{l}``: llama.cpp adds ``direction.N`` to the output of its layer ``N`` (0-based) and
    repeng writes its layer ``L`` (read from ``hidden_states[L + 1]``) as ``direction.L``, so the file steers
    where the vector was read. llama.cpp refuses ``direction.0``: block 0's output cannot be steered by a
    control vector, so ``layers=None`` exports blocks ``1..n_layers - 1`` (block 0 is left out and logged)
    and an explicit ``layers`` holding 0 is an error.

    Keys: ``controlvector.model_hint`` (architecture, e.g. ``llama``), ``controlvector.layer_count`` (number
    of directions written), and ``workbench.*`` keys llama.cpp ignores: ``direction_index`` (the numbering,
    ``GGUF_DIRECTION_INDEX``), ``trait``, ``statistic``, ``scale``, ``library_version`` and ``fingerprint``
    (JSON, when the vector has one). ``scale`` multiplies every row.
    """
    gguf = _gguf("GGUF export")
    import json

    import numpy as np

    from workbench.io import atomic_path
    from workbench.options import check_number

    scale = check_number(scale, "scale")
    if layers is None:
        chosen = list(range(1, vector.n_layers))
        log.info("GGUF export leaves out block 0: llama.cpp cannot steer the output of block 0")
    else:
        chosen = list(layers)
        for index in chosen:
            vector.layer(index)  # clear error when out of range
        if 0 in chosen:
            raise WorkbenchError(
                f"block 0 cannot be exported to '{path}': llama.cpp refuses direction.0 and never steers the "
                f"output of block 0; choose layers in 1..{vector.n_layers - 1}"
            )
        dup = sorted({i for i in chosen if chosen.count(i) > 1})
        if dup:
            raise WorkbenchError(f"layers {dup} given twice for '{path}'; each block is exported once")
    if not chosen:
        raise WorkbenchError(
            f"nothing to export to '{path}': this '{vector.trait}' vector has only block 0, which llama.cpp "
            "cannot steer"
        )
    rows = {index: vector.layer(index) * scale for index in chosen}
    for index, row in rows.items():
        if not bool(torch.isfinite(row).all()):
            raise WorkbenchError(f"'{vector.trait}' vector holds NaN or infinite values at block {index}")
    hint = model_hint or (vector.fingerprint.architecture if vector.fingerprint else "unknown")
    target = Path(path)
    with atomic_path(target) as tmp:
        writer = gguf.GGUFWriter(str(tmp), GGUF_ARCH)
        writer.add_string(f"{GGUF_ARCH}.model_hint", hint)
        writer.add_uint32(f"{GGUF_ARCH}.layer_count", len(chosen))
        writer.add_string(_INDEX_KEY, GGUF_DIRECTION_INDEX)
        writer.add_string("workbench.trait", vector.trait)
        writer.add_string("workbench.statistic", vector.statistic)
        writer.add_float32("workbench.scale", scale)
        writer.add_string("workbench.library_version", __version__)
        if vector.fingerprint is not None:
            writer.add_string("workbench.fingerprint", json.dumps(vector.fingerprint.as_dict()))
        for index in chosen:
            writer.add_tensor(f"direction.{index}", rows[index].numpy().astype(np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return target


def _gguf_string(reader: Any, key: str, path: Path) -> str | None:
    """A string field of a GGUF file, ``None`` when absent; a field of another type is an error."""
    field = reader.get_field(key)
    if field is None:
        return None
    try:
        value = field.contents()
    except Exception:  # malformed field: treated like a wrong type below
        value = None
    if not isinstance(value, str):
        raise WorkbenchError(f"'{path}': key '{key}' must be a string, got {value!r}")
    return value


def _direction_block(name: str, path: Path) -> int:
    """N from a tensor named ``direction.N`` (llama.cpp's rules, stricter about spelling)."""
    m = _DIRECTION.fullmatch(name)
    if m is None:
        why = "a negative layer index" if re.fullmatch(r"direction\.-[0-9]+", name) else "not direction.N"
        raise WorkbenchError(
            f"'{path}': tensor '{name}' is {why}; a control vector holds only tensors direction.N with N >= 1"
        )
    n = int(m.group(1))
    if n == 0:
        raise WorkbenchError(
            f"'{path}': tensor 'direction.0' is refused (llama.cpp has no direction for block 0's output; "
            "valid names: direction.N with N >= 1)"
        )
    return n


def is_gguf_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a readable file that starts with the GGUF magic (``b"GGUF"``), whatever its suffix."""
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == b"GGUF"
    except OSError:
        return False


def import_gguf(
    path: str | os.PathLike[str],
    fingerprint: ModelFingerprint | None = None,
    *,
    trait: str | None = None,
    statistic: str | None = None,
    from_old_workbench: bool = False,
) -> PersonaVector:
    """Read a llama.cpp control vector (GGUF) as a ``PersonaVector``, numbered as llama.cpp numbers it.

    Tensor ``direction.N`` becomes ``vectors[N]`` (the output of block ``N``, ``blocks.{N}.hook_resid_post``);
    blocks without a direction (always block 0) are zero rows, and ``metadata["blocks_present"]`` lists
    the others. llama.cpp's loader rules apply: architecture ``controlvector``, only 1-D float32 tensors
    named ``direction.N`` with ``N >= 1``, all of one width; anything else is a one-line error naming the
    file and the tensor or key.

    The layer count is the model's: ``fingerprint`` (checked: width and ``n_layers >= max N + 1``), else
    the fingerprint a workbench export wrote into the file, else ``max N + 1`` (then steering a model with
    more layers needs a re-import with its fingerprint). ``trait`` and ``statistic`` default to what a
    workbench export recorded, else ``imported`` / ``response_avg``. Row values are taken as written
    (an export's ``scale`` is already in them).

    ``from_old_workbench=True`` reads a file exported by a workbench version before the numbering fix,
    which wrote block ``l`` as ``direction.{l + 1}`` (and no ``workbench.direction_index`` key, so such
    files cannot be told apart from llama.cpp or repeng files): ``direction.N`` then becomes block ``N - 1``.
    """
    import json

    import numpy as np

    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"control-vector file '{p}' does not exist")
    gguf = _gguf("GGUF import")
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as exc:  # the reader raises ValueError, KeyError, struct errors, ...
        from workbench.io import one_line

        raise WorkbenchError(
            f"'{p}' is not a readable GGUF file ({type(exc).__name__}: {one_line(str(exc), 200)})"
        ) from exc
    arch = _gguf_string(reader, "general.architecture", p)
    if arch != GGUF_ARCH:
        raise WorkbenchError(
            f"'{p}': general.architecture is {arch!r}; a llama.cpp control vector has '{GGUF_ARCH}'"
        )
    directions: dict[int, Tensor] = {}
    width: tuple[str, int] | None = None
    for t in reader.tensors:
        n = _direction_block(t.name, p)
        if t.tensor_type != gguf.GGMLQuantizationType.F32:
            raise WorkbenchError(
                f"'{p}': tensor '{t.name}' has type {t.tensor_type.name}; control vectors need F32"
            )
        ne = [int(x) for x in t.shape]
        if any(x != 1 for x in ne[1:]):  # ggml_n_dims: trailing sizes of 1 do not count
            raise WorkbenchError(f"'{p}': tensor '{t.name}' has shape {ne}; a direction is 1-D [n_embd]")
        if width is None:
            width = (t.name, int(t.n_elements))
        elif int(t.n_elements) != width[1]:
            raise WorkbenchError(
                f"'{p}': tensor '{t.name}' has {int(t.n_elements)} values but '{width[0]}' has {width[1]}; "
                "every direction needs the same width (n_embd)"
            )
        row = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
        if not bool(torch.isfinite(row).all()):
            raise WorkbenchError(f"'{p}': tensor '{t.name}' holds NaN or infinite values")
        directions[n] = row
    if not directions or width is None:
        raise WorkbenchError(f"'{p}' holds no direction tensors (expected direction.N, N >= 1)")

    index_key = _gguf_string(reader, _INDEX_KEY, p)
    if index_key is not None and index_key != GGUF_DIRECTION_INDEX:
        raise WorkbenchError(
            f"'{p}': key '{_INDEX_KEY}' is {index_key!r}; this version reads {GGUF_DIRECTION_INDEX!r}"
        )
    if from_old_workbench:
        if index_key is not None:
            raise WorkbenchError(
                f"'{p}' was exported with the current numbering ({_INDEX_KEY} is set); "
                "read it without from_old_workbench / --old-workbench-numbering"
            )
        blocks = {n - 1: row for n, row in directions.items()}
    else:
        blocks = directions

    file_fp = None
    raw_fp = _gguf_string(reader, "workbench.fingerprint", p)
    if raw_fp is not None:
        try:
            file_fp = ModelFingerprint.from_dict(json.loads(raw_fp))
        except (ValueError, TypeError, AttributeError, WorkbenchError) as exc:
            from workbench.io import one_line

            raise WorkbenchError(
                f"'{p}': key 'workbench.fingerprint' is not a model fingerprint ({one_line(str(exc), 200)})"
            ) from exc
    if fingerprint is not None and file_fp is not None and not file_fp.compatible(fingerprint):
        raise WorkbenchError(
            f"'{p}' was exported for another model: [{file_fp.short()}] vs [{fingerprint.short()}]"
        )
    fp = fingerprint or file_fp
    top = max(blocks)
    if fp is not None:
        if width[1] != fp.d_model:
            raise WorkbenchError(
                f"'{p}': directions have width {width[1]} but the model's d_model is {fp.d_model} ({fp.short()})"
            )
        if top >= fp.n_layers:
            name = f"direction.{top + 1 if from_old_workbench else top}"
            hint = ""
            if top == fp.n_layers and index_key is None and not from_old_workbench:
                hint = (
                    "; workbench exports made before the numbering fix wrote block l as direction.{l+1}: "
                    "read such a file with from_old_workbench=True (--old-workbench-numbering)"
                )
            raise WorkbenchError(
                f"'{p}': tensor '{name}' is for block {top} but the model has {fp.n_layers} blocks "
                f"(0..{fp.n_layers - 1}) ({fp.short()}){hint}"
            )
    n_layers = fp.n_layers if fp is not None else top + 1
    mat = torch.zeros(n_layers, width[1])
    for block, row in blocks.items():
        mat[block] = row

    file_trait = _gguf_string(reader, "workbench.trait", p)
    file_stat = _gguf_string(reader, "workbench.statistic", p)
    if statistic is None and file_stat is not None and file_stat not in STATISTICS:
        raise WorkbenchError(
            f"'{p}': key 'workbench.statistic' is {file_stat!r}; expected one of {', '.join(STATISTICS)}"
        )
    meta = {
        "method": "import_gguf",
        "source_file": str(p),
        "source_format": "gguf",
        "direction_index": OLD_WORKBENCH_INDEX if from_old_workbench else GGUF_DIRECTION_INDEX,
        "file_direction_index": index_key,
        "blocks_present": sorted(blocks),
        "model_hint": _gguf_string(reader, f"{GGUF_ARCH}.model_hint", p),
        "source_fingerprint": file_fp.as_dict() if file_fp else None,
        "provenance": (
            "imported from a GGUF control vector; "
            + (
                "the model was named by the caller"
                if fingerprint is not None
                else "fingerprint as written in the file"
                if file_fp is not None
                else "no model fingerprint known (layer count = highest direction + 1)"
            )
        ),
        "library_version": __version__,
    }
    return PersonaVector(
        vectors=mat,
        trait=trait or file_trait or "imported",
        statistic=statistic or file_stat or "response_avg",
        fingerprint=fp,
        metadata=meta,
    )
