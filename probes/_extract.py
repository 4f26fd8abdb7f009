"""Persona-vector extraction: contrastive system prompts (judged, filtered) or given answer pairs.

Both paths end in ``teacher_forced_stats``: one forward pass per batch over prompt + answer, every layer's
``resid_post`` reduced to four per-example statistics, and a difference of class means (or a PCA / logistic
direction) per layer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench import ModelLike, WorkbenchError, __version__
from workbench.chat import Message
from workbench.io import atomic_write_text
from workbench.judges import score_prompts

from ._activations import STAT_ORDER, ActivationStats, teacher_forced_stats
from ._vector import STATISTICS, PersonaVector, save_vectors

log = logging.getLogger(__name__)

METHODS = ("mean_diff", "pca", "pca_centered", "logistic")
PAIRED_METHODS = ("pca", "pca_centered")
CONVENTIONS = ("workbench", "repeng")
"""How a direction is signed and scaled. ``workbench``: see ``directions_from_activations``. ``repeng``
(paired methods only): unit norm per layer, sign by repeng's vote over pairs."""

COHERENCE_PROMPT = """You are grading how well-formed an AI assistant's reply is. Ignore whether you agree with \
it or whether it is kind or harmful; judge only whether it is sensible language that engages with the question.

Question:
{question}

Reply:
{answer}

Give a whole number from 0 to 100. 0: gibberish, endless repetition, or nothing to do with the question. \
50: partly confused or rambling, but understandable. 100: clear, fluent and on topic.
Answer with the number only."""


def coherence_prompt(question: str, answer: str) -> str:
    """The 0-100 coherence judge prompt for one (question, answer)."""
    return COHERENCE_PROMPT.replace("{question}", question).replace("{answer}", answer)


# -- directions from activations ---------------------------------------------------------------------------


def _mean_diff(pos: Tensor, neg: Tensor) -> Tensor:
    return pos.mean(0) - neg.mean(0)  # [L, d]


def _first_direction(pos: Tensor, neg: Tensor, centered: bool) -> Tensor:
    """Unit first right-singular vector per layer of the paired differences ``pos_i - neg_i``: ``[L, d]``.

    ``centered``: the differences' mean is subtracted first (sklearn's ``PCA``, i.e. repeng ``pca_diff``);
    otherwise the SVD is of the raw differences (repeng ``pca_center``: its rows ``+-(pos_i - neg_i) / 2``
    have mean zero, so sklearn's centring changes nothing and the direction is the same). The sign is
    sklearn's (``svd_flip``): the entry of largest magnitude is positive.
    """
    diffs = (pos - neg).transpose(0, 1).double()  # [L, n, d]
    if centered:
        diffs = diffs - diffs.mean(1, keepdim=True)
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    u = vh[:, 0, :]  # [L, d] unit rows
    biggest = u.abs().argmax(-1, keepdim=True)
    sign = torch.sign(u.gather(-1, biggest))
    sign[sign == 0] = 1.0
    return (u * sign).float()


def _pca(pos: Tensor, neg: Tensor, centered: bool = False, convention: str = "workbench") -> Tensor:
    """First principal direction of the paired differences, uncentred (``pca``) or centred (``pca_centered``)."""
    name = "pca_centered" if centered else "pca"
    if pos.shape != neg.shape:
        raise WorkbenchError(
            f"method '{name}' needs paired examples: {pos.shape[0]} positive vs {neg.shape[0]} negative"
        )
    if centered and pos.shape[0] < 2:
        raise WorkbenchError(
            f"method 'pca_centered' needs at least 2 pairs (the centred differences of 1 pair are all zero), "
            f"got {pos.shape[0]}"
        )
    u = _first_direction(pos, neg, centered)  # [L, d]
    if convention == "repeng":
        # repeng: count pairs whose positive projects above / below its negative; flip when "below" wins
        along = torch.einsum("nld,ld->nl", (pos - neg).double(), u.double())  # [n, L]
        above, below = (along > 0).sum(0), (along < 0).sum(0)
        sign = torch.where(below > above, -1.0, 1.0)
        return u * sign[:, None].float()
    md = _mean_diff(pos, neg)  # [L, d]
    along = (md * u).sum(-1, keepdim=True)  # signed length of the mean difference along u
    return along * u  # sign follows the mean difference; length = its component along u


