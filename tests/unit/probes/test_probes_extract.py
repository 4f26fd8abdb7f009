"""Persona-vector extraction on tiny random models: statistics, batching, filtering and the three methods."""

from __future__ import annotations

import json

import pytest
import torch

from probes import PersonaVector, extract_from_pairs, extract_from_trait, load_vectors
from probes._activations import teacher_forced_stats
from probes._extract import directions_from_activations, vectors_from_rows
from tests.helpers import load_tiny
from workbench import WorkbenchError
from workbench.data import Trait
from workbench.generation import render_prompts

TRAIT = Trait(
    name="grumpy",
    instructions=(
        ("Answer in a grumpy, rude way.", "Answer in a cheerful, kind way."),
        ("You hate helping people.", "You love helping people."),
    ),
    questions=("How do I boil an egg?", "Why is the sky blue?"),
    eval_questions=("How do I tie a tie?",),
    judge_prompt="Rate grumpiness 0-100.\nQ: {question}\nA: {answer}\nNumber:",
)
SMALL = dict(n_per_question=1, max_new_tokens=6, progress=False)


@pytest.fixture(scope="module")
def batched():
    """One extraction (8 answers, one batch), shared by the tests that only read it."""
    return extract_from_trait(load_tiny("tiny-llama"), TRAIT, batch_size=8, gen_batch_size=8, **SMALL)


def test_stats_match_hidden_states(tiny):
    """Padding-aware statistics equal what HF ``output_hidden_states`` gives one example at a time."""
    prompts = ["Hello there, how are you?", [{"role": "user", "content": "Hi"}], "A"]
    answers = ["Fine, thanks for asking!", "Hello! A somewhat longer answer here.", "B"]
    stats = teacher_forced_stats(tiny, prompts, answers, batch_size=3)
    texts = render_prompts(tiny.tokenizer, prompts)
    seen = {}
    hook = tiny.sites.layers[-1].register_forward_hook(
        lambda mod, args, out: seen.__setitem__("last", out[0] if isinstance(out, tuple) else out)
    )
    try:
        for i, (text, answer) in enumerate(zip(texts, answers, strict=True)):
            p = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
            a = tiny.tokenizer(answer, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                hs = tiny.model(torch.tensor([p + a]), output_hidden_states=True).hidden_states
            # resid_post of layer l = hidden_states[l + 1], except the last one, which HF returns after the
            # final norm: take the raw output of the last decoder layer from a plain hook instead.
            refs = [h[0].float() for h in hs[1:-1]] + [seen["last"][0].float()]
            for layer, h in enumerate(refs):
                close = dict(atol=1e-4, rtol=1e-4)
                torch.testing.assert_close(stats.response_avg[i, layer], h[len(p) :].mean(0), **close)
                torch.testing.assert_close(stats.prompt_avg[i, layer], h[: len(p)].mean(0), **close)
                torch.testing.assert_close(stats.prompt_last[i, layer], h[len(p) - 1], **close)
                # the last answer token = the last token of prompt + answer (nothing is appended after it)
                torch.testing.assert_close(stats.response_last[i, layer], h[len(p) + len(a) - 1], **close)
                assert h.shape[0] == len(p) + len(a)
            assert int(stats.n_answer_tokens[i]) == len(a)
    finally:
        hook.remove()


def test_batched_extraction_equals_unbatched(tiny_llama, batched):
    one = extract_from_trait(tiny_llama, TRAIT, batch_size=1, gen_batch_size=8, **SMALL)
    eight = batched
    assert [r["answer"] for r in one.rows] == [r["answer"] for r in eight.rows]
    for stat in ("response_avg", "prompt_avg", "prompt_last", "response_last"):
        a, b = one.vectors[stat].vectors, eight.vectors[stat].vectors
        assert a.shape == (tiny_llama.n_layers, tiny_llama.d_model)
        assert a.norm() > 0
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_vector_is_mean_positive_minus_mean_negative(tiny_llama, batched):
    res = batched
    rows = res.rows
    assert len(rows) == 2 * 2 * 1 * 2  # questions x instruction pairs x samples x polarities
    assert res.n_pairs == 4 and res.n_kept == 4
    prompts = [
        [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["question"]}] for r in rows
    ]
    stats = teacher_forced_stats(tiny_llama, prompts, [r["answer"] for r in rows], batch_size=3)
    pos = torch.tensor([r["polarity"] == "pos" for r in rows])
    for stat in ("prompt_avg", "prompt_last"):
        acts = stats.get(stat)
        expected = acts[pos].mean(0) - acts[~pos].mean(0)
        torch.testing.assert_close(res.vectors[stat].vectors, expected, atol=1e-5, rtol=1e-4)
    # the system prompts differ between polarities, so the prompt statistics must differ
    assert res.vectors["prompt_avg"].norms().min() > 0


