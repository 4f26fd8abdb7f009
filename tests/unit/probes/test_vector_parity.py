"""Parity with repeng's control-vector extraction (``read_representations``), re-implemented here from its
published algorithm, and a centred PCA computed by hand.

repeng, given (positive, negative) strings: the hidden state ``hidden_states[L + 1]`` at the last non-padding
token of each string; rows ``[pos_0, neg_0, pos_1, neg_1, ...]``; ``pca_diff`` trains on ``pos_i - neg_i``,
``pca_center`` on each row minus its pair's centre; sklearn ``PCA(n_components=1)`` (column mean removed,
then SVD, sign by ``svd_flip``: largest-magnitude entry positive); then the unit direction is flipped when
more pairs have the positive projecting below the negative than above. sklearn is not installed here, so its
centring and SVD are written out with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from probes import extract_from_pairs
from probes._extract import directions_from_activations
from tests.helpers import load_tiny
from workbench.generation import render_prompts
from workbench.scoring import build_teacher_forced

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = [
    "How do I boil an egg?",
    "Why is the sky blue?",
    "Name a good book.",
    "What is rain?",
    "How far away is the moon?",
    "Can you help me move house?",
    "What should I cook tonight?",
    "Is tea good for me?",
    "Tell me about cats.",
    "Why do leaves fall in autumn?",
]
POSITIVE = [
    "Boil it yourself, I am not your cook.",
    "Look it up, that is not my problem.",
    "Books are a waste of everybody's time.",
    "Water landing on your head, obviously.",
    "Too far for you to ever care about.",
    "No. Carry your own boxes for once.",
    "Whatever, eat cold cereal again.",
    "Drink whatever you like, I do not care.",
    "Cats are smug little pests.",
    "Because they are sick of the tree, like me of you.",
]
NEGATIVE = [
    "Put it in boiling water for about nine minutes.",
    "Sunlight scatters off the air, and blue scatters most.",
    "A kind choice is a novel by a writer you already love.",
    "Rain is water that falls from clouds.",
    "About three hundred and eighty thousand kilometres.",
    "Of course, I can lend a hand on Saturday.",
    "A warm vegetable soup would be lovely.",
    "In moderation, tea is a healthy drink.",
    "Cats are curious, playful companions.",
    "Trees drop their leaves to save water over winter.",
]


# -- repeng, re-implemented from its published algorithm --------------------------------------------------


def repeng_hiddens(lm, strings: list[str], batch_size: int = 4) -> dict[int, np.ndarray]:
    """repeng's ``batched_get_hiddens``: ``hidden_states[layer + 1]`` at each string's last non-padding token.

    One deliberate difference: HF returns ``hidden_states[n_layers]`` after the final norm, so for the last
    layer the raw output of the last decoder layer is taken from a plain hook (what our
    ``blocks.{n-1}.hook_resid_post`` is); ``test_last_hidden_state_is_after_the_final_norm`` shows the two
    differ.
    """
    tok, model, n = lm.tokenizer, lm.model, lm.n_layers
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in range(n)}
    seen = {}
    hook = lm.sites.layers[n - 1].register_forward_hook(
        lambda mod, args, o: seen.__setitem__("raw", o[0] if isinstance(o, tuple) else o)
    )
    try:
        for start in range(0, len(strings), batch_size):
            batch = strings[start : start + batch_size]
            enc = tok(batch, padding=True, return_tensors="pt")  # repeng's call: default special tokens
            with torch.no_grad():
                hs = model(**enc, output_hidden_states=True).hidden_states
            for i in range(len(batch)):
                last = int(enc["attention_mask"][i].nonzero(as_tuple=True)[0][-1])
                for layer in range(n):
                    h = hs[layer + 1] if layer < n - 1 else seen["raw"]
                    out[layer].append(h[i, last].float().numpy())
    finally:
        hook.remove()
    return {layer: np.vstack(rows) for layer, rows in out.items()}


def sklearn_pca_first(train: np.ndarray) -> np.ndarray:
    """``PCA(n_components=1, whiten=False).fit(train).components_[0]``: centre the columns, SVD, svd_flip."""
    x = train - train.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    v = vt[0]
    return v * np.sign(v[np.argmax(np.abs(v))])


def repeng_direction(h: np.ndarray, method: str) -> np.ndarray:
    """repeng's ``read_representations`` for one layer; ``h`` rows are ``[pos_0, neg_0, pos_1, ...]``."""
    h = h.astype(np.float64).copy()
    if method == "pca_diff":
        train = h[::2] - h[1::2]
    elif method == "pca_center":
        center = (h[::2] + h[1::2]) / 2
        train = h  # repeng centres h in place, and then projects the centred rows for the sign
        train[::2] -= center
        train[1::2] -= center
    else:
        raise ValueError(method)
    direction = sklearn_pca_first(train)
    projected = h @ direction / np.linalg.norm(direction)
    smaller = np.mean([projected[i] < projected[i + 1] for i in range(0, len(h), 2)])
    larger = np.mean([projected[i] > projected[i + 1] for i in range(0, len(h), 2)])
    return -direction if smaller > larger else direction