def _logistic(pos: Tensor, neg: Tensor, l2: float = 1e-2, steps: int = 200) -> Tensor:
    """L2-regularised logistic regression per layer; direction = weights, scaled to the mean-difference norm."""
    x = torch.cat([pos, neg], 0).transpose(0, 1).double()  # [L, n, d]
    y = torch.cat([torch.ones(pos.shape[0]), torch.zeros(neg.shape[0])]).double()  # [n]
    x = x - x.mean(1, keepdim=True)
    scale = x.pow(2).mean((1, 2), keepdim=True).sqrt().clamp_min(1e-12)  # one scalar per layer
    x = x / scale
    n_layers, _, d = x.shape
    w = torch.zeros(n_layers, d, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_layers, 1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        logits = torch.einsum("lnd,ld->ln", x, w) + b
        target = y.expand_as(logits)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none").mean(1)
        loss = (loss + 0.5 * l2 * w.pow(2).sum(-1)).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    md = _mean_diff(pos, neg)
    direction = w.detach().float()  # uniform rescaling keeps the direction in the original space
    direction = direction / direction.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    sign = torch.sign((direction * md).sum(-1, keepdim=True))
    sign[sign == 0] = 1.0
    return direction * sign * md.norm(dim=-1, keepdim=True)


def _check_method(method: str, convention: str) -> None:
    if method not in METHODS:
        raise WorkbenchError(f"unknown extraction method '{method}'; expected one of {', '.join(METHODS)}")
    if convention not in CONVENTIONS:
        raise WorkbenchError(f"unknown convention '{convention}'; expected one of {', '.join(CONVENTIONS)}")
    if convention == "repeng" and method not in PAIRED_METHODS:
        raise WorkbenchError(
            f"convention 'repeng' applies to the paired methods {', '.join(PAIRED_METHODS)}, not '{method}'"
        )


def directions_from_activations(
    pos: Tensor, neg: Tensor, method: str = "mean_diff", *, convention: str = "workbench"
) -> Tensor:
    """One direction per layer from positive and negative activations ``[n, n_layers, d_model]``.

    ``mean_diff``: mean(pos) - mean(neg). ``pca``: first right-singular vector of the paired differences
    ``pos_i - neg_i``, uncentred (= repeng ``pca_center``). ``pca_centered``: the same after subtracting the
    differences' mean (= repeng ``pca_diff``). ``logistic``: weights of an L2 logistic regression (pos = 1),
    scaled to the mean-difference norm. Returns ``[n_layers, d_model]``.

    ``convention`` signs and scales the two PCA directions ``u``: ``workbench`` (default) returns
    ``(md . u) u`` with ``md`` the mean difference, so the sign follows ``md`` and the length is ``md``'s
    component along ``u`` (small when the centred direction is nearly orthogonal to ``md``); ``repeng``
    returns the unit ``u``, flipped when more pairs have ``pos_i . u < neg_i . u`` than the reverse (a tie
    keeps sklearn's sign: largest-magnitude entry positive), exactly repeng's ``read_representations``.
    """
    _check_method(method, convention)
    if pos.dim() != 3 or neg.dim() != 3 or pos.shape[1:] != neg.shape[1:]:
        raise WorkbenchError(f"activation shapes {tuple(pos.shape)} and {tuple(neg.shape)} do not match")
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise WorkbenchError(
            f"no examples left to extract from ({pos.shape[0]} positive, {neg.shape[0]} negative)"
        )
    pos, neg = pos.float(), neg.float()
    if method == "mean_diff":
        return _mean_diff(pos, neg)
    if method in PAIRED_METHODS:
        return _pca(pos, neg, centered=method == "pca_centered", convention=convention)
    return _logistic(pos, neg)


def _full_width(directions: Tensor, layers: list[int], n_layers: int) -> Tensor:
    full = torch.zeros(n_layers, directions.shape[-1])
    full[layers] = directions
    return full


def _data_hash(items: Any) -> str:
    blob = json.dumps(items, sort_keys=True, ensure_ascii=False, default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def _model_meta(lm: ModelLike) -> dict[str, Any]:
    return {"source_model": lm.fingerprint.source or getattr(lm, "spec", ""), "library_version": __version__}


# -- from answer pairs -------------------------------------------------------------------------------------


def extract_from_pairs(
    lm: ModelLike,
    prompts: Sequence[str | list[Message]],
    positive_answers: Sequence[str],
    negative_answers: Sequence[str],
    *,
    method: str = "mean_diff",
    layers: Sequence[int] | None = None,
    statistic: str = "response_avg",
    trait: str = "custom",
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
    convention: str = "workbench",
) -> PersonaVector:
    """A persona vector from (prompt, positive answer, negative answer) triples.

    The answers are teacher-forced after each prompt; ``statistic`` picks the activations compared
    (``response_avg``, ``prompt_avg``, ``prompt_last``, ``response_last``). ``layers`` limits the layers
    computed; the others stay zero. ``method``: ``mean_diff``, ``pca``, ``pca_centered`` or ``logistic``, and
    ``convention`` (``workbench`` or ``repeng``, PCA methods only): see ``directions_from_activations``.
    ``statistic="response_last", method="pca_centered", convention="repeng"`` is repeng's default
    ``ControlVector.train`` on the strings ``rendered prompt + answer``.
    """
    if statistic not in STATISTICS:
        raise WorkbenchError(f"unknown statistic '{statistic}'; expected one of {', '.join(STATISTICS)}")
    _check_method(method, convention)
    n = len(prompts)
    if not (len(positive_answers) == n == len(negative_answers)) or n == 0:
        raise WorkbenchError(
            f"need one positive and one negative answer per prompt: {n} prompts, "
            f"{len(positive_answers)} positive, {len(negative_answers)} negative"
        )
    stats = teacher_forced_stats(
        lm,
        list(prompts) * 2,
        [*positive_answers, *negative_answers],
        layers=layers,
        batch_size=batch_size,
        system=system,
        progress=progress,
        desc="reading activations",
    )
    acts, ok = stats.get(statistic), stats.valid(statistic)
    keep = ok[:n] & ok[n:]  # drop a pair when either answer is empty (keeps PCA's pairing)
    directions = directions_from_activations(acts[:n][keep], acts[n:][keep], method, convention=convention)
    meta = {
        **_model_meta(lm),
        "method": method,
        "convention": convention,
        "n_positive": int(keep.sum()),
        "n_negative": int(keep.sum()),
        "layers_computed": stats.layers,
        "data_hash": _data_hash(
            [[str(p), a, b] for p, a, b in zip(prompts, positive_answers, negative_answers, strict=True)]
        ),
    }
    return PersonaVector(
        vectors=_full_width(directions, stats.layers, lm.n_layers),
        trait=trait,
        statistic=statistic,
        fingerprint=lm.fingerprint,
        metadata=meta,
    )


# -- from a trait's contrastive system prompts ---------------------------------------------------------------


@dataclass
class ExtractionResult:
    """One vector per statistic (``STAT_ORDER``) and one row per generated answer (question, polarity,
    scores, kept)."""

    vectors: dict[str, PersonaVector]
    rows: list[dict[str, Any]]
    filtered: bool
    note: str = ""
    stats: ActivationStats | None = field(default=None, repr=False)

    @property
    def n_pairs(self) -> int:
        return sum(1 for r in self.rows if r["polarity"] == "pos")

    @property
    def n_kept(self) -> int:
        return sum(1 for r in self.rows if r["polarity"] == "pos" and r["kept"])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """All statistics in one ``persona_vector`` safetensors artifact."""
        return save_vectors(path, self.vectors)

    def write_rows(self, path: str | os.PathLike[str]) -> Path:
        """One JSON row per generated answer (atomic write)."""
        target = Path(path)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in self.rows)
        atomic_write_text(target, text)
        return target


def _load_trait(trait: Any) -> Any:
    if isinstance(trait, (str, os.PathLike)):
        from workbench.data import load_trait

        return load_trait(trait)
    return trait


def _make_judge(judge: Any) -> Any:
    if isinstance(judge, str):
        from workbench.judges import make_judge

        return make_judge(judge)
    return judge


def generate_rows(
    lm: ModelLike,
    trait: Any,
    *,
    judge: Any = "none",
    n_per_question: int = 2,
    n_questions: int | None = None,
    n_instructions: int | None = None,
    threshold: float = 50.0,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = False,
) -> tuple[list[dict[str, Any]], bool]:
    """Generate, judge and filter contrastive answers; returns the rows and whether a filter was applied.

    For each question, instruction pair and sample, one answer under the positive and one under the negative
    system instruction. A pair is kept when the positive answer's trait score is >= ``threshold``, the
    negative's is < ``100 - threshold`` and both coherence scores are >= 50. With judge ``none`` every pair
    is kept (no filter).
    """
    from workbench.generation import generate

    t = _load_trait(trait)
    if n_per_question < 1:
        raise WorkbenchError(f"n_per_question must be >= 1, got {n_per_question}")
    questions = list(t.questions[:n_questions] if n_questions else t.questions)
    instructions = list(t.instructions[:n_instructions] if n_instructions else t.instructions)
    specs: list[dict[str, Any]] = []
    for qi, q in enumerate(questions):
        for ii, (pos, neg) in enumerate(instructions):
            for s in range(n_per_question):
                for polarity, system in (("pos", pos), ("neg", neg)):
                    specs.append(
                        {"question_index": qi, "question": q, "instruction_index": ii, "sample": s,
                         "polarity": polarity, "system": system}
                    )  # fmt: skip
    messages = [
        [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["question"]}]
        for r in specs
    ]
    answers = generate(
        lm,
        messages,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        batch_size=batch_size,
        progress=progress,
        desc=f"generating {t.name} answers",
    )
    j = _make_judge(judge)
    name = getattr(j, "name", str(judge))
    filtered = name != "none"
    if filtered:
        pairs = list(zip(specs, answers, strict=True))
        trait_prompts = [t.judge(r["question"], a) for r, a in pairs]
        coh_prompts = [coherence_prompt(r["question"], a) for r, a in pairs]
        trait_j = score_prompts(j, trait_prompts, progress=progress, desc=f"judging {t.name}")
        coh_j = score_prompts(j, coh_prompts, progress=progress, desc="judging coherence")
        trait_scores = [x.score for x in trait_j]
        coh_scores = [x.score for x in coh_j]
    else:
        trait_scores = [None] * len(specs)
        coh_scores = [None] * len(specs)
    rows = []
    for r, a, ts, cs in zip(specs, answers, trait_scores, coh_scores, strict=True):
        rows.append({**r, "answer": a, "trait_score": ts, "coherence": cs, "kept": True})
    for k in range(0, len(rows), 2):  # rows come in (pos, neg) pairs
        p, n = rows[k], rows[k + 1]
        if filtered:
            keep = (
                p["trait_score"] is not None
                and n["trait_score"] is not None
                and p["coherence"] is not None
                and n["coherence"] is not None
                and p["trait_score"] >= threshold
                and n["trait_score"] < 100 - threshold
                and p["coherence"] >= 50
                and n["coherence"] >= 50
            )
        else:
            keep = True
        p["kept"] = n["kept"] = bool(keep)
    return rows, filtered


