"""Shared fixtures: tiny random models of every family (no downloads) and the embedded model."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import _CACHE, TINY_FAMILIES, hooks_on, load_tiny

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


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and a busy machine makes extra threads spin); use it in a
    module with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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


@pytest.fixture(autouse=True)
def _no_hook_left_on_shared_models(request):
    """The tiny models in ``_CACHE`` are shared by every test: a hook a test leaves on one leaks into later ones."""
    before = {shape: hooks_on(lm) for shape, lm in _CACHE.items()}
    yield
    for shape, lm in _CACHE.items():
        left = hooks_on(lm) - before.get(shape, set())
        if left:
            raise AssertionError(
                f"{request.node.nodeid} left hooks on the shared {shape}: {sorted(left)[:3]}"
            )
