"""Reading a persona vector from a file for steering (safetensors artifacts, persona_vectors ``.pt``, GGUF)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from workbench import ModelLike, WorkbenchError


def load_vector(
    path: str | os.PathLike[str], statistic: str = "response_avg", lm: ModelLike | None = None
) -> Any:
    """A ``PersonaVector`` from ``path``, checked against ``lm``'s fingerprint when given.

    ``.pt`` files are persona_vectors-style ``[n_layers + 1, d_model]`` tensors (row 0 = embeddings); ``.gguf``
    files (or any file starting with the GGUF magic) are llama.cpp / repeng control vectors (``direction.N`` =
    output of block N); any other file is a workbench ``persona_vector`` safetensors artifact.
    """
    p = Path(path)
    if not p.exists():
        raise WorkbenchError(f"vector file '{p}' does not exist")
    import probes as mod  # the persona-vector readers, through probes' public face

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
    if p.suffix.lower() == ".gguf" or mod.is_gguf_file(p):
        return mod.import_gguf(p, fingerprint=fp, statistic=statistic)
    return mod.PersonaVector.load(p, statistic=statistic, fingerprint=fp)