def _check_pairs(kept: list[dict[str, Any]], method: str) -> None:
    """The kept rows must alternate positive, negative, with both rows of a pair from the same question."""
    key = ("question_index", "instruction_index", "sample")
    ok = len(kept) % 2 == 0 and all(
        p["polarity"] == "pos" and n["polarity"] == "neg" and all(p.get(k) == n.get(k) for k in key)
        for p, n in zip(kept[0::2], kept[1::2], strict=True)
    )
    if not ok:
        raise WorkbenchError(
            f"method '{method}' needs the kept rows in (pos, neg) pairs of the same question, instruction and "
            "sample, as generate_rows writes them"
        )


def vectors_from_rows(
    lm: ModelLike,
    rows: list[dict[str, Any]],
    *,
    trait: str,
    batch_size: int = 16,
    progress: bool = False,
    metadata: dict[str, Any] | None = None,
    method: str = "mean_diff",
    convention: str = "workbench",
) -> tuple[dict[str, PersonaVector], ActivationStats]:
    """One direction per statistic from the kept rows (one forward pass per batch); ``method`` and
    ``convention`` as in ``directions_from_activations`` (default: mean(positive) - mean(negative)).

    The paired methods (``pca``, ``pca_centered``) pair each kept positive row with the negative row right
    after it (the order ``generate_rows`` writes) and drop a pair when either answer lacks the statistic.
    """
    _check_method(method, convention)
    kept = [r for r in rows if r["kept"]]
    if not any(r["polarity"] == "pos" for r in kept) or not any(r["polarity"] == "neg" for r in kept):
        raise WorkbenchError(
            f"no answer pairs passed the filter ({len(rows) // 2} generated); lower --threshold, raise "
            "--n-per-question, or use a stronger model or judge"
        )
    paired = method in PAIRED_METHODS
    if paired:
        _check_pairs(kept, method)
    prompts = [
        [{"role": "system", "content": r["system"]}, {"role": "user", "content": r["question"]}] for r in kept
    ]
    stats = teacher_forced_stats(
        lm, prompts, [r["answer"] for r in kept], batch_size=batch_size, progress=progress
    )
    is_pos = torch.tensor([r["polarity"] == "pos" for r in kept])
    out = {}
    for stat in STAT_ORDER:
        acts, ok = stats.get(stat), stats.valid(stat)
        if paired:
            both = ok[0::2] & ok[1::2]  # rows alternate positive, negative
            pos, neg = acts[0::2][both], acts[1::2][both]
        else:
            pos, neg = acts[is_pos & ok], acts[~is_pos & ok]
        meta = {
            **(metadata or {}),
            "n_positive": int(pos.shape[0]),
            "n_negative": int(neg.shape[0]),
        }
        out[stat] = PersonaVector(
            vectors=directions_from_activations(pos, neg, method, convention=convention),
            trait=trait,
            statistic=stat,
            fingerprint=lm.fingerprint,
            metadata=meta,
        )
    return out, stats


