"""Compiled decoding: a static KV cache and ``torch.compile`` around HF ``generate``, hooks included.

``decode(lm, enc, kwargs, compile=True)`` runs one batch of ``model.generate`` with
``cache_implementation="static"`` and a ``CompileConfig``, so transformers compiles the decoding step (the
prefill runs eagerly). Our steering and gate hooks are plain forward hooks on the decoder layers; Dynamo
traces them into the same graph (``fullgraph=True``: a graph break is an error, not a silent slowdown) and,
because shapes are static, nothing in them syncs with the host per token.

Two details make this correct and cheap:

* **Hooks are guarded.** By default Dynamo does *not* guard on module hooks
  (``torch._dynamo.config.skip_nnmodule_hook_guards``), so a graph compiled without a ``Steerer`` would
  keep running without it. Compiled decoding turns those guards on: entering a new ``Steerer`` or
  ``GateSet.attached`` compiles a new graph once (a per-row coefficient tensor lets one graph serve a
  whole sweep), and leaving it goes back to the graph compiled before.
* **Prompt lengths are bucketed.** The static cache is sized ``prompt + max_new_tokens``; prompts are
  left-padded to a multiple of ``BUCKET`` tokens so that batches of similar prompts reuse one graph.

Where compilation is not available or fails (no compiler, an unsupported op), the batch is generated
eagerly and a warning is logged once; the answers are the same either way (greedy decoding is compared
token for token in the tests).

Sampling needs nothing here: ``generate`` samples with greedy decoding plus a
``workbench.generation.RowSeededSampler`` in ``kwargs["logits_processor"]``, which runs eagerly after the
compiled step on both paths (the extra left padding of the buckets does not change its step count), so
compiled and eager decoding draw the same samples (``tests/unit/reliability/test_reliability_seeds.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from ._errors import WorkbenchError

log = logging.getLogger(__name__)

#: prompts are left-padded to a multiple of this many tokens in compiled decoding
BUCKET = 16
#: graphs kept per compiled function (one per distinct hook set / batch shape) before falling back to eager
RECOMPILE_LIMIT = 64
#: ``torch.compile`` backend; ``WORKBENCH_COMPILE_BACKEND=aot_eager`` traces without generating kernels
BACKEND_ENV = "WORKBENCH_COMPILE_BACKEND"

_warned: set[str] = set()


def default_compile(device: torch.device | str) -> bool:
    """Compiled decoding is on by default on CUDA, off elsewhere (compiling on a CPU costs minutes)."""
    return torch.device(device).type == "cuda"


def compile_backend() -> str:
    return os.environ.get(BACKEND_ENV, "inductor")


@contextlib.contextmanager
def hook_guards() -> Iterator[None]:
    """Guard compiled graphs on module hooks (and allow enough graphs for many hook sets)."""
    import torch._dynamo

    cfg = torch._dynamo.config
    patch: dict[str, Any] = {"skip_nnmodule_hook_guards": False}
    limit_key = "recompile_limit" if hasattr(cfg, "recompile_limit") else "cache_size_limit"
    patch[limit_key] = max(int(getattr(cfg, limit_key)), RECOMPILE_LIMIT)
    with cfg.patch(**patch):
        yield


def pad_left_to_bucket(enc: dict[str, Tensor], pad_id: int, bucket: int = BUCKET) -> dict[str, Tensor]:
    """Left-pad ``input_ids`` / ``attention_mask`` so the prompt length is a multiple of ``bucket``."""
    ids, mask = enc["input_ids"], enc["attention_mask"]
    extra = (-ids.shape[1]) % bucket
    if extra == 0:
        return enc
    pad_ids = torch.full((ids.shape[0], extra), pad_id, dtype=ids.dtype, device=ids.device)
    pad_mask = torch.zeros((mask.shape[0], extra), dtype=mask.dtype, device=mask.device)
    return {
        **enc,
        "input_ids": torch.cat([pad_ids, ids], 1),
        "attention_mask": torch.cat([pad_mask, mask], 1),
    }


def _compile_kwargs(device: torch.device) -> dict[str, Any]:
    from transformers import CompileConfig

    cuda = device.type == "cuda"
    cfg = CompileConfig(
        fullgraph=True, dynamic=False, backend=compile_backend(), mode="reduce-overhead" if cuda else None
    )
    cfg._compile_all_devices = True  # transformers compiles only on accelerators unless told otherwise
    return {"cache_implementation": "static", "compile_config": cfg}


def decode(lm: Any, enc: dict[str, Tensor], kwargs: dict[str, Any], *, compile: bool) -> Tensor:
    """``lm.model.generate(**enc, **kwargs)``, compiled or not; returns only the new tokens ``[batch, new]``."""
    if compile:
        pad_id = kwargs.get("pad_token_id")
        if pad_id is None:
            raise WorkbenchError("compiled decoding needs a pad_token_id")
        enc_c = pad_left_to_bucket(enc, int(pad_id))
        try:
            with hook_guards():
                out = lm.model.generate(**enc_c, **kwargs, **_compile_kwargs(lm.model.device))
            return out[:, enc_c["input_ids"].shape[1] :]
        except WorkbenchError:
            raise
        except Exception as exc:  # compiler missing, unsupported op, ...: same answers, eagerly
            key = type(exc).__name__
            if key not in _warned:
                _warned.add(key)
                first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else key
                log.warning("compiled decoding failed (%s: %s); generating eagerly instead", key, first)
    out = lm.model.generate(**enc, **kwargs)
    return out[:, enc["input_ids"].shape[1] :]
