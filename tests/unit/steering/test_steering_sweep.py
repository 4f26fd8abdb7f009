"""Layer sweep, its recommendation rule, the steer / sweep CLI functions and TransformerLens-style hooks."""

from __future__ import annotations

import csv
import json

import pytest
import torch
import typer
from typer.testing import CliRunner

from probes import PersonaVector, answer_projections
from steering import Steerer, SweepResult, sweep, tl_hooks
from steering._sweep import _recommend, default_layers, read_answers
from workbench import WorkbenchError, load_model
from workbench.generation import generate
from workbench.judges import Judge, Judgment

QUESTIONS = ["Hi there", "What is two plus two?"]


@pytest.fixture(scope="module")
def lm():
    return load_model("random:tiny-llama", device="cpu")


def _vec(lm, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(lm.n_layers, lm.d_model, generator=g)


def test_sweep_writes_table_plot_and_summary(lm, tmp_path):
    v = _vec(lm)
    pairs = [{"question": "Q?", "aligned": "a kind answer", "misaligned": "a cruel answer"}]
    res = sweep(lm, v, [0, 2], [2.0, -2.0], QUESTIONS, max_new_tokens=5, pairs=pairs, out=tmp_path)
    assert isinstance(res, SweepResult)
    assert {(r["layer"], r["alpha"]) for r in res.rows} == {(l, a) for l in (0, 2) for a in (-2.0, 0.0, 2.0)}
    with open(tmp_path / "sweep.csv") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 6 and {"layer", "alpha", "trait", "coherence", "margin"} <= set(table[0])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["recommended_layer"] == res.recommended_layer and "rule" in summary
    assert "plotly" in (tmp_path / "sweep.html").read_text()[:200000].lower()
    assert len((tmp_path / "answers.jsonl").read_text().splitlines()) == len(QUESTIONS) * 5  # baseline + 4

    # the alpha-0 cell is the unsteered baseline, measured independently here
    plain = generate(lm, QUESTIONS, max_new_tokens=5)
    unit = v[2] / v[2].norm()
    proj, logps, _ = read_answers(lm, QUESTIONS, plain, {2: unit})
    base = res.cell(2, 0.0)
    assert base["trait_projection"] == pytest.approx(sum(proj[2]) / 2, rel=1e-5)
    assert base["coherence_logprob"] == pytest.approx(sum(logps) / 2, rel=1e-5)
    theirs = answer_projections(lm, v[2], 2, QUESTIONS, plain)  # the probes package's own reading
    assert proj[2] == pytest.approx(theirs.tolist(), rel=1e-4, abs=1e-6)
    # a steered cell's answers are those generated under the Steerer
    with Steerer(lm, v, [0], 2.0):
        steered = generate(lm, QUESTIONS, max_new_tokens=5)
    got = [a["answer"] for a in res.answers if a["layer"] == 0 and a["alpha"] == 2.0]
    assert got == steered


def test_recommendation_rule_prefers_gain_and_drops_incoherent_cells():
    def row(layer, alpha, trait, coherence, std=1.0):
        return {
            "layer": layer,
            "alpha": alpha,
            "trait": trait,
            "coherence": coherence,
            "trait_projection_std": std,
        }

    rows = [
        row(3, 0.0, 1.0, -1.0),
        row(3, 4.0, 3.0, -1.2),  # gain 0.5 per unit, coherent
        row(5, 0.0, 2.0, -1.0),
        row(5, 4.0, 9.0, -3.0),  # gain 1.75 but incoherent (3 nats below baseline... outside 0.5)
        row(5, 2.0, 2.4, -1.1),  # gain 0.2, coherent
        row(7, 0.0, 10.0, -1.0, std=10.0),
        row(7, 4.0, 30.0, -1.0, std=10.0),  # raw gain 5, but 0.5 per baseline std
    ]
    best, gains = _recommend(rows, [3, 5, 7], tolerance=0.5, use_std=True)
    assert gains == pytest.approx({3: 0.5, 5: 0.2, 7: 0.5})
    assert best == 3  # tie with layer 7 goes to the earlier layer
    best, gains = _recommend(rows, [3, 5, 7], tolerance=5.0, use_std=False)
    assert best == 7 and gains[5] == pytest.approx(1.75)
    assert _recommend([row(3, 0.0, 1.0, -1.0), row(3, 4.0, 3.0, -9.0)], [3], 0.5, True)[0] is None


class _KeywordJudge(Judge):
    """A stand-in judge: 80 on trait prompts (they name the trait), 60 on coherence prompts."""

    name = "keyword-test"
    cache_results = False

    def _judge(self, prompts):
        for i, p in enumerate(prompts):
            yield i, Judgment(score=60.0 if "coherent" in p else 80.0 if "evil" in p.lower() else 20.0)


def test_judged_sweep_uses_judge_scores(lm, tmp_path):
    pv = PersonaVector(_vec(lm, 1), trait="evil", fingerprint=lm.fingerprint)
    res = sweep(lm, pv, [1], [4.0], max_new_tokens=3, judge=_KeywordJudge(), questions=QUESTIONS[:1])
    assert res.config["trait"] == "evil"  # taken from the vector, which names a shipped trait
    for r in res.rows:
        assert r["trait_score"] == 80.0 and r["coherence_score"] == 60.0
        assert r["trait"] == r["trait_score"] and r["coherence"] == r["coherence_score"]
        assert r["trait_projection"] is not None  # judge-free measures are kept as well
    assert res.recommended_layer == 1 and res.gains[1] == 0.0


def test_sweep_errors_are_clear(lm):
    v = _vec(lm)
    with pytest.raises(WorkbenchError, match="no questions"):
        sweep(lm, v, [0], [1.0])
    with pytest.raises(WorkbenchError, match="layer 9 is out of range"):
        sweep(lm, v, [9], [1.0], QUESTIONS)
    with pytest.raises(WorkbenchError, match="width 7"):
        sweep(lm, torch.randn(lm.n_layers, 7), [0], [1.0], QUESTIONS)
    with pytest.raises(WorkbenchError, match="needs a trait"):
        sweep(lm, v, [0], [1.0], QUESTIONS, judge=_KeywordJudge())
    assert default_layers(30) == [6, 10, 14, 19, 23] and default_layers(3) == [0, 1, 2]


def test_tl_hooks_apply_the_steerer_edit():
    v = torch.randn(3, 16)
    x = torch.randn(2, 5, 16)
    ((name, fn),) = tl_hooks(v, 1, 2.5)
    assert name == "blocks.1.hook_resid_post"
    assert torch.allclose(fn(x, hook=None), x + 2.5 * v[1])
    ((_, ablate),) = tl_hooks(v, 2, 0.0, mode="ablate")
    u = v[2] / v[2].norm()
    assert (ablate(x, hook=None) @ u).abs().max() < 1e-5
    with pytest.raises(WorkbenchError, match="width 16"):
        fn(torch.randn(1, 2, 8), hook=None)


def _app():
    from steering._cli import steer, sweep_cmd

    app = typer.Typer()
    app.command("steer")(steer)
    app.command("sweep")(sweep_cmd)
    return app


def test_cli_steer_and_sweep(lm, tmp_path):
    pv = PersonaVector(_vec(lm, 2) * 3, trait="evil", fingerprint=lm.fingerprint)
    path = pv.save(tmp_path / "evil.safetensors")
    runner = CliRunner()
    app = _app()
    r = runner.invoke(
        app,
        ["steer", "--model", "random:tiny-llama", "--vector", str(path), "--layer", "1", "--alpha", "4",
         "--prompt", "Hello", "--max-new-tokens", "6"],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "== base" in r.output and "== steered: evil layer 1 alpha 4" in r.output
    out = tmp_path / "run"
    r = runner.invoke(
        app,
        ["sweep", "--model", "random:tiny-llama", "--vector", str(path), "--layers", "0,2", "--alphas", "0,3",
         "--n-questions", "2", "--max-new-tokens", "4", "--out", str(out)],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "recommended layer" in r.output
    for f in ("config.yaml", "sweep.csv", "sweep.html", "summary.json", "answers.jsonl"):
        assert (out / f).exists(), f
    assert json.loads((out / "summary.json").read_text())["config"]["layers"] == [0, 2]
    r = runner.invoke(
        app, ["sweep", "--model", "random:tiny-llama", "--vector", str(path), "--out", str(out)]
    )
    assert r.exit_code != 0  # an existing run directory is not overwritten
