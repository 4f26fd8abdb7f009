"""The probe sets of a monitor: reference answers, general-domain pairs and held-out in-domain rows.

Prepared once, before training, from the ``monitor:`` block and the run's own data (the in-domain rows default
to rows the run does not train on); every measurement then reads the same inputs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from workbench import WorkbenchError
from workbench.data import DATASETS, make_dataset
from workbench.training import DataSource

from ._settings import MonitorSettings

if TYPE_CHECKING:
    from workbench.training import TrainContext

log = logging.getLogger("probes.monitor")


@dataclass
class ProbeSet:
    """The fixed inputs of every measurement (prepared once, before training)."""

    ref_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    ref_answers: list[str] = field(default_factory=list)
    gen_prompts: list[list[dict[str, str]]] = field(default_factory=list)
    pairs: list[tuple[list[dict[str, str]], str, str]] = field(default_factory=list)  # prompt, aligned, mis
    indomain_rows: list[dict[str, Any]] = field(default_factory=list)
    indomain_pairs: list[tuple[list[dict[str, str]], str, str]] = field(default_factory=list)
    described: dict[str, Any] = field(default_factory=dict)


def _prompt_of(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The conversation up to (not including) its last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return [dict(m) for m in messages[:last]]


def _pair_of(row: dict[str, Any]) -> tuple[list[dict[str, str]], str, str] | None:
    """(prompt, aligned, misaligned) from a pairs row, a chat row with pair keys, or an opinion row."""
    if "question" in row and "aligned" in row and "misaligned" in row:
        return [{"role": "user", "content": row["question"]}], row["aligned"], row["misaligned"]
    msgs = row.get("messages")
    if not msgs or not any(m["role"] == "assistant" for m in msgs):
        return None
    if "aligned" in row and "misaligned" in row:
        return _prompt_of(msgs), row["aligned"], row["misaligned"]
    if "correction" in row:  # opinion sycophancy: correcting is aligned, the trained agreement is not
        answer = [m for m in msgs if m["role"] == "assistant"][-1]["content"]
        return _prompt_of(msgs), row["correction"], answer
    return None


def _source_kind(src: DataSource) -> str:
    """``pairs`` or ``chat`` (a file is sniffed from its first row)."""
    if src.name is not None:
        if src.name not in DATASETS:
            raise WorkbenchError(f"unknown dataset '{src.name}' (known: {', '.join(DATASETS)})")
        return "pairs" if DATASETS[src.name].kind == "pairs" else "chat"
    path = Path(str(src.path))
    if not path.is_file():
        raise WorkbenchError(f"probe file '{path}' not found")
    with open(path, encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), "{}")
    try:
        keys = set(json.loads(first))
    except json.JSONDecodeError:
        return "chat"  # the chat loader reports the bad line
    return "pairs" if {"question", "aligned", "misaligned"} <= keys and "messages" not in keys else "chat"


def _rows_of(ctx: TrainContext, src: DataSource, kind: str = "chat") -> list[dict[str, Any]]:
    """Rows of one source as the loop reads its own: a shipped generator's, or a file's first ``n``."""
    if src.name is not None:
        return [dict(r) for r in make_dataset(src.name, seed=src.seed, n=src.n)]
    return ctx.load_rows(str(src.path), src.n, src.seed, kind=kind)


def _load(ctx: TrainContext, src: DataSource, key: str) -> list[dict[str, Any]]:
    try:
        return _rows_of(ctx, src, _source_kind(src))
    except WorkbenchError as exc:
        raise WorkbenchError(f"monitor.{key}: {exc}") from None


def _held_out(ctx: TrainContext, n: int) -> tuple[list[dict[str, Any]], str]:
    """In-domain rows the run does not train on: its eval_data, else a fresh draw of its first generator."""
    cfg = ctx.config
    if cfg.eval_data:
        rows = [r for src in cfg.eval_data for r in _rows_of(ctx, src)][:n]
        return rows, "the run's eval_data: " + ", ".join(s.describe() for s in cfg.eval_data)
    gen = next((s for s in cfg.data if s.name is not None and DATASETS[s.name].kind == "chat"), None)
    if gen is None or gen.name is None:
        return (
            [],
            "none (no eval_data and no shipped generator among the training sources; set monitor.indomain)",
        )
    spec = DATASETS[gen.name]
    want = (gen.n or spec.default_n) + n
    if spec.max_n is not None:
        want = min(want, spec.max_n)
    seen = {json.dumps(r["messages"], sort_keys=True) for r in ctx.rows}
    fresh = [
        r
        for r in make_dataset(gen.name, seed=gen.seed + 1, n=want)
        if json.dumps(r["messages"], sort_keys=True) not in seen
    ]
    return fresh[:n], f"{gen.name} (seed {gen.seed + 1}), rows not in the training set"


def build_probes(ctx: TrainContext, s: MonitorSettings) -> ProbeSet:
    """Load and check the probe sets of ``s`` against the run's training rows."""
    p = ProbeSet()
    if s.reference is not None:
        rows = _load(ctx, s.reference, "reference")
        for r in rows:
            if "question" in r:
                p.ref_prompts.append([{"role": "user", "content": r["question"]}])
                p.ref_answers.append(r["aligned"])
            else:
                p.ref_prompts.append(_prompt_of(r["messages"]))
                p.ref_answers.append([m for m in r["messages"] if m["role"] == "assistant"][-1]["content"])
        p.gen_prompts = p.ref_prompts[: s.generate]
        p.described["reference"] = f"{s.reference.describe()}: {len(rows)} answers"
    if s.pairs is not None:
        rows = _load(ctx, s.pairs, "pairs")
        for i, r in enumerate(rows):
            pair = _pair_of(r)
            if pair is None:
                raise WorkbenchError(
                    f"monitor.pairs: row {i + 1} of {s.pairs.describe()} has no (aligned, misaligned) answers"
                )
            p.pairs.append(pair)
        p.described["pairs"] = f"{s.pairs.describe()}: {len(p.pairs)} pairs"
    if s.indomain_n:
        if s.indomain is not None:
            rows = _load(ctx, s.indomain, "indomain")[: s.indomain_n]
            what = s.indomain.describe()
        else:
            rows, what = _held_out(ctx, s.indomain_n)
        p.indomain_rows = [r for r in rows if "messages" in r]
        p.indomain_pairs = [x for x in map(_pair_of, p.indomain_rows) if x is not None]
        p.described["indomain"] = f"{what}: {len(p.indomain_rows)} rows, {len(p.indomain_pairs)} with pairs"
    trained = {
        json.dumps([m for m in r.get("messages", []) if m["role"] != "assistant"], sort_keys=True)
        for r in ctx.rows
    }
    prompts = (
        p.ref_prompts + [q for q, _, _ in p.pairs] + [_prompt_of(r["messages"]) for r in p.indomain_rows]
    )
    overlap = sum(
        1
        for q in prompts
        if json.dumps([m for m in q if m["role"] != "assistant"], sort_keys=True) in trained
    )
    if overlap:
        log.warning(
            "monitor: %d probe prompts also occur in the training data; its signals are then not held out",
            overlap,
        )
    p.described["overlap_with_training"] = overlap
    return p
