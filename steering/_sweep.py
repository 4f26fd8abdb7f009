"""Layer x coefficient sweep: how strongly steering at each layer expresses a trait, and at what cost.

For every layer and coefficient the evaluation questions are answered under steering (all questions and
all coefficients of a layer in one batched ``generate`` call, with one coefficient per batch row); then each
answer is measured:

* **trait expression**: with a judge, the judge's 0-100 trait score of ``trait.judge(question, answer)``;
  always (judge or not), the *projection*: the mean over the answer's tokens of ``resid_post`` at the
  steered layer, read teacher-forced **without** steering, dotted with the vector's unit direction at that
  layer. It measures what the text says, not the vector that was added while writing it.
* **coherence**: with a judge, its 0-100 coherence score; always, the judge-free proxy *mean log-prob per
  token of the answer under the unsteered model* (0 is perfectly predictable; rambling or broken text
  under steering falls well below the baseline).
* optionally, with contrastive ``pairs`` (question, aligned, misaligned), the *margin*: mean per-token
  log-prob of the misaligned minus the aligned answer, scored teacher-forced under the same steering
  applied at every position (a teacher-forced pass has no decoding steps to single out).

Recommended layer (written to ``summary.json``): for each layer, among the non-zero coefficients whose
coherence stays within ``coherence_tolerance`` of the unsteered baseline (default 10 judge points, or 0.5
nats per token for the log-prob proxy), the largest trait gain per unit of coefficient
``(trait(alpha) - trait(0)) / alpha``; the projection gain is divided by the spread (standard deviation)
of the baseline answers' projections at that layer, so that layers with larger residual norms are not
favoured. The layer with the largest gain wins (ties: the earlier layer); none if no cell stays coherent.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from workbench import ModelLike, WorkbenchError, read_sites
from workbench.generation import generate, row_seed
from workbench.html import write_figure_html
from workbench.io import atomic_write_json, atomic_write_text
from workbench.judges import score_prompts
from workbench.options import check_finite, check_int, check_number
from workbench.runs import SUMMARY_JSON, SWEEP_CSV
from workbench.scoring import answer_logprobs, build_teacher_forced, pad_right

from ._steerer import Steerer, _matrix

log = logging.getLogger(__name__)

DEFAULT_ALPHAS = (0.0, 2.0, 4.0, 8.0)
JUDGE_TOLERANCE = 10.0
LOGPROB_TOLERANCE = 0.5
CSV_COLUMNS = (
    "layer",
    "alpha",
    "n_answers",
    "trait",
    "coherence",
    "trait_projection",
    "trait_projection_std",
    "coherence_logprob",
    "trait_score",
    "coherence_score",
    "margin",
    "answer_tokens",
)


def default_layers(n_layers: int, k: int = 5) -> list[int]:
    """``k`` layers spread over the middle of the network (20% to 80% of its depth)."""
    if n_layers <= k:
        return list(range(n_layers))
    picks = [round(0.2 * (n_layers - 1) + i * 0.6 * (n_layers - 1) / (k - 1)) for i in range(k)]
    return sorted(set(picks))


@dataclass
class SweepResult:
    """What a sweep measured.

    rows:     one dict per (layer, alpha) with the columns of ``CSV_COLUMNS``; ``trait`` / ``coherence``
              are the metrics the recommendation rule used (judge scores, or projection / log-prob).
    answers:  one dict per generated answer (layer, alpha, question, answer and its measurements).
    recommended_layer / rule / gains: the recommendation, its rule in words, and each layer's gain.
    """

    rows: list[dict[str, Any]]
    answers: list[dict[str, Any]]
    recommended_layer: int | None
    rule: str
    gains: dict[int, float | None]
    config: dict[str, Any] = field(default_factory=dict)
    out_dir: Path | None = None

    def cell(self, layer: int, alpha: float) -> dict[str, Any]:
        for r in self.rows:
            if r["layer"] == layer and r["alpha"] == float(alpha):
                return r
        raise KeyError(f"no sweep cell for layer {layer}, alpha {alpha}")

    def series(self, layer: int, key: str = "trait") -> list[tuple[float, Any]]:
        """``(alpha, value)`` pairs of one layer, by increasing alpha."""
        return sorted((r["alpha"], r[key]) for r in self.rows if r["layer"] == layer)

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_COLUMNS})
        return buf.getvalue()

    def summary(self) -> dict[str, Any]:
        return {
            "recommended_layer": self.recommended_layer,
            "rule": self.rule,
            "gains": {str(k): v for k, v in self.gains.items()},
            "config": self.config,
            "cells": self.rows,
        }


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    return sum(vals) / len(vals) if vals else None


def _std(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None and not math.isnan(x)]
    if len(vals) < 2:
        return None
    m = sum(vals) / len(vals)
    return math.sqrt(sum((x - m) ** 2 for x in vals) / (len(vals) - 1))


@torch.no_grad()
def read_answers(
    lm: ModelLike,
    prompts: Sequence[str],
    answers: Sequence[str],
    units: dict[int, Tensor],
    *,
    batch_size: int = 16,
    system: str | None = None,
) -> tuple[dict[int, list[float | None]], list[float | None], list[int]]:
    """Teacher-forced, unsteered reading of answers.

    Returns, per answer: the mean over its tokens of ``resid_post`` at each layer of ``units`` dotted with
    that layer's unit direction; its mean log-prob per token; its token count. Empty answers give None.
    """
    examples = build_teacher_forced(lm.tokenizer, prompts, answers, system)
    sites = {l: f"blocks.{l}.hook_resid_post" for l in units}
    proj: dict[int, list[float | None]] = {l: [None] * len(examples) for l in units}
    logps: list[float | None] = [None] * len(examples)
    counts = [len(ids) - start for ids, start in examples]
    pad = lm.tokenizer.pad_token_id
    order = [i for i in sorted(range(len(examples)), key=lambda i: -len(examples[i][0])) if counts[i] > 0]
    dev_units = {l: u.to(lm.device) for l, u in units.items()}
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        ids, mask = pad_right([examples[i][0] for i in idx], pad, lm.device)
        with read_sites(lm, list(sites.values())) as cache:
            logits = lm.model(input_ids=ids, attention_mask=mask).logits.float()
        logp = (
            torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        )  # [b, pos-1]
        for row, i in enumerate(idx):
            seq, start = examples[i]
            logps[i] = float(logp[row, start - 1 : len(seq) - 1].mean())
            for l, site in sites.items():
                h = cache[site][row, start : len(seq)].float()  # [answer_tokens, d_model]
                proj[l][i] = float((h @ dev_units[l]).mean())
    return proj, logps, counts


def _pairs_rows(pairs: Sequence[Any]) -> list[tuple[str, str, str]]:
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, dict):
            try:
                out.append((p["question"], p["misaligned"], p["aligned"]))
            except KeyError as exc:
                raise WorkbenchError(
                    f"pair {i} lacks key {exc}; pairs need question, aligned, misaligned"
                ) from None
        elif isinstance(p, (tuple, list)) and len(p) == 3:
            out.append((str(p[0]), str(p[1]), str(p[2])))
        else:
            raise WorkbenchError(
                f"pair {i} must be a dict or a (question, trait answer, opposite answer) tuple"
            )
    return out


def preference_margin(lm: ModelLike, pairs: Sequence[tuple[str, str, str]], batch_size: int = 16) -> float:
    """Mean over pairs of the per-token log-prob of the trait answer minus the opposite answer."""
    qs = [q for q, _, _ in pairs]
    pos = answer_logprobs(lm, qs, [a for _, a, _ in pairs], batch_size=batch_size)
    neg = answer_logprobs(lm, qs, [b for _, _, b in pairs], batch_size=batch_size)
    return sum(p.mean - n.mean for p, n in zip(pos, neg, strict=True)) / len(pairs)


def _resolve_trait(trait: Any, vector: Any) -> Any:
    from workbench.data import load_trait, shipped_traits

    if trait is None:
        name = getattr(vector, "trait", None) or (getattr(vector, "metadata", None) or {}).get("trait")
        if isinstance(name, str) and name in shipped_traits():
            return load_trait(name)
        return None
    if isinstance(trait, (str, os.PathLike)):
        return load_trait(trait)
    return trait


def _recommend(
    rows: list[dict[str, Any]], layers: list[int], tolerance: float, use_std: bool
) -> tuple[int | None, dict[int, float | None]]:
    base_coh = _mean([r["coherence"] for r in rows if r["alpha"] == 0.0])
    gains: dict[int, float | None] = {}
    for l in layers:
        cells = {r["alpha"]: r for r in rows if r["layer"] == l}
        base = cells.get(0.0)
        if base is None or base["trait"] is None:
            gains[l] = None
            continue
        scale = 1.0
        if use_std:
            scale = base.get("trait_projection_std") or 1.0
            scale = scale if scale > 1e-12 else 1.0
        best = None
        for a, r in cells.items():
            if a == 0.0 or r["trait"] is None or r["coherence"] is None:
                continue
            if base_coh is not None and r["coherence"] < base_coh - tolerance:
                continue
            g = (r["trait"] - base["trait"]) / a / scale
            best = g if best is None else max(best, g)
        gains[l] = best
    valid = [(g, l) for l, g in gains.items() if g is not None]
    if not valid:
        return None, gains
    top = max(g for g, _ in valid)
    return min(l for g, l in valid if g == top), gains


def _plot(
    result: SweepResult, path: Path, trait_label: str, coherence_label: str, floor: float | None = None
) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=(trait_label, coherence_label))
    layers = sorted({r["layer"] for r in result.rows})
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    for i, l in enumerate(layers):
        color = palette[i % len(palette)]
        for col, key in ((1, "trait"), (2, "coherence")):
            pts = [(a, v) for a, v in result.series(l, key) if v is not None]
            fig.add_trace(
                go.Scatter(
                    x=[a for a, _ in pts],
                    y=[v for _, v in pts],
                    mode="lines+markers",
                    name=f"layer {l}" + (" (recommended)" if l == result.recommended_layer else ""),
                    legendgroup=str(l),
                    showlegend=col == 1,
                    line={"color": color, "width": 3 if l == result.recommended_layer else 1.5},
                ),
                row=1,
                col=col,
            )
    if floor is not None:  # cells below this line do not count for the recommendation
        fig.add_hline(
            y=floor, line_dash="dot", line_color="#888", row=1, col=2, annotation_text="coherence floor"
        )
    fig.update_xaxes(title_text="steering coefficient alpha")
    fig.update_layout(
        title=f"Steering sweep ({result.config.get('trait') or 'vector'}): recommended layer "
        f"{result.recommended_layer}",
        template="plotly_white",
        height=460,
    )
    write_figure_html(fig, path)


def _generate_alphas(
    lm: Any,
    vector: Any,
    layer: int,
    alphas: Sequence[float],
    prompts: Sequence[Any],
    gen_kw: dict[str, Any],
    steer_kw: dict[str, Any],
) -> dict[float, list[str]]:
    """Answers for every coefficient of one layer, all coefficients in one batched ``generate`` call.

    Each call takes ``batch_size`` prompts and repeats them once per coefficient, with a per-row ``alpha``
    tensor (rows ``[k * n, (k + 1) * n)`` get ``alphas[k]``). Prompt ``j`` samples with
    ``row_seed(seed, j)`` under every coefficient, as in one call per coefficient, so answers (greedy or
    sampled) equal those of one call per coefficient.
    """

    out: dict[float, list[str]] = {a: [] for a in alphas}
    if not alphas:
        return out
    bs = gen_kw["batch_size"]
    for start in range(0, len(prompts), bs):
        chunk = list(prompts[start : start + bs])
        rows = [p for _ in alphas for p in chunk]
        coef = torch.tensor(alphas, dtype=torch.float32).repeat_interleave(len(chunk))
        seeds = [row_seed(gen_kw["seed"], start + j) for j in range(len(chunk))]
        kw = {**gen_kw, "batch_size": len(rows), "row_seeds": seeds * len(alphas)}
        with Steerer(lm, vector, [layer], coef, **steer_kw):
            gen = generate(lm, rows, desc=f"layer {layer}", **kw)
        for k, a in enumerate(alphas):
            out[a].extend(gen[k * len(chunk) : (k + 1) * len(chunk)])
    return out


def sweep(
    lm: ModelLike,
    vector: Any,
    layers: Sequence[int] | None = None,
    alphas: Sequence[float] | None = None,
    questions: Sequence[str] | None = None,
    *,
    judge: Any = "none",
    trait: Any = None,
    max_new_tokens: int = 48,
    samples: int = 1,
    batch_size: int | None = None,
    seed: int = 0,
    temperature: float | None = None,
    pairs: Sequence[Any] | None = None,
    positions: str = "all",
    mode: str = "add",
    normalize: bool = False,
    coherence_tolerance: float | None = None,
    system: str | None = None,
    out: str | os.PathLike[str] | None = None,
    progress: bool = False,
    batch_alphas: bool = True,
    compile: bool | None = None,
) -> SweepResult:
    """Steer at each layer with each coefficient, answer the questions and measure trait and coherence.

    ``vector``: a ``PersonaVector`` or a ``[n_layers, d_model]`` tensor. ``layers`` default to five layers
    spread over the middle of the network; ``alphas`` to 0, 2, 4, 8 (0, the unsteered baseline, is always
    added; it is generated once and shared by every layer). ``questions`` default to the trait's
    ``eval_questions``; ``trait`` (a ``Trait`` or shipped name) defaults to the vector's trait.
    ``judge``: ``none`` (judge-free measures only), a judge spec or a ``Judge``. ``samples`` answers per
    question (greedy when 1, else sampled at ``temperature``, default 1.0). ``batch_size``: prompts per
    generate call (default: all questions x samples at once). ``batch_alphas`` (default on): all non-zero
    coefficients of a layer run in one ``generate`` call with a per-row ``alpha`` (each call then holds
    ``batch_size x n_alphas`` rows); off: one call per coefficient. ``compile``: compiled decoding
    (``workbench.generation.generate``; default on for CUDA). With ``out``, writes
    ``sweep.csv``, ``sweep.html``, ``summary.json`` and ``answers.jsonl`` there. See the module docstring
    for the measures and the recommendation rule.
    """
    sites = lm.sites
    mat = _matrix(vector, sites, getattr(lm, "fingerprint", None))  # checks width and layers
    layer_list = [
        sites.check_layer(l) for l in (default_layers(sites.n_layers) if layers is None else layers)
    ]
    if not layer_list:
        raise WorkbenchError("the sweep needs at least one layer")
    raw_alphas = list(DEFAULT_ALPHAS if alphas is None else alphas)
    check_finite(raw_alphas, "alphas")
    alpha_list = sorted({0.0, *(float(a) for a in raw_alphas)})
    check_int(max_new_tokens, "max_new_tokens")
    if batch_size is not None:
        check_int(batch_size, "batch_size")
    if temperature is not None:
        check_number(temperature, "temperature", minimum=0, note=" (0 = greedy)")
    if coherence_tolerance is not None:
        check_number(coherence_tolerance, "coherence_tolerance", minimum=0)
    tr = _resolve_trait(trait, vector)
    qs = list(questions) if questions is not None else list(getattr(tr, "eval_questions", ()) or ())
    if not qs:
        raise WorkbenchError("no questions to answer: pass questions, or a trait with eval_questions")
    check_int(samples, "samples")
    judge_obj = None
    if judge is not None and judge != "none":
        if tr is None:
            raise WorkbenchError("a judged sweep needs a trait (its judge prompt): pass trait=")
        if isinstance(judge, str):
            from workbench.judges import make_judge

            judge_obj = make_judge(judge, cache_dir=Path(out) / "judge_cache" if out else None)
        else:
            judge_obj = judge
    temp = (0.0 if samples == 1 else 1.0) if temperature is None else float(temperature)
    prompts = [q for q in qs for _ in range(samples)]
    bs = batch_size or len(prompts)
    ref_pairs = _pairs_rows(pairs) if pairs else None
    units = {l: mat[l] / mat[l].norm().clamp_min(1e-12) for l in layer_list}
    gen_kw: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        temperature=temp,
        seed=seed,
        batch_size=bs,
        system=system,
        compile=compile,
    )
    config = {
        "layers": layer_list,
        "alphas": alpha_list,
        "n_questions": len(qs),
        "samples": samples,
        "max_new_tokens": max_new_tokens,
        "temperature": temp,
        "seed": seed,
        "positions": positions,
        "mode": mode,
        "normalize": normalize,
        "judge": getattr(judge_obj, "name", "none"),
        "trait": getattr(tr, "name", None) or getattr(vector, "trait", None),
        "vector_norms": {str(l): float(mat[l].norm()) for l in layer_list},
        "pairs": len(ref_pairs) if ref_pairs else 0,
        "batch_alphas": batch_alphas,
    }

    answers: list[dict[str, Any]] = []
    per_cell: dict[tuple[int | None, float], dict[str, Any]] = {}

    def record(layer: int | None, alpha: float, gen: list[str], margin: Any, read: dict[int, Tensor]) -> None:
        proj, logps, counts = read_answers(lm, prompts, gen, read, batch_size=bs, system=system)
        per_cell[(layer, alpha)] = {"margin": margin, "start": len(answers)}
        for i, (q, a) in enumerate(zip(prompts, gen, strict=True)):
            answers.append(
                {
                    "layer": layer,
                    "alpha": alpha,
                    "question": q,
                    "answer": a,
                    "answer_tokens": counts[i],
                    "coherence_logprob": logps[i],
                    "projection": {str(l): proj[l][i] for l in read},
                }
            )

    steered_alphas = [a for a in alpha_list if a != 0.0]
    groups: list[int | None] = [None, *layer_list]
    for layer in tqdm(groups, desc="sweep", disable=not progress, unit="layer"):
        if layer is None:
            gen = generate(lm, prompts, desc="baseline", **gen_kw)
            record(None, 0.0, gen, preference_margin(lm, ref_pairs) if ref_pairs else None, units)
            continue
        steer_kw: dict[str, Any] = dict(positions=positions, mode=mode, normalize=normalize)
        if batch_alphas:
            by_alpha = _generate_alphas(lm, vector, layer, steered_alphas, prompts, gen_kw, steer_kw)
        else:
            by_alpha = {}
            for alpha in steered_alphas:
                with Steerer(lm, vector, [layer], alpha, **steer_kw):
                    by_alpha[alpha] = generate(lm, prompts, desc=f"layer {layer} alpha {alpha:g}", **gen_kw)
        for alpha in steered_alphas:
            margin = None
            if ref_pairs:  # teacher-forced scoring has no decoding steps: steer every position
                with Steerer(lm, vector, [layer], alpha, positions="all", mode=mode, normalize=normalize):
                    margin = preference_margin(lm, ref_pairs)
            record(layer, alpha, by_alpha[alpha], margin, {layer: units[layer]})

    if judge_obj is not None:
        from workbench.data import JUDGE_PROMPTS, fill_template

        trait_j = score_prompts(
            judge_obj, [tr.judge(r["question"], r["answer"]) for r in answers],
            progress=progress, desc=f"judging {getattr(tr, 'name', 'trait')}",
        )  # fmt: skip
        coh_j = score_prompts(
            judge_obj, [fill_template(JUDGE_PROMPTS["coherent"], r["question"], r["answer"]) for r in answers],
            progress=progress, desc="judging coherence",
        )  # fmt: skip
        for r, t, c in zip(answers, trait_j, coh_j, strict=True):
            r["trait_score"], r["coherence_score"] = t.score, c.score

    rows = []
    n = len(prompts)
    for l in layer_list:
        for a in alpha_list:
            key = (None, 0.0) if a == 0.0 else (l, a)
            chunk = answers[per_cell[key]["start"] : per_cell[key]["start"] + n]
            projections = [r["projection"][str(l)] for r in chunk]
            row = {
                "layer": l,
                "alpha": a,
                "n_answers": len(chunk),
                "trait_projection": _mean(projections),
                "trait_projection_std": _std(projections),
                "coherence_logprob": _mean([r["coherence_logprob"] for r in chunk]),
                "trait_score": _mean([r.get("trait_score") for r in chunk]) if judge_obj else None,
                "coherence_score": _mean([r.get("coherence_score") for r in chunk]) if judge_obj else None,
                "margin": per_cell[key]["margin"],
                "answer_tokens": _mean([float(r["answer_tokens"]) for r in chunk]),
            }
            row["trait"] = row["trait_score"] if judge_obj else row["trait_projection"]
            row["coherence"] = row["coherence_score"] if judge_obj else row["coherence_logprob"]
            rows.append(row)
    for r in answers:
        if r["layer"] is None:
            r["layer"] = "baseline"

    tol = coherence_tolerance
    if tol is None:
        tol = JUDGE_TOLERANCE if judge_obj else LOGPROB_TOLERANCE
    best, gains = _recommend(rows, layer_list, tol, use_std=judge_obj is None)
    trait_label = "trait score (judge, 0-100)" if judge_obj else "projection onto the vector (unsteered read)"
    coh_label = "coherence (judge, 0-100)" if judge_obj else "mean log-prob per token (unsteered model)"
    rule = (
        f"largest ({'judge trait score' if judge_obj else 'projection / baseline std'}) gain per unit alpha "
        f"among cells whose coherence ({coh_label}) stays within {tol:g} of the unsteered baseline"
    )
    config["coherence_tolerance"] = tol
    result = SweepResult(rows, answers, best, rule, gains, config)
    if out is not None:
        folder = Path(out)
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / SWEEP_CSV, result.to_csv())
        atomic_write_json(folder / SUMMARY_JSON, result.summary())
        atomic_write_text(
            folder / "answers.jsonl", "".join(json.dumps(r, default=str) + "\n" for r in answers)
        )
        base_coh = _mean([r["coherence"] for r in rows if r["alpha"] == 0.0])
        _plot(
            result,
            folder / "sweep.html",
            trait_label,
            coh_label,
            None if base_coh is None else base_coh - tol,
        )
        result.out_dir = folder
    log.info("sweep: recommended layer %s (%s)", best, rule)
    return result
