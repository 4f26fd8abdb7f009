"""Shared fixtures: tiny random models of every family (no downloads) and the embedded model."""

from __future__ import annotations

import os

import pytest
import torch

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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA (gpu tier is opt-in and runs only where a GPU exists)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def enable_checkpointing(model, use_reentrant: bool = False) -> None:
    """Activation (gradient) checkpointing through transformers' current API (``activation_checkpointing_
    enable``; ``gradient_checkpointing_enable`` is deprecated and goes in v6), the old one on old releases."""
    kwargs = {"use_reentrant": use_reentrant}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a busy machine makes extra threads spin); use it in a
    module with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


_CACHE: dict[str, object] = {}


def load_tiny(shape: str):
    from workbench import load_model

    if shape not in _CACHE:
        _CACHE[shape] = load_model(f"random:{shape}", device="cpu")
    return _CACHE[shape]


@pytest.fixture(params=TINY_FAMILIES)
def tiny(request):
    """A tiny random model of each family, shared across tests (do not modify its weights)."""
    return load_tiny(request.param)


@pytest.fixture
def tiny_llama():
    return load_tiny("tiny-llama")


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct model (integration tier)."""
    from workbench import load_model

    return load_model("smollm2-135m", device="cpu")


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
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
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


def _hooks_on(lm) -> set[tuple[str, int]]:
    """(module name, hook id) of every forward hook on ``lm`` except transformers' own output-capturing hooks
    (transformers 5 installs them, for good, the first time a model is called with output_hidden_states)."""
    out = set()
    for name, m in lm.model.named_modules():
        for table in (m._forward_hooks, m._forward_pre_hooks):
            for hid, fn in table.items():
                if "output_capturing_hook" not in getattr(fn, "__qualname__", ""):
                    out.add((name, hid))
    return out


@pytest.fixture(autouse=True)
def _no_hook_left_on_shared_models(request):
    """The tiny models in ``_CACHE`` are shared by every test: a hook a test leaves on one leaks into later ones."""
    before = {shape: _hooks_on(lm) for shape, lm in _CACHE.items()}
    yield
    for shape, lm in _CACHE.items():
        left = _hooks_on(lm) - before.get(shape, set())
        if left:
            raise AssertionError(
                f"{request.node.nodeid} left hooks on the shared {shape}: {sorted(left)[:3]}"
            )
