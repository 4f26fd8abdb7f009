"""Projection-difference screening of fine-tuning data.

For each chat example, project its own assistant response (mean over the response tokens at one layer)
onto the persona vector, and subtract the projection of the base model's own greedy answer to the same
prompt. A large positive difference means the example pushes the model along the trait direction more than
what the model would say anyway: a candidate for review before fine-tuning.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench import ModelLike, WorkbenchError
from workbench.chat import Message
from workbench.html import write_figure_html
from workbench.io import atomic_write_json, atomic_write_text
from workbench.runs import RANKED_JSONL, SUMMARY_JSON

from ._project import answer_projections
from ._vector import PersonaVector


@dataclass
class ScreenResult:
    """Per-example projection differences, ranked (highest first), and the flagged ones."""

    ranked: list[dict[str, Any]]  # each: index, diff, own, base, prompt, response, base_answer, flagged
    threshold: float
    dataset_score: float  # mean difference over examples with a score
    std: float
    layer: int
    trait: str = ""
    threshold_rule: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def flagged(self) -> list[dict[str, Any]]:
        return [r for r in self.ranked if r["flagged"]]

    def summary(self) -> dict[str, Any]:
        diffs = [r["diff"] for r in self.ranked if r["diff"] is not None]
        return {
            "trait": self.trait,
            "layer": self.layer,
            "n_examples": len(self.ranked),
            "n_scored": len(diffs),
            "dataset_score": self.dataset_score,
            "std": self.std,
            "threshold": self.threshold,
            "threshold_rule": self.threshold_rule,
            "n_flagged": len(self.flagged),
            "max_diff": max(diffs) if diffs else None,
            "min_diff": min(diffs) if diffs else None,
            **self.extra,
        }


def _split(row: Any, i: int) -> tuple[list[Message], str]:
    """The prompt (messages before the last assistant turn) and that turn's content."""
    msgs = row.get("messages") if isinstance(row, dict) else None
    if not isinstance(msgs, list) or not msgs:
        raise WorkbenchError(f"row {i}: expected a {{'messages': [...]}} chat row")
    last = max((k for k, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
    if last is None:
        raise WorkbenchError(f"row {i}: no assistant message to screen")
    if last == 0:
        raise WorkbenchError(f"row {i}: the assistant message has no prompt before it")
    return [{"role": m["role"], "content": m["content"]} for m in msgs[:last]], str(msgs[last]["content"])


def _preview(msgs: list[Message]) -> str:
    user = [m["content"] for m in msgs if m["role"] == "user"]
    return user[-1] if user else msgs[-1]["content"]


def screen_dataset(
    lm: ModelLike,
    vector: PersonaVector | torch.Tensor,
    layer: int,
    rows: Sequence[dict[str, Any]],
    *,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    threshold: float | None = None,
    base_answers: Sequence[str] | None = None,
    progress: bool = False,
) -> ScreenResult:
    """Screen chat rows: projection of each example's response minus that of the base model's greedy answer.

    ``threshold``: flag examples whose difference exceeds it (default: mean + 2 std of the differences).
    ``base_answers``: reuse answers already generated for the same prompts (otherwise greedy, batched).
    """
    from workbench.generation import generate

    if not rows:
        raise WorkbenchError("no rows to screen")
    split = [_split(r, i) for i, r in enumerate(rows)]
    prompts, responses = [p for p, _ in split], [a for _, a in split]
    if base_answers is None:
        base_answers = generate(
            lm,
            prompts,
            max_new_tokens=max_new_tokens,
            temperature=0.0,
            batch_size=batch_size,
            progress=progress,
            desc="base answers",
        )
    elif len(base_answers) != len(prompts):
        raise WorkbenchError(f"{len(base_answers)} base answers for {len(prompts)} rows")
    both = answer_projections(
        lm,
        vector,
        layer,
        prompts + prompts,
        responses + list(base_answers),
        batch_size=batch_size,
        progress=progress,
    )
    n = len(prompts)
    own, base = both[:n], both[n:]
    diff = own - base  # NaN where either answer is empty
    ok = ~torch.isnan(diff)
    if not bool(ok.any()):
        raise WorkbenchError("no example could be scored (every response or base answer was empty)")
    mean = float(diff[ok].mean())
    std = float(diff[ok].std()) if int(ok.sum()) > 1 else 0.0
    if threshold is None:
        thr, rule = mean + 2.0 * std, "mean + 2 std"
    else:
        thr, rule = float(threshold), "user value"

    def num(x: torch.Tensor) -> float | None:
        v = float(x)
        return None if math.isnan(v) else v

    out: list[dict[str, Any]] = []
    for i in range(n):
        d = num(diff[i])
        out.append(
            {
                "index": i,
                "diff": d,
                "own": num(own[i]),
                "base": num(base[i]),
                "flagged": d is not None and d > thr,
                "prompt": _preview(prompts[i]),
                "response": responses[i],
                "base_answer": base_answers[i],
            }
        )
    out.sort(key=lambda r: (r["diff"] is None, -(r["diff"] or 0.0), r["index"]))
    for rank, r in enumerate(out, 1):
        r["rank"] = rank
    trait = vector.trait if isinstance(vector, PersonaVector) else ""
    return ScreenResult(
        ranked=out, threshold=thr, dataset_score=mean, std=std, layer=layer, trait=trait, threshold_rule=rule
    )


def write_screen_report(result: ScreenResult, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write ``ranked.jsonl``, ``flags.jsonl``, ``summary.json`` and ``histogram.html`` into ``out_dir``."""
    import plotly.graph_objects as go

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def jsonl(rows: list[dict[str, Any]]) -> str:
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)

    paths = {
        "ranked": out / RANKED_JSONL,
        "flags": out / "flags.jsonl",
        "summary": out / SUMMARY_JSON,
        "histogram": out / "histogram.html",
    }
    atomic_write_text(paths["ranked"], jsonl(result.ranked))
    atomic_write_text(paths["flags"], jsonl(result.flagged))
    atomic_write_json(paths["summary"], result.summary())
    diffs = [r["diff"] for r in result.ranked if r["diff"] is not None]
    fig = go.Figure(go.Histogram(x=diffs, nbinsx=max(10, min(60, len(diffs) // 2 or 1)), name="examples"))
    fig.add_vline(x=result.threshold, line_dash="dash", line_color="red", annotation_text="flag threshold")
    fig.add_vline(x=result.dataset_score, line_color="gray", annotation_text="mean")
    title = f"projection difference (response - base answer), layer {result.layer}"
    fig.update_layout(
        title=f"{result.trait + ': ' if result.trait else ''}{title}",
        xaxis_title="projection difference",
        yaxis_title="examples",
        template="plotly_white",
    )
    write_figure_html(fig, paths["histogram"])
    return paths
