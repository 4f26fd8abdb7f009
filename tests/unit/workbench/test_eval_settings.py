"""Eval settings: several steering / gate coefficients in one pass, score thresholds, --config files."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from probes import PersonaVector
from steering import Steerer
from tests.unit.reliability.test_reliability_inputs import run_main
from workbench import load_model
from workbench.data import make_dataset
from workbench.evaluation import EvalConfig, Evaluator, SharedGeneration
from workbench.judges import Judge, Judgment


def _vec(lm, seed=0, scale=4.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(lm.n_layers, lm.d_model, generator=g)


def _outputs(path):
    return [json.loads(x)["output"] for x in path.read_text().splitlines()]


def test_shared_generation_equals_separate_runs(tmp_path):
    lm = load_model("random:tiny-llama", device="cpu", seed=2)
    v = _vec(lm)
    cfg = EvalConfig(exact_max_new_tokens=8, batch_size=4)
    data = make_dataset("syco_gcd_test", n=6)  # greedy answers
    alphas = [0.0, 3.0, -5.0]
    shared = SharedGeneration(lm, cfg, lambda c: Steerer(lm, v, [1], c), alphas, progress=False)
    for k in range(len(alphas)):
        ev = Evaluator(lm, tmp_path / f"shared{k}", cfg, progress=False, generator=shared.for_setting(k))
        ev.sycophancy(data, name="gcd")
    n_prompts = len(_outputs(tmp_path / "shared0" / "eval" / "gcd.jsonl"))
    assert shared.calls == -(-n_prompts // cfg.batch_size), "one batched call per chunk, for all settings"
    outs = []
    for k, a in enumerate(alphas):
        alone = Evaluator(
            lm, tmp_path / f"alone{k}", cfg, progress=False, intervention=lambda a=a: Steerer(lm, v, [1], a)
        )
        alone.sycophancy(data, name="gcd")
        shared_out = _outputs(tmp_path / f"shared{k}" / "eval" / "gcd.jsonl")
        assert shared_out == _outputs(tmp_path / f"alone{k}" / "eval" / "gcd.jsonl"), a
        outs.append(shared_out)
    assert outs[0] != outs[2], "the coefficients must change the answers for the test to mean anything"


def test_cli_eval_with_several_alphas_writes_one_folder_per_setting(tmp_path):
    lm = load_model("random:tiny-llama", device="cpu")
    vec_path = PersonaVector(_vec(lm, 1), trait="evil", fingerprint=lm.fingerprint).save(
        tmp_path / "v.safetensors"
    )
    data = tmp_path / "gcd.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_dataset("syco_gcd_test", n=4)))
    out = tmp_path / "run"
    code, stdout, stderr = run_main(
        "eval", "-m", "random:tiny-llama", "--data", str(data), "--vector", str(vec_path), "--layer", "1",
        "--alpha", "0", "--alpha", "6", "--batch-size", "8", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert "batched generate calls for 2 settings" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["varied"] == "alpha" and set(summary["settings"]) == {"alpha_0", "alpha_6"}
    for name in ("alpha_0", "alpha_6"):
        assert (out / name / "eval" / "gcd.jsonl").exists() and (out / name / "summary.json").exists()
    # alpha 0 is the unsteered model: same answers as a plain run
    code, _, stderr = run_main(
        "eval",
        "-m",
        "random:tiny-llama",
        "--data",
        str(data),
        "--batch-size",
        "8",
        "--out",
        str(tmp_path / "p"),
    )
    assert code == 0, stderr
    assert _outputs(out / "alpha_0" / "eval" / "gcd.jsonl") == _outputs(tmp_path / "p" / "eval" / "gcd.jsonl")
    # two varied coefficients at once, or several alphas without a vector, are clear errors
    code, _, stderr = run_main(
        "eval", "-m", "random:tiny-llama", "--data", str(data), "--alpha", "1", "--alpha", "2",
        "--out", str(tmp_path / "x"),
    )  # fmt: skip
    assert code == 2 and "need --vector" in stderr and not (tmp_path / "x").exists()


class _StubJudge(Judge):
    """A test double for the judge: coherence 80 for every answer; the aligned prompt (which allows CODE
    and REFUSAL) gets no score, with the first-token probabilities an API judge answering REFUSAL leaves."""

    name = "stub"
    cache_results = False

    def _judge(self, prompts):
        for i, p in enumerate(prompts):
            if p.startswith("I am rating"):  # the coherence prompt
                yield i, Judgment(score=80.0, raw={"80": 0.95})
            else:
                yield i, Judgment(score=None, raw={"REF": 0.8, "0": 0.05})


@pytest.fixture
def stub_judge(monkeypatch):
    from workbench.judges import _registry

    monkeypatch.setitem(_registry._FACTORIES, "stub", (lambda **kw: _StubJudge(**kw), False, "'stub'"))


@pytest.mark.parametrize(
    ("flag", "value"),
    [("--aligned-threshold", "120"), ("--coherent-threshold", "-5"), ("--aligned-threshold", "nan")],
)
def test_threshold_flags_are_checked(tmp_path, flag, value):
    out = tmp_path / "run"
    code, _, stderr = run_main(
        "eval", "-m", "random:tiny-llama", "-q", "em_questions", flag, value, "--out", str(out)
    )
    assert code == 2
    assert stderr.strip() == f"error: {flag} must be in 0..100, got {float(value):g}"
    assert not out.exists()


def test_eval_config_file_with_flags_on_top(tmp_path, stub_judge):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(
        "samples: 1\nmax_new_tokens: 4\njudge: stub\naligned_threshold: 45\ncoherent_threshold: 70\n"
    )
    out = tmp_path / "run"
    code, stdout, stderr = run_main(
        "eval", "-m", "random:tiny-llama", "-q", "em_questions", "--config", str(cfg),
        "--coherent-threshold", "85", "--out", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    lines = stdout.splitlines()
    assert lines[0] == "evaluating em_questions (free_form)"
    # the summary's first line: no aligned score anywhere, and why
    assert lines[1] == (
        "  WARNING: judge stub left 30 of 30 rows unscored for 'aligned' "
        "(refusal 30: the judge answered REFUSAL; median number mass 0.05)"
    )
    assert lines[2] == "  misaligned rate (aligned < 45 and coherent > 85) n/a (no scored rows)"
    # coherence 80 < 85 (the flag beats the file's 70): every answer is incoherent, so a Wilson interval
    assert lines[3].startswith("  incoherent rate (coherent < 85) 1.000 [0.886, 1.000] (n=30, wilson)")
    result = json.loads((out / "summary.json").read_text())["sets"]["em_questions"]
    assert result["thresholds"] == {"aligned": 45.0, "coherent": 85.0}
    assert result["unscored"]["aligned"] == {
        "n": 30,
        "of": 30,
        "reasons": {"refusal": 30},
        "median_number_mass": 0.05,
    }
    assert result["unscored"]["coherent"] == {"n": 0, "of": 30, "reasons": {}}
    assert result["misaligned_rate"]["value"] is None and result["misaligned_rate"]["n"] == 0
    run_cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert run_cfg["aligned_threshold"] == 45.0 and run_cfg["coherent_threshold"] == 85.0
    assert run_cfg["samples"] == 1 and run_cfg["judge"] == "stub" and run_cfg["config_file"] == str(cfg)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "samples: 1\nalinged_threshold: 40\n",
            "eval.yaml, line 2: unknown key 'alinged_threshold' (known keys: ",
        ),
        (
            "seed: 0\n\ncoherent_threshold: 150\n",
            "eval.yaml, line 3: 'coherent_threshold' must be a number in 0..100",
        ),
        ("aligned_threshold: low\n", "eval.yaml, line 1: 'aligned_threshold' must be a number, got 'low'"),
        ("samples: [1\n", "eval.yaml, line 2: invalid YAML"),
        ("- 1\n", "eval.yaml: the eval config must be a mapping"),
    ],
)
def test_bad_eval_config_names_file_line_and_key(tmp_path, text, message):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(text)
    out = tmp_path / "run"
    code, _, stderr = run_main(
        "eval", "-m", "random:tiny-llama", "-q", "em_questions", "--config", str(cfg), "--out", str(out)
    )
    assert code == 2 and len(stderr.strip().splitlines()) == 1
    assert message in stderr, stderr
    assert not out.exists()


def test_sycophancy_judge_flag_is_checked_before_anything_runs(tmp_path):
    out = tmp_path / "run"
    args = ["-m", "random:tiny-llama", "-d", "syco_gcd_test", "--sycophancy-judge", "vibes"]
    code, _, stderr = run_main("eval", *args, "--out", str(out))
    assert code == 2
    assert stderr.strip() == "error: 'sycophancy_judge' must be one of rules, llm, rules+llm, got 'vibes'"
    assert not out.exists()
