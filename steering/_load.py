"""Reading a persona vector from a file for steering (safetensors artifacts, or persona_vectors ``.pt``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench import WorkbenchError


def _persona_vector_module() -> Any:
    try:
        import probes

        if hasattr(probes, "PersonaVector") and hasattr(probes, "import_pt"):
            return probes
    except ImportError:  # pragma: no cover - probes ships with the workbench
        pass
    from probes import _vector

    return _vector


def load_vector(path: str | os.PathLike[str], statistic: str = "response_avg", lm: Any = None) -> Any:
    """A ``PersonaVector`` from ``path``, checked against ``lm``'s fingerprint when given.

    ``.pt`` files are persona_vectors-style ``[n_layers + 1, d_model]`` tensors (row 0 = embeddings); any
    other file is a workbench ``persona_vector`` safetensors artifact.
    """
    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"vector file '{p}' does not exist")
    mod = _persona_vector_module()
    fp = getattr(lm, "fingerprint", None) if lm is not None else None
    if p.suffix == ".pt":
        got = mod.import_pt(p, fingerprint=fp, statistic=statistic)
        if isinstance(got, dict):
            if statistic not in got:
                raise WorkbenchError(
                    f"'{p}' holds no '{statistic}' vector (it has: {', '.join(sorted(got))})"
                )
            got = got[statistic]
        return got
    return mod.PersonaVector.load(p, statistic=statistic, fingerprint=fp)