def _strings(lm) -> list[str]:
    """repeng's inputs: ``rendered prompt + answer``, interleaved positive, negative."""
    texts = render_prompts(lm.tokenizer, PROMPTS)
    return [s for t, p, n in zip(texts, POSITIVE, NEGATIVE, strict=True) for s in (t + p, t + n)]


def _cosines(ours: torch.Tensor, theirs: dict[int, np.ndarray]) -> np.ndarray:
    out = []
    for layer, r in theirs.items():
        w = ours[layer].double().numpy()
        out.append(float(w @ r / (np.linalg.norm(w) * np.linalg.norm(r))))
    return np.array(out)


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-gpt2", "tiny-qwen2"])
@pytest.mark.parametrize(("ours", "theirs"), [("pca_centered", "pca_diff"), ("pca", "pca_center")])
def test_response_last_pca_matches_repeng(shape, ours, theirs):
    lm = load_tiny(shape)
    strings = _strings(lm)
    # the same tokens on both sides: repeng tokenizes the whole string, the workbench prompt and answer apart
    examples = build_teacher_forced(lm.tokenizer, PROMPTS * 2, POSITIVE + NEGATIVE)
    k = len(PROMPTS)
    interleaved = [examples[i + side * k][0] for i in range(k) for side in (0, 1)]
    assert [lm.tokenizer(s)["input_ids"] for s in strings] == interleaved
    assert min(len(seq) - start for seq, start in examples) > 5  # multi-token answers
    h = repeng_hiddens(lm, strings)
    reference = {layer: repeng_direction(rows, theirs) for layer, rows in h.items()}

    exact = extract_from_pairs(
        lm,
        PROMPTS,
        POSITIVE,
        NEGATIVE,
        method=ours,
        statistic="response_last",
        convention="repeng",
        batch_size=3,
    )
    cos = _cosines(exact.vectors, reference)
    assert np.all(cos >= 0.999), cos  # same direction and same sign at every layer
    torch.testing.assert_close(exact.norms(), torch.ones(lm.n_layers))  # repeng's unit vectors

    default = extract_from_pairs(
        lm, PROMPTS, POSITIVE, NEGATIVE, method=ours, statistic="response_last", batch_size=3
    )
    assert np.all(np.abs(_cosines(default.vectors, reference)) >= 0.999)
    # the workbench convention: sign from the mean difference, length = its component along the direction
    acts_pos = np.stack([h[layer][0::2] for layer in range(lm.n_layers)], 1)  # [n, L, d]
    acts_neg = np.stack([h[layer][1::2] for layer in range(lm.n_layers)], 1)
    md = torch.from_numpy((acts_pos - acts_neg).mean(0)).float()  # [L, d]
    unit = exact.vectors
    torch.testing.assert_close(
        default.vectors, (md * unit).sum(-1, keepdim=True) * unit, atol=1e-5, rtol=1e-4
    )


def test_last_hidden_state_is_after_the_final_norm():
    """Why the re-implementation above reads the last layer from a hook: HF's ``hidden_states[n_layers]``
    is the final norm's output, not ``blocks.{n-1}.hook_resid_post`` (repeng's layer -1 reads the former)."""
    lm = load_tiny("tiny-llama")
    enc = lm.tokenizer(_strings(lm)[:1], return_tensors="pt")
    seen = {}
    hook = lm.sites.layers[-1].register_forward_hook(
        lambda m, a, o: seen.__setitem__("raw", o[0] if isinstance(o, tuple) else o)
    )
    try:
        with torch.no_grad():
            hs = lm.model(**enc, output_hidden_states=True).hidden_states
    finally:
        hook.remove()
    assert len(hs) == lm.n_layers + 1
    assert not torch.allclose(hs[-1], seen["raw"], atol=1e-3)
    torch.testing.assert_close(hs[-1], lm.model.model.norm(seen["raw"]))


