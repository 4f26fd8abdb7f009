"""Progress bars on the long phases: judging, Interleaving+ pool scoring, on-policy generation, preference
scoring. ``progress=False`` prints nothing; ``progress=True`` creates an enabled bar that counts every item."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import workbench.generation
import workbench.judges._base
from workbench.judges import Judge, Judgment, score_prompts


class Recorder:
    """Stands in for ``tqdm``: records each bar (desc, total, disabled) and the sum of its updates."""

    bars: list[dict]

    def __init__(self) -> None:
        self.bars = []

    def __call__(self, iterable=None, *, total=None, desc="", disable=False, **_kw):
        bar = _Bar(iterable, {"desc": desc, "total": total, "disable": bool(disable), "n": 0})
        self.bars.append(bar.info)
        return bar

    def enabled(self) -> list[dict]:
        return [b for b in self.bars if not b["disable"]]


class _Bar:
    def __init__(self, iterable, info: dict) -> None:
        self.iterable, self.info = iterable, info

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def __iter__(self):
        for x in self.iterable:
            self.info["n"] += 1
            yield x

    def update(self, n: int = 1) -> None:
        self.info["n"] += n

    def close(self) -> None:
        pass


class Echo(Judge):
    """Scores each prompt by its length; counts what it was asked."""

    name = "echo"

    def __init__(self, cache_dir=None):
        super().__init__(cache_dir)
        self.asked: list[str] = []

    def _judge(self, prompts: list[str]) -> Iterator[tuple[int, Judgment]]:
        for i, p in enumerate(prompts):
            self.asked.append(p)
            yield i, Judgment(score=float(len(p)))


def test_judging_is_silent_without_progress_and_counts_judged_prompts_with_it(tmp_path, capsys, monkeypatch):
    judge = Echo(tmp_path / "cache")
    prompts = [f"prompt {i}" for i in range(5)]
    judge.score(prompts[:2])  # two are cached before the run below
    capsys.readouterr()

    assert [j.score for j in judge.score(prompts)] == [float(len(p)) for p in prompts]
    assert capsys.readouterr().err == ""  # progress=False (the default): no bar at all

    rec = Recorder()
    monkeypatch.setattr(workbench.judges._base, "tqdm", rec)
    judge.score([*prompts, "new one", "new one", "another"], progress=True, desc="judging x")
    # one bar over the distinct prompts judged now: cached ones and repeats are not counted again
    assert rec.bars == [{"desc": "judging x", "total": 2, "disable": False, "n": 2}]
    judge.score(["third"], progress=False)
    assert rec.bars[-1]["disable"] is True
    from workbench.judges import make_judge

    make_judge("none").score(["x"], progress=True)  # free judges (rules, none) draw no bar
    assert rec.bars[-1]["disable"] is True


def test_judging_bar_really_draws_when_enabled(tmp_path, capsys):
    Echo().score([f"p{i}" for i in range(3)], progress=True, desc="judging coherence")
    err = capsys.readouterr().err
    assert "judging coherence" in err and "3/3" in err


def test_score_prompts_passes_progress_to_judges_and_calls_other_objects_plainly(monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(workbench.judges._base, "tqdm", rec)
    assert [j.score for j in score_prompts(Echo(), ["ab"], progress=True, desc="d")] == [2.0]
    assert rec.bars == [{"desc": "d", "total": 1, "disable": False, "n": 1}]

    class Plain:  # a caller's own judge: score(prompts) only
        def score(self, prompts):
            return [Judgment(score=1.0) for _ in prompts]

    assert [j.score for j in score_prompts(Plain(), ["a", "b"], progress=True)] == [1.0, 1.0]


def test_sweep_and_extraction_judging_get_a_bar(tiny_llama, monkeypatch, tmp_path):
    from probes import extract_from_trait
    from steering import sweep

    class Flat(Echo):  # 60 for everything: passes the filter at threshold 30 (trait >= 30, < 70)
        def _judge(self, prompts):
            for i in range(len(prompts)):
                yield i, Judgment(score=60.0)

    rec = Recorder()
    monkeypatch.setattr(workbench.judges._base, "tqdm", rec)
    judge = Flat()
    res = extract_from_trait(
        tiny_llama, "evil", judge=judge, n_questions=1, n_instructions=1, n_per_question=1,
        max_new_tokens=3, threshold=30, progress=True,
    )  # fmt: skip
    descs = [b["desc"] for b in rec.enabled()]
    assert descs == ["judging evil", "judging coherence"]
    assert all(b["n"] == b["total"] > 0 for b in rec.enabled())
    vec = res.vectors["response_avg"]
    rec.bars.clear()
    sweep(tiny_llama, vec, layers=[0], alphas=[0.0, 2.0], questions=["Hi?"], trait="evil", judge=judge,
          max_new_tokens=3, progress=True)  # fmt: skip
    assert [b["desc"] for b in rec.enabled()] == ["judging evil", "judging coherence"]
    rec.bars.clear()
    sweep(tiny_llama, vec, layers=[0], alphas=[0.0, 3.0], questions=["Hi?"], trait="evil", judge=judge,
          max_new_tokens=3, progress=False)  # fmt: skip
    assert rec.bars and not rec.enabled()


def test_evaluator_preference_scoring_has_a_bar_only_with_progress(tiny_llama, monkeypatch, tmp_path, capsys):
    from workbench.evaluation import EvalConfig, Evaluator

    pairs = [{"question": f"Q{i}?", "aligned": "Yes.", "misaligned": "No."} for i in range(3)]
    cfg = EvalConfig(n_boot=20, batch_size=2)
    Evaluator(tiny_llama, tmp_path / "a", cfg, progress=False).preference(pairs, name="p")
    assert capsys.readouterr().err == ""
    rec = Recorder()
    monkeypatch.setattr(workbench.generation, "tqdm", rec)
    Evaluator(tiny_llama, tmp_path / "b", cfg, progress=True).preference(pairs, name="p")
    assert [(b["desc"], b["total"], b["n"]) for b in rec.enabled()] == [
        ("p: scoring misaligned answers", 3, 3),
        ("p: scoring aligned answers", 3, 3),
    ]


def _adapter(tmp_path: Path) -> Path:
    from peft import LoraConfig, get_peft_model

    from workbench import load_model

    lm = load_model("random:tiny-llama", device="cpu")
    torch.manual_seed(0)
    peft = get_peft_model(lm.model, LoraConfig(r=2, target_modules=["q_proj", "o_proj"]))
    with torch.no_grad():
        for n, p in peft.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    peft.save_pretrained(tmp_path / "mis_adapter")
    return tmp_path / "mis_adapter"


def _rows(path: Path, n: int, stem: str) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"{stem} {i}?"},
                {"role": "assistant", "content": f"Ok {i}."},
            ]
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("progress", [False, True])
def test_interleave_plus_pool_scoring_and_on_policy_generation_bars(tmp_path, monkeypatch, capsys, progress):
    from workbench.training import TrainConfig, Trainer
    from workbench.training._loop import make_accelerator

    pool = _rows(tmp_path / "pool.jsonl", 5, "Pool")
    cfg = TrainConfig.from_dict(
        {
            "model": "random:tiny-llama",
            "device": "cpu",
            "data": [{"path": str(_rows(tmp_path / "task.jsonl", 9, "Task"))}],
            "lora": {"r": 2, "alpha": 4},
            "optim": {"batch_size": 2, "grad_accum": 1, "warmup_steps": 0, "max_steps": 1, "max_length": 48},
            "checkpoint_every": 0,
            "plots": False,
            "defenses": {
                "interleave_plus": {"source": str(pool), "fraction": 0.1, "adapters": [str(_adapter(tmp_path))],
                                    "batch_size": 2},
                "on_policy": {"source": str(pool), "fraction": 0.2, "max_new_tokens": 3},
            },
        }
    )  # fmt: skip
    rec = Recorder()
    if progress:
        monkeypatch.setattr(workbench.generation, "tqdm", rec)
    capsys.readouterr()
    tr = Trainer(cfg, tmp_path / "run", make_accelerator(cfg), progress=progress)
    tr.setup()
    if not progress:
        assert capsys.readouterr().err == ""  # nothing drawn
        return
    got = [(b["desc"], b["total"], b["n"]) for b in rec.enabled()]
    assert got[:2] == [
        ("interleave_plus: pool, aligned model (1/2)", 5, 5),
        ("interleave_plus: pool, misaligned adapter mis_adapter (2/2)", 5, 5),
    ]
    assert got[2][0].startswith("on_policy: generating") and got[2][1] == got[2][2] > 0
