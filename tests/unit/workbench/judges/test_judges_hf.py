"""The hf judge's number scoring: the digit prefix tree on hand-made distributions, then a tiny random Llama."""

from __future__ import annotations

import pytest
import torch

from workbench.judges._hf import (
    HFJudge,
    NumberTree,
    digit_continuations,
    judgment_from_number_probs,
    number_distribution,
    number_sequences,
)

# --- the tree on fake distributions -------------------------------------------------------------------

DIGITS, X, EOS, VOCAB = list(range(10)), 10, 11, 12  # one token per digit, a word, an end token


def digit_tree() -> NumberTree:
    return NumberTree.from_sequences([[int(c) for c in str(k)] for k in range(101)])


def dist(**probs: float) -> torch.Tensor:
    """A next-token distribution over the fake vocabulary: keys 'd4' (digit 4), 'x', 'eos'."""
    v = torch.zeros(VOCAB)
    for name, p in probs.items():
        v[{"x": X, "eos": EOS}.get(name, int(name[1:]) if name.startswith("d") else -1)] = p
    assert abs(float(v.sum()) - 1.0) < 1e-6
    return v


def test_digit_tree_needs_eleven_distributions():
    tree = digit_tree()
    assert tree.nodes == ((),) + tuple((d,) for d in range(1, 10)) + ((1, 0),)


def test_tree_probabilities_by_hand():
    tree = digit_tree()
    uniform = torch.full((VOCAB,), 1.0 / VOCAB)
    node_dists = {node: uniform for node in tree.nodes}
    node_dists[()] = dist(d4=0.5, d1=0.2, x=0.3)
    node_dists[(4,)] = dist(d2=0.6, eos=0.4)
    node_dists[(1,)] = dist(d0=0.5, eos=0.5)
    node_dists[(1, 0)] = dist(d0=0.2, eos=0.8)
    probs = torch.stack([node_dists[n] for n in tree.nodes])[None]  # [1, n_nodes, vocab]
    continues = torch.tensor([True] * 10 + [False, False])
    p = number_distribution(tree, probs, continues)[0]
    expected = {4: 0.5 * 0.4, 42: 0.5 * 0.6, 1: 0.2 * 0.5, 10: 0.2 * 0.5 * 0.8, 100: 0.2 * 0.5 * 0.2}
    for k in range(101):
        assert float(p[k]) == pytest.approx(expected.get(k, 0.0), abs=1e-7), k
    judgment = judgment_from_number_probs(p.tolist())
    by_hand = sum(k * v for k, v in expected.items()) / sum(expected.values())  # 16.3 / 0.7
    assert judgment.score == pytest.approx(by_hand)
    assert judgment.raw["42"] == pytest.approx(0.3) and len(judgment.raw) == 20


def test_low_number_mass_gives_no_score():
    tree = digit_tree()
    probs = torch.stack([dist(d5=0.2, x=0.8)] + [dist(eos=1.0)] * (len(tree.nodes) - 1))[None]
    p = number_distribution(tree, probs, torch.tensor([True] * 10 + [False, False]))[0]
    assert float(p[5]) == pytest.approx(0.2)
    assert judgment_from_number_probs(p.tolist()).score is None


def test_whole_number_tokens_need_only_the_root():
    tree = NumberTree.from_sequences([[k] for k in range(101)])  # token id k spells the number k
    assert tree.nodes == ((),)
    root = torch.zeros(1, 1, 110)
    root[0, 0, 30], root[0, 0, 90], root[0, 0, 105] = 0.25, 0.25, 0.5
    p = number_distribution(tree, root, torch.zeros(110, dtype=torch.bool))[0]
    assert judgment_from_number_probs(p.tolist()).score == pytest.approx(60.0)


def test_mixed_tokenization_tree():
    # 0..9 single tokens, 10..99 as one two-digit token after a digit, 100 as "10" + "0".
    seqs = [[k] for k in range(10)] + [[200 + k] for k in range(10, 100)] + [[300, 0]]
    tree = NumberTree.from_sequences(seqs)
    assert tree.nodes == ((), (300,))


