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
