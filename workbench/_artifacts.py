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
from ._io import atomic_path
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
    try:
        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except Exception as exc:  # safetensors raises several error types for damaged files
        raise WorkbenchError(
            f"'{p}' is not a readable safetensors file ({type(exc).__name__}: {exc})"
        ) from exc
    kind = header.get(_KIND_KEY, "")
    if expect_kind is not None and kind != expect_kind:
        raise WorkbenchError(f"'{p}' holds a '{kind or 'foreign'}' artifact, expected '{expect_kind}'")
    try:
        meta = json.loads(header.get(_META_KEY, "{}"))
        fp_raw = json.loads(header.get(_FP_KEY, "null"))
    except json.JSONDecodeError as exc:
        raise WorkbenchError(f"'{p}' has malformed workbench metadata: {exc}") from exc
    fp = ModelFingerprint.from_dict(fp_raw) if fp_raw else None
    if fingerprint is not None:
        check_fingerprint(fp, fingerprint, p)
    extra = {k: v for k, v in header.items() if not k.startswith("workbench.")}
    return Artifact(tensors=tensors, metadata=meta, fingerprint=fp, kind=kind, path=p, extra=extra)


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
