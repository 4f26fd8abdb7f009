"""Artifacts: tensors + metadata + model fingerprint in one safetensors file (never pickle)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ._errors import WorkbenchError
from ._io import atomic_path, one_line
from ._models import ModelFingerprint
from ._version import __version__

_META_KEY = "workbench.metadata"
_FP_KEY = "workbench.fingerprint"
_KIND_KEY = "workbench.kind"
_VERSION_KEY = "workbench.version"


@dataclass
class Artifact:
    tensors: dict[str, Tensor]
    metadata: dict[str, Any]
    fingerprint: ModelFingerprint | None
    kind: str
    path: Path | None = None
    extra: dict[str, str] = field(default_factory=dict)


def save_artifact(
    path: str | os.PathLike[str],
    tensors: dict[str, Tensor],
    *,
    kind: str,
    fingerprint: ModelFingerprint | None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write tensors with metadata atomically (temp file + rename)."""
    from safetensors.torch import save_file

    header = {
        _KIND_KEY: kind,
        _VERSION_KEY: __version__,
        _META_KEY: json.dumps(metadata or {}, sort_keys=True, default=str),
        _FP_KEY: json.dumps(fingerprint.as_dict() if fingerprint else None),
    }
    clean = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    target = Path(path)
    with atomic_path(target) as tmp:
        save_file(clean, str(tmp), metadata=header)
    return target


def load_artifact(
    path: str | os.PathLike[str],
    *,
    expect_kind: str | None = None,
    fingerprint: ModelFingerprint | None = None,
) -> Artifact:
    """Read an artifact; with ``fingerprint``, refuse one made for a model of another shape."""
    from safetensors import safe_open

    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"artifact file '{p}' does not exist")
    if p.is_dir():
        raise WorkbenchError(f"artifact path '{p}' is a directory, expected a .safetensors file")
    try:
        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several error types for damaged files
        raise WorkbenchError(
            f"'{p}' is not a readable safetensors file ({type(exc).__name__}: {one_line(str(exc), 200)})"
        ) from exc
    kind = header.get(_KIND_KEY, "")
    if expect_kind is not None and kind != expect_kind:
        shown = f"'{kind or 'foreign'}'" if kind.isprintable() else repr(kind)
        raise WorkbenchError(f"'{p}' holds a {shown} artifact, expected '{expect_kind}'")
    meta = _header_json(header, _META_KEY, "{}", p)
    if not isinstance(meta, dict):
        raise WorkbenchError(
            f"'{p}': header key '{_META_KEY}' must hold a JSON object, got {type(meta).__name__}"
        )
    fp_raw = _header_json(header, _FP_KEY, "null", p)
    if fp_raw is not None and not isinstance(fp_raw, dict):
        raise WorkbenchError(
            f"'{p}': header key '{_FP_KEY}' must hold a JSON object or null, got {type(fp_raw).__name__}"
        )
    try:
        fp = ModelFingerprint.from_dict(fp_raw) if fp_raw else None
    except WorkbenchError as exc:
        raise WorkbenchError(f"'{p}': header key '{_FP_KEY}': {one_line(str(exc), 200)}") from None
    if fingerprint is not None:
        check_fingerprint(fp, fingerprint, p)
    extra = {k: v for k, v in header.items() if not k.startswith("workbench.")}
    return Artifact(tensors=tensors, metadata=meta, fingerprint=fp, kind=kind, path=p, extra=extra)


def _header_json(header: dict[str, str], key: str, default: str, path: Path) -> Any:
    try:
        return json.loads(header.get(key, default))
    except (ValueError, RecursionError) as exc:
        raise WorkbenchError(
            f"'{path}': header key '{key}' is not valid JSON ({one_line(str(exc), 120)})"
        ) from None


def check_fingerprint(
    saved: ModelFingerprint | None, model: ModelFingerprint, path: Any = "artifact"
) -> None:
    if saved is None:
        raise WorkbenchError(
            f"'{path}' carries no model fingerprint; cannot check it fits model {model.short()}"
        )
    if not saved.compatible(model):
        raise WorkbenchError(
            f"'{path}' was made for another model: artifact [{saved.short()}] vs model [{model.short()}]"
        )


def tensor_summary(t: Tensor) -> str:
    return f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}"


__all__ = ["Artifact", "save_artifact", "load_artifact", "check_fingerprint", "tensor_summary", "torch"]
