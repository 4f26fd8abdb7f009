"""One monitor pass: projections on persona vectors, preference gaps and in-domain losses, without a trace.

``measure`` runs under ``observer``: no gradients, eval mode, and the random-number states of training
saved and restored, so a monitored run trains exactly as an unmonitored one.
"""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from workbench.training import token_nll

from ._probes import ProbeSet
from ._settings import MonitorSettings

if TYPE_CHECKING:
    from workbench.training import TrainContext


@contextlib.contextmanager
def observer(model: torch.nn.Module) -> Iterator[None]:
    """No gradients, eval mode, and the RNG states of training untouched."""
    was_training = model.training
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    py = random.getstate()
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        random.setstate(py)


@dataclass
class Direction:
    name: str
    layer: int
    unit: torch.Tensor  # [d_model], float32, cpu


def _stats(values: list[float]) -> tuple[float, float | None, int]:
    """Mean, sample standard deviation (None for fewer than 2 values) and count of the finite values."""
    vals = [v for v in values if math.isfinite(v)]
    if not vals:
        return math.nan, None, 0
    t = torch.tensor(vals, dtype=torch.float64)
    sd = float(t.std(unbiased=True)) if len(vals) > 1 else None
    return float(t.mean()), sd, len(vals)


class Recorder:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}
        self.sd: dict[str, float | None] = {}
        self.n: dict[str, int] = {}

    def add(self, name: str, per_example: list[float]) -> None:
        mean, sd, n = _stats(per_example)
        self.values[name], self.sd[name], self.n[name] = mean, sd, n


def _projections(lm: Any, dirs: list[Direction], prompts: list, answers: list[str], batch_size: int, prefix: str,
                 rec: Recorder) -> None:  # fmt: skip
    from .._activations import teacher_forced_stats

    if not dirs or not prompts:
        return
    layers = sorted({d.layer for d in dirs})
    stats = teacher_forced_stats(lm, prompts, answers, layers=layers, batch_size=batch_size, desc="monitor")
    ok = stats.valid("response_avg")
    for d in dirs:
        acts = stats.response_avg[:, layers.index(d.layer)]  # [n, d_model]
        proj = (acts @ d.unit).tolist()
        rec.add(
            f"{prefix}/{d.name}/L{d.layer}", [v for v, keep in zip(proj, ok.tolist(), strict=True) if keep]
        )


def _pair_gaps(lm: Any, pairs: list[tuple[Any, str, str]], batch_size: int) -> list[float]:
    from workbench.scoring import answer_logprobs

    prompts = [q for q, _, _ in pairs]
    mis = answer_logprobs(lm, prompts, [m for _, _, m in pairs], batch_size=batch_size)
    ali = answer_logprobs(lm, prompts, [a for _, a, _ in pairs], batch_size=batch_size)
    return [m.mean - a.mean for m, a in zip(mis, ali, strict=True)]


def _indomain_losses(
    ctx: TrainContext, rows: list[dict[str, Any]], batch_size: int
) -> tuple[list[float], float]:
    """Per-row mean assistant-token NLL, and the token-pooled mean over all rows."""
    per_row: list[float] = []
    num, den = 0.0, 0
    examples = ctx.examples(rows)
    for i in range(0, len(examples), batch_size):
        batch = ctx.batch_from_examples(examples[i : i + batch_size])
        logits = ctx.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).logits
        nll, mask = token_nll(logits, batch.labels)
        sums, counts = nll.sum(1), mask.sum(1)
        for s_, c_ in zip(sums.tolist(), counts.tolist(), strict=True):
            if c_ > 0:
                per_row.append(s_ / c_)
        num += float(sums.sum())
        den += int(counts.sum())
    return per_row, (num / den if den else math.nan)


def measure(ctx: TrainContext, probes: ProbeSet, dirs: list[Direction], s: MonitorSettings) -> Recorder:
    """One monitor pass on the model as trained so far (plugins such as gates active, defenses not)."""
    from workbench.generation import generate

    lm, rec = ctx.lm, Recorder()
    with observer(ctx.model), ctx.policy(None):
        _projections(lm, dirs, probes.ref_prompts, probes.ref_answers, s.batch_size, "proj", rec)
        if dirs and probes.gen_prompts:
            answers = generate(lm, probes.gen_prompts, max_new_tokens=s.max_new_tokens, temperature=0.0,
                               batch_size=s.batch_size)  # fmt: skip
            _projections(lm, dirs, probes.gen_prompts, answers, s.batch_size, "gen_proj", rec)
        if probes.pairs:
            gaps = _pair_gaps(lm, probes.pairs, s.batch_size)
            rec.add("pref_gap", gaps)
            rec.add("pref_share", [float(g > 0) for g in gaps])
        if probes.indomain_rows:
            per_row, pooled = _indomain_losses(ctx, probes.indomain_rows, s.batch_size)
            rec.add("indomain_loss", per_row)
            rec.values["indomain_loss"] = pooled  # token-pooled, as eval_loss; sd stays per row
        if probes.indomain_pairs:
            rec.add("indomain_gap", _pair_gaps(lm, probes.indomain_pairs, s.batch_size))
    return rec


def clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x
