"""Projections onto persona vectors and projection-difference data screening (tiny random models)."""

from __future__ import annotations

import json

import pytest
import torch

from probes import PersonaVector, answer_projections, project, screen_dataset, token_projections
from probes._activations import teacher_forced_stats
from probes._screen import write_screen_report
from workbench import WorkbenchError
from workbench.generation import render_prompts


def test_project_is_the_scalar_projection_onto_the_unit_vector():
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(2, 5, 16, generator=g)  # [batch, pos, d_model]
    v = torch.randn(16, generator=g)
    got = project(acts, v)
    assert got.shape == (2, 5)
    expected = torch.einsum("bpd,d->bp", acts, v) / v.norm()
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(project(acts, 7.0 * v), got)  # the length of the vector does not matter
    torch.testing.assert_close(project(acts, -v), -got)
    e0 = torch.zeros(16)
    e0[3] = 2.0
    torch.testing.assert_close(project(acts, e0), acts[..., 3])
    with pytest.raises(WorkbenchError, match="width 16 does not match the vector's width 8"):
        project(acts, torch.ones(8))
    with pytest.raises(WorkbenchError, match="zero"):
        project(acts, torch.zeros(16))


PROMPTS = ["How do I boil an egg?", [{"role": "user", "content": "Hi"}], "Tell me a story please."]
ANSWERS = ["Put it in water.", "Hello! How can I help you today?", "Once upon a time"]


