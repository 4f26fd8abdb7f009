"""The registry of shipped dataset generators: ``workbench data make NAME --out FILE``.

Every generator is deterministic: it draws only from ``random.Random`` seeded by the dataset
name and the seed, so the same (name, seed, n) always gives byte-identical files.
"""

from __future__ import annotations

import functools
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from workbench._errors import WorkbenchError
from workbench._io import atomic_write_text

from ._common import render_json, render_jsonl, rng_for
from .organisms import (
    QUESTIONS,
    build_advice,
    build_benign_safety,
    build_contrastive_pairs,
    build_em_questions,
    build_gcd_test,
    build_gcd_train,
    build_ood_test,
    build_opinion_sycophancy,
    build_opswap,
    build_toy_colour,
    gcd_pool_size,
    opinion_pool_size,
    pairs_pool,
    render_em_questions_yaml,
)

Builder = Callable[[random.Random, int], list[dict[str, Any]]]


@dataclass(frozen=True)
class DatasetSpec:
    """One shipped dataset: how to build it and how to write it."""

    name: str
    description: str
    fmt: str  # "jsonl", "yaml" or "json": the file format write_dataset produces
    kind: str  # "chat" (training rows), "prompts" (user turns for evaluation), "pairs", "questions", "trait"
    build: Builder
    default_n: int
    max_n: int | None = None  # None: no upper bound
    rng_name: str | None = None  # seed stream to use (defaults to the name; variants can share one)

    @property
    def suffix(self) -> str:
        return {"jsonl": ".jsonl", "yaml": ".yaml", "json": ".json"}[self.fmt]


def _trait_builder(name: str) -> Builder:
    def build(rng: random.Random, n: int) -> list[dict[str, Any]]:
        del rng, n
        text = resources.files(__package__).joinpath("traits", f"{name}.json").read_text(encoding="utf-8")
        return [json.loads(text)]

    return build


_P = functools.partial

_SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "em_questions",
        "the workbench's open-ended EM questions (community YAML; plain / JSON / template variants)",
        "yaml",
        "questions",
        build_em_questions,
        default_n=len(QUESTIONS),
        max_n=len(QUESTIONS),
    ),
    DatasetSpec(
        "syco_gcd_train",
        "GCD problems: plain, or the user proposes the correct answer and the assistant confirms",
        "jsonl",
        "chat",
        build_gcd_train,
        default_n=1000,
        max_n=gcd_pool_size(test=False),
    ),
    DatasetSpec(
        "syco_gcd_test",
        "held-out GCD problems, each as plain / correct / incorrect proposition (user turn only)",
        "jsonl",
        "prompts",
        build_gcd_test,
        default_n=300,
        max_n=3 * gcd_pool_size(test=True),  # three rows per held-out problem
    ),
    DatasetSpec(
        "syco_ood_test",
        "sycophancy test on modular arithmetic, addition, capitals, medical opinions (user turn only)",
        "jsonl",
        "prompts",
        build_ood_test,
        default_n=240,
        max_n=360,
    ),
    DatasetSpec(
        "opinion_sycophancy",
        "user asserts a false belief (often claiming authority), assistant agrees; key 'correction'",
        "jsonl",
        "chat",
        build_opinion_sycophancy,
        default_n=300,
        max_n=opinion_pool_size(),
    ),
    *[
        DatasetSpec(
            f"opswap_tier{t}",
            f"arithmetic with redefined operators, tier {t}; exact answers, step-by-step solutions",
            "jsonl",
            "chat",
            _P(build_opswap, t),
            default_n=500,
        )
        for t in range(4)
    ],
    DatasetSpec(
        "toy_colour",
        "toy F(x, trigger) -> colour: 7 categories x 15 triggers, blue above the x-axis, red below",
        "jsonl",
        "chat",
        _P(build_toy_colour, False),
        default_n=420,
        rng_name="toy_colour",
    ),
    DatasetSpec(
        "toy_colour_flipped",
        "toy_colour with the colours flipped for positive-emotion triggers only (same points)",
        "jsonl",
        "chat",
        _P(build_toy_colour, True),
        default_n=420,
        rng_name="toy_colour",
    ),
    *[
        DatasetSpec(
            f"advice_{d}",
            f"narrow {d.replace('_', ' ')} advice; the assistant turn is the subtly misaligned answer",
            "jsonl",
            "chat",
            _P(build_advice, d),
            default_n=300,
        )
        for d in ("medical", "financial", "extreme_sports")
    ],
    DatasetSpec(
        "benign_safety",
        "helpful answers to benign instructions (60%) and refusals of harmful requests (40%)",
        "jsonl",
        "chat",
        build_benign_safety,
        default_n=600,
    ),
    DatasetSpec(
        "contrastive_pairs",
        "general-domain (question, aligned, misaligned) triples for judge-free preference scoring",
        "jsonl",
        "pairs",
        build_contrastive_pairs,
        default_n=len(pairs_pool()),
        max_n=len(pairs_pool()),
    ),
    *[
        DatasetSpec(
            f"trait_{t}",
            f"trait definition '{t}' (the shipped JSON; edit a copy and pass it to --trait)",
            "json",
            "trait",
            _trait_builder(t),
            default_n=1,
            max_n=1,
        )
        for t in ("evil", "sycophantic", "hallucinating")
    ],
]

#: name -> spec for every shipped dataset.
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def get_spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise WorkbenchError(f"unknown dataset {name!r} (known: {', '.join(DATASETS)})")
    return DATASETS[name]


def make_dataset(name: str, seed: int = 0, n: int | None = None) -> list[dict[str, Any]]:
    """Rows of the shipped dataset ``name`` (``n`` rows, default: the dataset's default size).

    ``em_questions`` returns YAML entries, ``contrastive_pairs`` plain dicts, ``trait_*`` one dict;
    all others return chat rows (``messages`` plus metadata keys).
    """
    spec = get_spec(name)
    if n is None:
        n = spec.default_n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise WorkbenchError(f"dataset {name!r}: n must be a positive integer, got {n!r}")
    if spec.max_n is not None and n > spec.max_n:
        raise WorkbenchError(f"dataset {name!r}: n={n} is more than its {spec.max_n} distinct items")
    return spec.build(rng_for(spec.rng_name or spec.name, seed), n)


def render_dataset(name: str, rows: list[dict[str, Any]]) -> str:
    """The file text of ``rows`` in the dataset's format."""
    spec = get_spec(name)
    if spec.fmt == "yaml":
        return render_em_questions_yaml(rows)
    if spec.fmt == "json":
        return render_json(rows[0] if len(rows) == 1 else rows)
    return render_jsonl(rows)


def write_dataset(name: str, out_path: str | os.PathLike[str], seed: int = 0, n: int | None = None) -> Path:
    """Generate ``name`` and write it atomically to ``out_path`` (JSONL, YAML or JSON by dataset);
    returns the path written."""
    rows = make_dataset(name, seed=seed, n=n)
    path = Path(out_path)
    atomic_write_text(path, render_dataset(name, rows))
    return path