def extract_from_trait(
    lm: ModelLike,
    trait: Any,
    *,
    judge: Any = "none",
    n_per_question: int = 2,
    n_questions: int | None = None,
    n_instructions: int | None = None,
    threshold: float = 50.0,
    batch_size: int = 16,
    gen_batch_size: int | None = None,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    method: str = "mean_diff",
    convention: str = "workbench",
) -> ExtractionResult:
    """Persona vectors for a trait from contrastive system prompts.

    ``trait``: a shipped name (``evil``, ...), a trait JSON path, or a ``workbench.data.Trait``. ``judge``: a
    judge spec (``none``, ``hf:<model>``, ``openai:<model>``) or a judge object. Answers are sampled at
    ``temperature`` (``gen_batch_size`` prompts at a time, default ``batch_size``), judged and filtered
    (see ``generate_rows``), then read teacher-forced ``batch_size`` at a time. ``n_questions`` /
    ``n_instructions`` use the first questions / instruction pairs only (``None``: all).
    ``method`` / ``convention``: how each statistic's direction is computed from the kept pairs (default
    ``mean_diff``; see ``directions_from_activations``). Returns an ``ExtractionResult`` with one vector
    per statistic: ``response_avg``, ``prompt_avg``, ``prompt_last`` and ``response_last``.
    """
    _check_method(method, convention)
    t = _load_trait(trait)
    rows, filtered = generate_rows(
        lm,
        t,
        judge=judge,
        n_per_question=n_per_question,
        n_questions=n_questions,
        n_instructions=n_instructions,
        threshold=threshold,
        batch_size=gen_batch_size or batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        progress=progress,
    )
    judge_name = judge if isinstance(judge, str) else getattr(judge, "name", type(judge).__name__)
    n_pairs = len(rows) // 2
    n_kept = sum(1 for r in rows if r["polarity"] == "pos" and r["kept"])
    if filtered:
        note = f"judge {judge_name}: kept {n_kept} of {n_pairs} answer pairs (threshold {threshold:g})"
    else:
        note = f"judge none: no filtering, all {n_pairs} answer pairs kept"
    log.info(note)
    meta = {
        **_model_meta(lm),
        "method": method,
        "convention": convention,
        "source": "contrastive_system_prompts",
        "trait": t.name,
        "judge": judge_name,
        "filtered": filtered,
        "threshold": threshold,
        "n_questions": len({r["question_index"] for r in rows}),
        "n_instructions": len({r["instruction_index"] for r in rows}),
        "n_per_question": n_per_question,
        "n_pairs": n_pairs,
        "n_pairs_kept": n_kept,
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "seed": seed,
        "data_hash": _data_hash(
            {"trait": t.to_dict(), "answers": [[r["polarity"], r["answer"], r["kept"]] for r in rows]}
        ),
    }
    vectors, stats = vectors_from_rows(
        lm,
        rows,
        trait=t.name,
        batch_size=batch_size,
        progress=progress,
        metadata=meta,
        method=method,
        convention=convention,
    )
    return ExtractionResult(vectors=vectors, rows=rows, filtered=filtered, note=note, stats=stats)