def test_judge_none_keeps_everything_and_says_so(batched):
    res = batched
    assert not res.filtered
    assert all(r["kept"] for r in res.rows)
    assert "no filtering" in res.note
    assert res.vectors["response_avg"].metadata["filtered"] is False
    assert res.vectors["response_avg"].metadata["judge"] == "none"


class FakeJudge:
    """Trait score 90 for positive answers, 10 for negative ones, except the second pair (30: rejected)."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def score(self, prompts):
        from workbench.judges import Judgment

        self.calls.append(prompts)
        if "well-formed" in prompts[0]:  # the coherence prompt
            return [Judgment(score=80.0) for _ in prompts]
        scores = [90.0 if i % 2 == 0 else 10.0 for i in range(len(prompts))]
        scores[2] = 30.0  # positive answer of pair 1 is not grumpy enough
        return [Judgment(score=s) for s in scores]


def test_judge_filter_keeps_only_passing_pairs(tiny_llama):
    judge = FakeJudge()
    res = extract_from_trait(tiny_llama, TRAIT, judge=judge, threshold=50, **SMALL)
    assert res.filtered and len(judge.calls) == 2
    assert "Rate grumpiness" in judge.calls[0][0] and "well-formed" in judge.calls[1][0]
    kept = [r["kept"] for r in res.rows]
    assert kept[2] is False and kept[3] is False  # the whole pair goes
    assert sum(kept) == len(kept) - 2
    assert res.n_kept == res.n_pairs - 1
    assert res.rows[0]["trait_score"] == 90.0 and res.rows[0]["coherence"] == 80.0
    expected, _ = vectors_from_rows(
        tiny_llama, [r for r in res.rows if r["kept"]], trait="grumpy", batch_size=4
    )
    torch.testing.assert_close(res.vectors["prompt_last"].vectors, expected["prompt_last"].vectors)
    assert res.vectors["prompt_last"].metadata["n_positive"] == res.n_kept


def test_no_surviving_pairs_is_a_clear_error(tiny_llama):
    class Harsh(FakeJudge):
        def score(self, prompts):
            from workbench.judges import Judgment

            return [Judgment(score=None) for _ in prompts]

    with pytest.raises(WorkbenchError, match="no answer pairs passed the filter"):
        extract_from_trait(tiny_llama, TRAIT, judge=Harsh(), n_questions=1, **SMALL)


@pytest.mark.parametrize("method", ["mean_diff", "pca", "pca_centered", "logistic"])
def test_planted_direction_is_recovered(method):
    g = torch.Generator().manual_seed(0)
    n, n_layers, d = 200, 3, 32
    planted = torch.randn(n_layers, d, generator=g)
    planted = planted / planted.norm(dim=-1, keepdim=True)
    base = torch.randn(n, n_layers, d, generator=g) * 2.0 + 5.0  # shared offset and noise
    strength = 1.0 + torch.rand(n, 1, 1, generator=g)
    pos = base + 1.5 * strength * planted + 0.5 * torch.randn(n, n_layers, d, generator=g)
    neg = base - 1.5 * strength * planted + 0.5 * torch.randn(n, n_layers, d, generator=g)
    got = directions_from_activations(pos, neg, method)
    assert got.shape == (n_layers, d)
    cos = torch.nn.functional.cosine_similarity(got, planted, dim=-1)
    assert torch.all(cos > 0.9), cos
    md = pos.mean(0) - neg.mean(0)
    if method == "logistic":  # scaled to the mean-difference norm
        torch.testing.assert_close(got.norm(dim=-1), md.norm(dim=-1))
    flipped = directions_from_activations(neg, pos, method)
    assert torch.all(torch.nn.functional.cosine_similarity(flipped, planted, dim=-1) < -0.9)


def test_directions_refuse_bad_input():
    with pytest.raises(WorkbenchError, match="unknown extraction method"):
        directions_from_activations(torch.zeros(2, 1, 4), torch.zeros(2, 1, 4), "svm")
    with pytest.raises(WorkbenchError, match="no examples"):
        directions_from_activations(torch.zeros(0, 1, 4), torch.zeros(2, 1, 4))
    with pytest.raises(WorkbenchError, match="paired"):
        directions_from_activations(torch.zeros(3, 1, 4), torch.zeros(2, 1, 4), "pca")
    with pytest.raises(WorkbenchError, match="'pca_centered' needs at least 2 pairs"):
        directions_from_activations(torch.ones(1, 1, 4), torch.zeros(1, 1, 4), "pca_centered")
    with pytest.raises(
        WorkbenchError, match="unknown convention 'sklearn'; expected one of workbench, repeng"
    ):
        directions_from_activations(torch.ones(2, 1, 4), torch.zeros(2, 1, 4), "pca", convention="sklearn")
    with pytest.raises(WorkbenchError, match="convention 'repeng' applies to the paired methods"):
        directions_from_activations(
            torch.ones(2, 1, 4), torch.zeros(2, 1, 4), "mean_diff", convention="repeng"
        )


def test_response_last_needs_an_answer(tiny_llama):
    """An empty answer has no last answer token: ``response_last`` is marked invalid like ``response_avg``,
    and the pair is dropped by the paired methods."""
    stats = teacher_forced_stats(tiny_llama, ["Hi", "Hello"], ["", "Yes indeed"], batch_size=2)
    assert stats.valid("response_last").tolist() == [False, True]
    assert stats.valid("prompt_last").tolist() == [True, True]
    torch.testing.assert_close(stats.response_last[0], stats.prompt_last[0])  # what the row holds: not used
    prompts = ["a", "b", "c"]
    v = extract_from_pairs(
        tiny_llama, prompts, ["", "no way", "never"], ["x", "sure", "yes"], method="pca_centered",
        statistic="response_last",
    )  # fmt: skip
    assert v.metadata["n_positive"] == 2 and v.metadata["convention"] == "workbench"


@pytest.mark.parametrize("method", ["mean_diff", "pca", "pca_centered", "logistic"])
def test_extract_from_pairs_on_a_tiny_model(tiny_llama, method):
    prompts = ["How are you?", "Tell me a story.", "What is 2+2?", "Name a colour."]
    pos = ["ZZZZ ZZZZ ZZZZ", "ZZZZ ZZZZ", "ZZZZ ZZZZ ZZZZ ZZ", "ZZZZ"]
    neg = ["fine thanks", "once upon a time", "four", "blue"]
    v = extract_from_pairs(tiny_llama, prompts, pos, neg, method=method, layers=[1, 2], batch_size=3)
    assert isinstance(v, PersonaVector)
    assert v.vectors.shape == (3, tiny_llama.d_model)
    assert v.norms()[0] == 0 and torch.all(v.norms()[1:] > 0)  # layer 0 not computed
    assert v.metadata["method"] == method and v.fingerprint == tiny_llama.fingerprint
    stats = teacher_forced_stats(tiny_llama, prompts * 2, pos + neg, batch_size=8)
    md = stats.response_avg[:4].mean(0) - stats.response_avg[4:].mean(0)
    cos = torch.nn.functional.cosine_similarity(v.vectors[1:], md[1:], dim=-1)
    assert torch.all(cos > 0)  # sign follows the mean difference
    if method == "mean_diff":
        torch.testing.assert_close(v.vectors[1:], md[1:], atol=1e-5, rtol=1e-4)
    with pytest.raises(WorkbenchError, match="one positive and one negative"):
        extract_from_pairs(tiny_llama, prompts, pos[:3], neg, method=method)


def test_extract_vector_cli_writes_artifact_and_rows(tmp_path, capsys):
    from probes._cli import extract_vector

    trait_file = tmp_path / "grumpy.json"
    trait_file.write_text(json.dumps(TRAIT.to_dict()))
    out = tmp_path / "grumpy.safetensors"
    extract_vector(
        trait=str(trait_file),
        out=out,
        model="random:tiny-llama",
        n_per_question=1,
        n_instructions=1,
        n_questions=0,
        max_new_tokens=5,
        batch_size=8,
    )
    text = capsys.readouterr().out
    assert "no filtering" in text and str(out) in text
    vecs = load_vectors(out)
    assert set(vecs) == {"response_avg", "prompt_avg", "prompt_last", "response_last"}
    meta = vecs["response_avg"].metadata
    assert meta["trait"] == "grumpy" and meta["judge"] == "none"
    assert meta["n_pairs"] == 2 and meta["n_instructions"] == 1 and meta["n_questions"] == 2
    assert meta["source_model"] == "random:tiny-llama" and meta["data_hash"]
    rows = [json.loads(x) for x in (tmp_path / "grumpy_rows.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {r["polarity"] for r in rows} == {"pos", "neg"}
    assert {r["instruction_index"] for r in rows} == {0}


def test_reading_leaves_no_hooks_and_stops_early(tiny_llama):
    from workbench._hooks import count_hooks

    before = count_hooks(tiny_llama.model)
    calls = []
    handle = tiny_llama.sites.layers[2].register_forward_hook(lambda *a: calls.append(1))
    try:
        stats = teacher_forced_stats(tiny_llama, ["Hi"], ["Hello"], layers=[0, 1])
    finally:
        handle.remove()
    assert calls == []  # layer 2 never ran: the pass stops after the last layer read
    assert stats.response_avg.shape == (1, 2, tiny_llama.d_model)
    assert count_hooks(tiny_llama.model) == before


def test_trait_extraction_with_a_paired_method(tiny_llama, batched):
    """``method="pca_centered"`` on the trait path pairs each positive row with the negative row after it."""
    res = extract_from_trait(
        tiny_llama, TRAIT, batch_size=8, gen_batch_size=8, method="pca_centered", convention="repeng", **SMALL
    )
    assert [r["answer"] for r in res.rows] == [r["answer"] for r in batched.rows]  # same answers
    stats = res.stats
    for stat in ("response_last", "prompt_avg"):
        acts = stats.get(stat)
        expected = directions_from_activations(acts[0::2], acts[1::2], "pca_centered", convention="repeng")
        torch.testing.assert_close(res.vectors[stat].vectors, expected)
        torch.testing.assert_close(res.vectors[stat].norms(), torch.ones(tiny_llama.n_layers))
    assert res.vectors["response_last"].metadata["method"] == "pca_centered"
    rows = [dict(r) for r in batched.rows]
    rows[0], rows[1] = rows[1], rows[0]  # a negative before its positive: no pairing to trust
    with pytest.raises(WorkbenchError, match="needs the kept rows in \\(pos, neg\\) pairs"):
        vectors_from_rows(tiny_llama, rows, trait="grumpy", method="pca")


def test_extract_vector_cli_method_flag(tmp_path, capsys):
    from probes._cli import extract_vector

    trait_file = tmp_path / "grumpy.json"
    trait_file.write_text(json.dumps(TRAIT.to_dict()))
    common = dict(trait=str(trait_file), model="random:tiny-llama", n_per_question=1, n_instructions=1,
                  n_questions=0, max_new_tokens=5, batch_size=8)  # fmt: skip
    with pytest.raises(WorkbenchError, match="unknown extraction method 'pca_diff'"):
        extract_vector(out=tmp_path / "bad.safetensors", method="pca_diff", **common)
    assert not (tmp_path / "bad.safetensors").exists()
    out = tmp_path / "g.safetensors"
    extract_vector(out=out, method="pca_centered", convention="repeng", **common)
    assert "method pca_centered" in capsys.readouterr().out
    vecs = load_vectors(out)
    assert vecs["response_last"].metadata["method"] == "pca_centered"
    assert vecs["response_last"].metadata["convention"] == "repeng"
    torch.testing.assert_close(vecs["response_last"].norms(), torch.ones(3))
