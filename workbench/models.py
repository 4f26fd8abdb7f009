"""Model specs, devices and dtypes, checked before anything is loaded (the helpers behind ``load_model``).

``check_model_spec`` and ``check_device`` raise one-line ``WorkbenchError``s naming the accepted forms;
``default_dtype`` is the dtype ``load_model`` picks (bfloat16 on CUDA, float32 elsewhere, unless named);
``shape_names`` lists the ``random:<shape>`` configs (``TINY_SHAPES`` for tests, ``FULL_SHAPES`` with the
real models' sizes for benchmarks). The implementation lives in ``workbench._models`` and ``workbench._shapes``.
"""

from __future__ import annotations

import torch

from ._models import DEVICE_FORMS, _default_dtype, check_device, check_model_spec
from ._shapes import FULL_SHAPES, TINY_SHAPES, shape_names

__all__ = [
    "DEVICE_FORMS",
    "FULL_SHAPES",
    "TINY_SHAPES",
    "check_device",
    "check_model_spec",
    "default_dtype",
    "shape_names",
]


def default_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``dtype`` as a ``torch.dtype`` (``float32``, ``bfloat16``, ``float16``); ``None``: what ``load_model``
    uses on ``device``. An unknown name is a one-line ``WorkbenchError``."""
    return _default_dtype(dtype, device)
