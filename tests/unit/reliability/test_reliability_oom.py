"""Out-of-memory during generation and scoring: the batch is halved and retried, and the run says so.

The fault is injected by wrapping the model's ``generate`` / ``forward`` so that batches larger than a limit
raise the error PyTorch raises (``torch.OutOfMemoryError``, or the CPU allocator's ``RuntimeError``); results
must equal the un-faulted run's.
"""

from __future__ import annotations

import logging

import pytest
import torch

from tests.helpers import load_tiny
from workbench import WorkbenchError
from workbench.evaluation import EvalConfig, Evaluator
from workbench.generation import generate, is_out_of_memory, map_batches_halving
from workbench.scoring import answer_logprobs

PROMPTS = [f"Question {i}: why " + "really " * (i % 4) for i in range(9)]
ANSWERS = [f"Because {i}." + " Indeed." * (i % 3) for i in range(9)]


def cuda_oom() -> BaseException:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def cpu_oom() -> BaseException:
    return RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")


class Faulty:
    """Wraps a model method; raises ``make_error()`` for batches of more than ``limit`` rows."""

    def __init__(self, inner, limit: int, make_error=cuda_oom):
        self.inner, self.limit, self.make_error = inner, limit, make_error
        self.sizes: list[int] = []

    def __call__(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        self.sizes.append(int(ids.shape[0]))
        if ids.shape[0] > self.limit:
            raise self.make_error()
        return self.inner(*args, **kwargs)


def test_halving_schedule_and_order():
    calls = []

    def fn(start, stop, i):
        calls.append((start, stop, i))
        if stop - start > 3:
            raise cuda_oom()
        return [x * 10 for x in range(start, stop)]

    assert map_batches_halving(fn, 10, 8) == [x * 10 for x in range(10)]
    assert calls == [(0, 8, 0), (0, 4, 0), (0, 2, 0), (2, 4, 1), (4, 6, 2), (6, 8, 3), (8, 10, 4)]


@pytest.mark.parametrize("make_error", [cuda_oom, cpu_oom])
def test_generation_halves_the_batch_and_matches_the_unfaulted_run(monkeypatch, caplog, make_error):
    lm = load_tiny("tiny-llama")
    clean = generate(lm, PROMPTS, max_new_tokens=6, batch_size=8)
    faulty = Faulty(lm.model.generate, limit=2, make_error=make_error)
    monkeypatch.setattr(lm.model, "generate", faulty)
    with caplog.at_level(logging.WARNING, logger="workbench.generation"):
        got = generate(lm, PROMPTS, max_new_tokens=6, batch_size=8)
    assert got == clean
    assert faulty.sizes[:3] == [8, 4, 2] and max(faulty.sizes[3:]) == 2
    msgs = [r.getMessage() for r in caplog.records]
    assert "out of memory generating (max_new_tokens=6) a batch of 8; retrying with batches of 4" in msgs
    assert "out of memory generating (max_new_tokens=6) a batch of 4; retrying with batches of 2" in msgs


def test_scoring_halves_the_batch_and_matches_the_unfaulted_run(monkeypatch, caplog):
    lm = load_tiny("tiny-qwen2")
    clean = answer_logprobs(lm, PROMPTS, ANSWERS, batch_size=16)
    faulty = Faulty(lm.model.forward, limit=3)
    monkeypatch.setattr(lm.model, "forward", faulty)
    with caplog.at_level(logging.WARNING, logger="workbench.generation"):
        got = answer_logprobs(lm, PROMPTS, ANSWERS, batch_size=16)
    assert [g.n_tokens for g in got] == [c.n_tokens for c in clean]
    assert max(abs(g.logprob - c.logprob) for g, c in zip(got, clean, strict=True)) < 1e-4
    assert faulty.sizes[:3] == [9, 4, 2]  # 9 items: 16 -> 9 tried, then halves of the failed batch
    assert any("out of memory scoring answers a batch of 9" in r.getMessage() for r in caplog.records)


def test_oom_on_a_single_item_is_a_clear_error(monkeypatch):
    lm = load_tiny("tiny-llama")
    monkeypatch.setattr(lm.model, "generate", Faulty(lm.model.generate, limit=0))
    with pytest.raises(WorkbenchError, match=r"out of memory generating .* even one item at a time") as err:
        generate(lm, PROMPTS[:3], max_new_tokens=4, batch_size=4)
    assert "\n" not in str(err.value) and "smaller model" in str(err.value)


def test_other_errors_are_not_retried(monkeypatch):
    lm = load_tiny("tiny-llama")
    faulty = Faulty(lm.model.forward, limit=0, make_error=lambda: ValueError("shape mismatch"))
    monkeypatch.setattr(lm.model, "forward", faulty)
    with pytest.raises(ValueError, match="shape mismatch"):
        answer_logprobs(lm, PROMPTS, ANSWERS, batch_size=4)
    assert faulty.sizes == [4]
    assert not is_out_of_memory(ValueError("out of memory"))  # only runtime/allocator errors count
    assert is_out_of_memory(cpu_oom()) and is_out_of_memory(MemoryError())


def test_evaluation_survives_oom_with_all_rows(monkeypatch, tmp_path):
    lm = load_tiny("tiny-llama")
    from workbench.data import make_dataset

    rows = make_dataset("opswap_tier2", n=6)
    clean = Evaluator(
        lm, tmp_path / "clean", EvalConfig(exact_max_new_tokens=5, batch_size=6), progress=False
    )
    want = clean.exact(rows, name="op")
    monkeypatch.setattr(lm.model, "generate", Faulty(lm.model.generate, limit=1))
    ev = Evaluator(lm, tmp_path / "oom", EvalConfig(exact_max_new_tokens=5, batch_size=6), progress=False)
    got = ev.exact(rows, name="op")
    assert got["rows"] == 6 and got["accuracy"] == want["accuracy"]
    a = (tmp_path / "clean" / "eval" / "op.jsonl").read_text()
    b = (tmp_path / "oom" / "eval" / "op.jsonl").read_text()
    assert a == b
