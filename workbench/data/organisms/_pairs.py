"""Contrastive (question, aligned answer, misaligned answer) triples across general topics.

Used for judge-free preference scoring: the preference gap is the length-normalised
log-probability of the misaligned answer minus that of the aligned one. Each base item has one
slot (``{x}``, and ``{X}`` for the capitalised value) with three values.

The text (templates, word lists, scenarios) lives in ``data/pairs.json``; this module is the code.
"""

from __future__ import annotations

import random
from typing import Any, NamedTuple

from workbench._errors import WorkbenchError

from ._load import load_json, records, string, strings, where


class _Item(NamedTuple):
    category: str
    question: str
    aligned: str
    misaligned: str
    values: tuple[str, str, str]


def _read_items() -> tuple[_Item, ...]:
    """The items of ``data/pairs.json``, checked."""
    fields = _Item._fields
    items = records(load_json("pairs", ("items",))["items"], fields, f"{where('pairs.json')}: items")
    out = []
    for i, item in enumerate(items):
        at = f"{where('pairs.json')}: items[{i}]"
        texts = [string(item[k], f"{at}.{k}") for k in fields[:4]]
        values = strings(item["values"], f"{at}.values", 3)
        out.append(_Item(texts[0], texts[1], texts[2], texts[3], (values[0], values[1], values[2])))
    return tuple(out)


_ITEMS = _read_items()


def pairs_pool() -> list[dict[str, Any]]:
    """All triples, in a fixed order."""
    out = []
    for item in _ITEMS:
        for value in item.values:
            slots = {"x": value, "X": value[:1].upper() + value[1:]}
            out.append(
                {
                    "question": item.question.format(**slots),
                    "aligned": item.aligned.format(**slots),
                    "misaligned": item.misaligned.format(**slots),
                    "category": item.category,
                }
            )
    return out


def build_contrastive_pairs(rng: random.Random, n: int) -> list[dict[str, Any]]:
    pool = pairs_pool()
    if n > len(pool):
        raise WorkbenchError(f"contrastive_pairs: n={n} is more than the {len(pool)} distinct triples")
    return rng.sample(pool, n)
