"""Several steering / gate coefficients evaluated in one pass, one coefficient per batch row."""

from __future__ import annotations

import json

import torch

from probes import PersonaVector
from steering import Steerer
from tests.unit.test_reliability_inputs import run_main
from workbench import load_model
from workbench.data import make_dataset
from workbench.evaluation import EvalConfig, Evaluator, SharedGeneration


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
