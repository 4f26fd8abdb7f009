"""Helpers the tests share (fixtures live in ``conftest.py``): tiny random models of every family, cached
per process, checkpointing through transformers' current API, a torchrun launcher, a self-killing eval script
and the hooks on a model."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The repository's root folder."""

TINY_FAMILIES = [
    "tiny-llama",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-qwen3",
    "tiny-gemma2",
    "tiny-gemma3",
    "tiny-gpt2",
    "tiny-gpt-neox",
]


def enable_checkpointing(model, use_reentrant: bool = False) -> None:
    """Activation (gradient) checkpointing through transformers' current API (``activation_checkpointing_
    enable``; ``gradient_checkpointing_enable`` is deprecated and goes in v6), the old one on old releases."""
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


_CACHE: dict[str, object] = {}


def load_tiny(shape: str):
    from workbench import load_model

    if shape not in _CACHE:
        _CACHE[shape] = load_model(f"random:{shape}", device="cpu")
    return _CACHE[shape]


def batch_inputs(lm, texts=("The quick brown fox jumps.", "Hi!")):
    tok = lm.tokenizer
    old = tok.padding_side
    tok.padding_side = "left"
    enc = tok(list(texts), return_tensors="pt", padding=True, add_special_tokens=False)
    tok.padding_side = old
    return dict(enc)


def run_torchrun(cfg_path, out, *, nproc: int = 2, timeout: int = 120):
    """``workbench.training._launch CONFIG --out OUT`` under ``torch.distributed.run`` on a free port (CPU)."""
    import socket
    import subprocess
    import sys

    root = REPO_ROOT
    with socket.socket() as sock:  # a free port for the process group
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_port", port,
        "-m", "workbench.training._launch", str(cfg_path), "--out", str(out), "--quiet",
    ]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=root)


# `python -c EVAL_KILL.format(module=M, n=N) ARGS...` runs `workbench ARGS...` and SIGKILLs itself right after
# the N-th judgment is cached (M = "jb") or the N-th eval row is written (M = "ev"): a real kill mid-write.
EVAL_KILL = """
import os, signal, sys
if "{module}" == "jb":
    import workbench.judges._base as jb
    real_put, seen = jb.JudgmentCache.put, []
    def put(self, prompt, judgment):
        real_put(self, prompt, judgment)
        seen.append(prompt)
        if len(seen) == {n}:
            os.kill(os.getpid(), signal.SIGKILL)
    jb.JudgmentCache.put = put
else:
    import workbench.evaluation as ev
    real_append, seen = ev.append_jsonl, []
    def append(path, row):
        real_append(path, row)
        seen.append(row)
        if len(seen) == {n}:
            os.kill(os.getpid(), signal.SIGKILL)
    ev.append_jsonl = append
sys.argv = ["workbench", *sys.argv[1:]]
from workbench.cli import main
main()
"""


def hooks_on(lm) -> set[tuple[str, int]]:
    """(module name, hook id) of every forward hook on ``lm`` except transformers' own output-capturing hooks
    (transformers 5 installs them, for good, the first time a model is called with output_hidden_states)."""
    out = set()
    for name, m in lm.model.named_modules():
        for table in (m._forward_hooks, m._forward_pre_hooks):
            for hid, fn in table.items():
                if "output_capturing_hook" not in getattr(fn, "__qualname__", ""):
                    out.add((name, hid))
    return out