def test_byte_tokenizer_sequences_and_digit_mask():
    from workbench._tokenizer import byte_tokenizer

    tok = byte_tokenizer()
    seqs = number_sequences(tok, "<|im_start|>assistant\n")
    assert [tok.decode(s) for s in seqs] == [str(k) for k in range(101)]
    assert len(seqs[42]) == 2 and len(seqs[100]) == 3
    mask = digit_continuations(tok, seqs[1], 300)
    assert mask.shape == (300,) and int(mask.sum()) == 10
    assert tok.decode([int(i) for i in mask.nonzero()]) == "0123456789"


# --- a tiny random Llama through workbench.load_model -------------------------------------------------

PROMPTS = ["Rate this answer from 0 to 100: 'hello'", "A much longer judge prompt, " * 5 + "score?", "7?"]


@pytest.fixture(scope="module")
def judge() -> HFJudge:
    return HFJudge("random:tiny-llama", device="cpu", dtype="float32", batch_size=2)


def test_cached_tree_equals_full_recompute(judge):
    tok = judge.loaded.tokenizer
    ids = [tok(judge._render(p), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    fast = judge.number_probs(ids)
    assert judge.reuse_cache, "the KV-cache path failed and fell back to recomputing"
    judge.reuse_cache = False
    try:
        slow = judge.number_probs(ids)
    finally:
        judge.reuse_cache = True
    assert fast.shape == (3, 101)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-4)


def test_batched_equals_unbatched(judge):
    tok = judge.loaded.tokenizer
    ids = [tok(judge._render(p), add_special_tokens=False)["input_ids"] for p in PROMPTS]
    batched = judge.number_probs(ids)
    single = torch.cat([judge.number_probs([i]) for i in ids])
    torch.testing.assert_close(batched, single, atol=1e-6, rtol=1e-4)


@torch.no_grad()
def test_number_probs_match_an_independent_forward(judge):
    model, tok = judge.loaded.model, judge.loaded.tokenizer
    prompt = tok(judge._render(PROMPTS[0]), add_special_tokens=False)["input_ids"]
    got = judge.number_probs([prompt])[0]
    digits = torch.tensor(tok.convert_tokens_to_ids(list("0123456789")))
    for k in (0, 3, 10, 42, 100):
        seq = [int(t) for t in tok(str(k), add_special_tokens=False)["input_ids"]]
        probs = model(torch.tensor([prompt + seq])).logits[0].float().softmax(-1)  # [pos, vocab]
        p = 1.0
        for i, t in enumerate(seq):
            p *= float(probs[len(prompt) - 1 + i, t])
        if k in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10):  # numbers that longer numbers continue: times P(stop)
            p *= 1.0 - float(probs[-1, digits].sum())
        assert float(got[k]) == pytest.approx(p, rel=1e-4), k


def test_biased_model_scores_the_expected_mix(judge, tmp_path):
    """With '7' and the end token equally likely everywhere: P(7) = P(77) = 1/4, so the score is 42."""
    model, tok = judge.loaded.model, judge.loaded.tokenizer
    bias = torch.zeros(model.get_output_embeddings().weight.shape[0])
    bias[tok.convert_tokens_to_ids("7")] = 30.0
    bias[tok.eos_token_id] = 30.0
    handle = model.get_output_embeddings().register_forward_hook(
        lambda m, i, out: torch.zeros_like(out) + bias
    )
    try:
        cached_judge = HFJudge("random:tiny-llama", tmp_path, loaded=judge.loaded, batch_size=2)
        out = cached_judge.score(PROMPTS)
    finally:
        handle.remove()
    for j in out:
        assert j.score == pytest.approx(42.0, abs=0.01)
        assert j.raw["7"] == pytest.approx(0.25, abs=1e-3) and j.raw["77"] == pytest.approx(0.25, abs=1e-3)
    again = HFJudge("random:tiny-llama", tmp_path, loaded=judge.loaded).score(PROMPTS)
    assert all(j.cached for j in again) and [j.score for j in again] == [j.score for j in out]
    assert (tmp_path / "hf_random_tiny-llama.jsonl").exists()


def test_make_judge_hf_spec_keeps_the_model_spec_and_loads_lazily(tmp_path):
    from workbench.judges import make_judge

    judge = make_judge("hf:random:tiny-llama", cache_dir=tmp_path, batch_size=4)
    assert isinstance(judge, HFJudge)
    assert (
        judge.name == "hf:random:tiny-llama" and judge.spec == "random:tiny-llama" and judge.batch_size == 4
    )
    assert judge._loaded is None  # nothing loaded until the first prompt that is not cached