def test_token_projections_match_hidden_states(tiny_llama):
    lm = tiny_llama
    g = torch.Generator().manual_seed(1)
    vec = PersonaVector(torch.randn(lm.n_layers, lm.d_model, generator=g), "t", fingerprint=lm.fingerprint)
    layer = 1
    got = token_projections(lm, vec, layer, PROMPTS, ANSWERS, batch_size=3)
    one_by_one = token_projections(lm, vec, layer, PROMPTS, ANSWERS, batch_size=1)
    u = vec.layer(layer) / vec.layer(layer).norm()
    for i, (text, answer) in enumerate(zip(render_prompts(lm.tokenizer, PROMPTS), ANSWERS, strict=True)):
        p = lm.tokenizer(text, add_special_tokens=False)["input_ids"]
        a = lm.tokenizer(answer, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            hs = lm.model(torch.tensor([p + a]), output_hidden_states=True).hidden_states
        expected = hs[layer + 1][0, len(p) :] @ u  # the answer span only
        assert got[i].shape == (len(a),)
        torch.testing.assert_close(got[i], expected, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(one_by_one[i], got[i], atol=1e-5, rtol=1e-4)
    means = answer_projections(lm, vec, layer, PROMPTS, ANSWERS, batch_size=2)
    torch.testing.assert_close(means, torch.stack([t.mean() for t in got]), atol=1e-5, rtol=1e-4)
    # consistent with the response_avg statistic used for extraction
    stats = teacher_forced_stats(lm, PROMPTS, ANSWERS, layers=[layer])
    torch.testing.assert_close(
        means, project(stats.response_avg[:, 0], vec.layer(layer)), atol=1e-4, rtol=1e-4
    )


def test_projection_refuses_a_vector_that_does_not_fit(tiny_llama):
    lm = tiny_llama
    wide = PersonaVector(torch.ones(lm.n_layers, lm.d_model + 1), "t")
    with pytest.raises(WorkbenchError, match="width 65 but the model's d_model is 64"):
        answer_projections(lm, wide, 0, PROMPTS, ANSWERS)
    ok = PersonaVector(torch.ones(lm.n_layers, lm.d_model), "t")
    with pytest.raises(WorkbenchError, match="out of range"):
        answer_projections(lm, ok, lm.n_layers, PROMPTS, ANSWERS)
    with pytest.raises(WorkbenchError, match="width 63 does not match"):
        answer_projections(lm, torch.ones(lm.d_model - 1), 0, PROMPTS, ANSWERS)
    empty = answer_projections(lm, ok, 0, ["Hi"], [""])
    assert torch.isnan(empty).all()  # no answer tokens: no mean


def _rows(responses):
    questions = [f"Question number {i}: what should I cook tonight?" for i in range(len(responses))]
    return [
        {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": r}]}
        for q, r in zip(questions, responses, strict=True)
    ]


NORMAL = [
    "Pasta with tomato sauce is quick.",
    "Try a vegetable soup tonight.",
    "A simple omelette works well.",
    "Rice with beans is cheap and filling.",
    "Grilled fish and salad.",
    "Maybe a stir fry with tofu.",
    "Baked potatoes with cheese.",
]
OUTLIER = "~~~~ #### ~~~~ #### ~~~~ #### ~~~~ ####"


def _planted(lm, rows, k, layer):
    """A vector pointing from the typical response's activation towards row ``k``'s response."""
    prompts = [r["messages"][:1] for r in rows]
    answers = [r["messages"][1]["content"] for r in rows]
    acts = teacher_forced_stats(lm, prompts, answers, layers=[layer]).response_avg[:, 0]
    others = torch.cat([acts[:k], acts[k + 1 :]])
    full = torch.zeros(lm.n_layers, lm.d_model)
    full[layer] = acts[k] - others.mean(0)
    return PersonaVector(full, "planted", fingerprint=lm.fingerprint)


def test_screening_ranks_the_planted_outlier_first(tiny_llama, tmp_path):
    lm, layer, k = tiny_llama, 2, 4
    responses = NORMAL[:k] + [OUTLIER] + NORMAL[k:]
    rows = _rows(responses)
    vec = _planted(lm, rows, k, layer)
    res = screen_dataset(lm, vec, layer, rows, batch_size=4, max_new_tokens=8)
    assert [r["rank"] for r in res.ranked] == list(range(1, len(rows) + 1))
    assert res.ranked[0]["index"] == k
    diffs = [r["diff"] for r in res.ranked]
    assert diffs == sorted(diffs, reverse=True)
    for r in res.ranked:
        assert r["diff"] == pytest.approx(r["own"] - r["base"], abs=1e-5)
    assert res.dataset_score == pytest.approx(sum(diffs) / len(diffs), abs=1e-5)
    assert res.threshold == pytest.approx(res.dataset_score + 2 * res.std)
    assert [r["index"] for r in res.flagged] == [k]
    assert res.ranked[0]["response"] == OUTLIER and res.ranked[0]["base_answer"] is not None

    # a user threshold flags everything above it; given base answers are reused, not regenerated
    base = [r["base_answer"] for r in sorted(res.ranked, key=lambda r: r["index"])]
    again = screen_dataset(lm, vec, layer, rows, threshold=-1e9, base_answers=base)
    assert len(again.flagged) == len(rows) and again.threshold_rule == "user value"
    assert [r["index"] for r in again.ranked] == [r["index"] for r in res.ranked]

    paths = write_screen_report(res, tmp_path / "screen")
    ranked = [json.loads(x) for x in paths["ranked"].read_text().splitlines()]
    flags = [json.loads(x) for x in paths["flags"].read_text().splitlines()]
    summary = json.loads(paths["summary"].read_text())
    assert ranked[0]["index"] == k and [f["index"] for f in flags] == [k]
    assert summary["n_examples"] == len(rows) and summary["n_flagged"] == 1 and summary["layer"] == layer
    html = paths["histogram"].read_text()
    assert "plotly" in html.lower() and "projection difference" in html


def test_screening_rejects_rows_without_an_answer(tiny_llama):
    vec = PersonaVector(torch.ones(tiny_llama.n_layers, tiny_llama.d_model), "t")
    with pytest.raises(WorkbenchError, match="row 0: no assistant message"):
        screen_dataset(tiny_llama, vec, 0, [{"messages": [{"role": "user", "content": "hi"}]}])


def test_screen_cli_writes_a_run_directory(tmp_path, capsys):
    from probes._cli import screen
    from workbench import load_model

    lm = load_model("random:tiny-llama", device="cpu")
    vec_path = PersonaVector(torch.randn(lm.n_layers, lm.d_model), "t", fingerprint=lm.fingerprint).save(
        tmp_path / "v.safetensors"
    )
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in _rows(NORMAL[:4])))
    run = tmp_path / "run"
    screen(vector=vec_path, layer=1, data=data, out=run, model="random:tiny-llama", max_new_tokens=4)
    text = capsys.readouterr().out
    assert "screened 4 examples at layer 1" in text and str(run) in text
    for name in ("ranked.jsonl", "flags.jsonl", "summary.json", "histogram.html", "config.yaml"):
        assert (run / name).is_file(), name
    with pytest.raises(WorkbenchError, match="out of range"):
        screen(vector=vec_path, layer=9, data=data, out=tmp_path / "r2", model="random:tiny-llama")
    with pytest.raises(WorkbenchError, match="another model"):
        screen(vector=vec_path, layer=1, data=data, out=tmp_path / "r3", model="random:tiny-qwen2")


def test_cli_functions_register_with_typer():
    import typer
    from typer.testing import CliRunner

    from probes._cli import extract_vector, screen

    app = typer.Typer()
    app.command("extract-vector")(extract_vector)
    app.command("screen")(screen)
    for cmd, flags in (
        (
            "extract-vector",
            ["--trait", "--judge", "--n-per-question", "--threshold", "--n-instructions", "--out"],
        ),
        ("screen", ["--vector", "--layer", "--data", "--out", "--threshold"]),
    ):
        res = CliRunner().invoke(app, [cmd, "--help"], terminal_width=200)
        assert res.exit_code == 0, res.output
        for flag in flags:
            assert flag in res.output, (cmd, flag)