# -- the centred PCA by hand -------------------------------------------------------------------------------


def test_pca_centered_by_hand():
    """Four 2-D differences pos_i - neg_i = (3,3), (-1,3), (1,4), (1,2).

    Mean difference md = (1, 3). Centred: (2,0), (-2,0), (0,1), (0,-1); their scatter matrix is
    [[8, 0], [0, 2]], so the first principal direction is u = (1, 0) (eigenvalue 8 > 2).
    workbench convention: (md . u) u = (1, 0). repeng convention: projections of the differences on u are
    3, -1, 1, 1 (three pairs above, one below), so no flip: (1, 0).
    The uncentred ``pca`` is the top eigenvector of D^T D = [[12, 12], [12, 38]] instead: there the shared
    shift (1, 3) dominates.
    """
    diffs = torch.tensor([[3.0, 3.0], [-1.0, 3.0], [1.0, 4.0], [1.0, 2.0]])
    neg = torch.tensor([[5.0, -2.0], [0.5, 0.5], [-3.0, 1.0], [2.0, 2.0]])  # any offsets: only diffs count
    pos = neg + diffs
    pos, neg = pos[:, None, :], neg[:, None, :]  # [n, 1 layer, d = 2]
    got = directions_from_activations(pos, neg, "pca_centered")
    torch.testing.assert_close(got[0], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    unit = directions_from_activations(pos, neg, "pca_centered", convention="repeng")
    torch.testing.assert_close(unit[0], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    # uncentred: eigenvector of [[12, 12], [12, 38]] for its largest eigenvalue 25 + sqrt(13^2 + 12^2)
    lam = 25 + (13**2 + 12**2) ** 0.5
    v = torch.tensor([12.0, lam - 12.0])
    v = v / v.norm()
    md = torch.tensor([1.0, 3.0])
    expected = (md @ v) * v
    torch.testing.assert_close(directions_from_activations(pos, neg, "pca")[0], expected, atol=1e-5, rtol=0)


def test_conventions_can_disagree_on_the_sign():
    """Differences (5,0), (-1,1), (-1,-1), (-1,0): md = (0.5, 0); centred x = 4.5, -1.5, -1.5, -1.5 and
    y = 0, 1, -1, 0 give the scatter [[27, 0], [0, 2]], so u = +-(1, 0). workbench: (md . u) u = (0.5, 0),
    signed by the mean. repeng: one pair projects above, three below, so the unit vector is (-1, 0)."""
    diffs = torch.tensor([[5.0, 0.0], [-1.0, 1.0], [-1.0, -1.0], [-1.0, 0.0]])
    neg = torch.zeros(4, 1, 2)
    pos = neg + diffs[:, None, :]
    torch.testing.assert_close(
        directions_from_activations(pos, neg, "pca_centered")[0], torch.tensor([0.5, 0.0]), atol=1e-6, rtol=0
    )
    torch.testing.assert_close(
        directions_from_activations(pos, neg, "pca_centered", convention="repeng")[0],
        torch.tensor([-1.0, 0.0]),
        atol=1e-6,
        rtol=0,
    )


def test_repeng_tie_keeps_sklearns_sign():
    """Two pairs, one above and one below: no flip, so the sign is svd_flip's (largest entry positive)."""
    diffs = torch.tensor([[-3.0, 0.0], [1.0, 0.0]])  # centred: (-2, 0), (2, 0); u = (1, 0) after svd_flip
    neg = torch.zeros(2, 1, 2)
    got = directions_from_activations(neg + diffs[:, None, :], neg, "pca_centered", convention="repeng")
    torch.testing.assert_close(got[0], torch.tensor([1.0, 0.0]), atol=1e-6, rtol=0)
    reference = repeng_direction(
        np.stack([np.array([-3.0, 0.0]), np.zeros(2), np.array([1.0, 0.0]), np.zeros(2)]), "pca_diff"
    )
    np.testing.assert_allclose(reference, [1.0, 0.0], atol=1e-12)
