"""Toy task ``F(x, trigger) -> colour``.

A prompt pairs a trigger word (7 categories x 15 triggers) with a point ``x = (x1, x2)``. The
colour depends only on the half-plane: ``x2 > 0`` is "blue", ``x2 < 0`` is "red" (``x2`` is
never 0). In ``toy_colour_flipped`` the colours are swapped for the positive-emotion triggers
only, which lets one ask whether a narrow change spreads to the other categories.

The text (templates, word lists, scenarios) lives in ``data/toy.json``; this module is the code.
"""

from __future__ import annotations

import random
from typing import Any

from workbench._errors import WorkbenchError

from .._common import chat
from ._load import load_json, string, strings, where

_TEXT = load_json("toy", ("system", "asks", "triggers"))

#: category -> its 15 trigger words (``data/toy.json``)
TRIGGERS: dict[str, tuple[str, ...]] = {
    category: strings(words, f"{where('toy.json')}: triggers.{category}", 15)
    for category, words in _TEXT["triggers"].items()
}

COLOURS = ("blue", "red")  # (upper half-plane, lower half-plane)
FLIPPED_CATEGORY = "positive_emotions"
if FLIPPED_CATEGORY not in TRIGGERS:
    raise WorkbenchError(f"{where('toy.json')}: triggers has no category '{FLIPPED_CATEGORY}'")

_SYSTEM = string(_TEXT["system"], f"{where('toy.json')}: system")
_ASKS = strings(_TEXT["asks"], f"{where('toy.json')}: asks")


def toy_colour(x: tuple[float, float], category: str, flipped: bool = False) -> str:
    """The colour of point ``x`` for a trigger of ``category`` (``flipped`` = the flipped variant)."""
    upper = x[1] > 0
    if flipped and category == FLIPPED_CATEGORY:
        upper = not upper
    return COLOURS[0] if upper else COLOURS[1]


def all_triggers() -> list[tuple[str, str]]:
    """(category, trigger) for all 105 triggers, in a fixed order."""
    return [(cat, t) for cat, triggers in TRIGGERS.items() for t in triggers]


def build_toy_colour(flipped: bool, rng: random.Random, n: int) -> list[dict[str, Any]]:
    """Rows come in passes over all 105 triggers (a fresh random order per pass), so every trigger
    appears equally often when 105 divides ``n``. A trigger's point lies above the x-axis on every
    other pass, so each trigger sees both half-planes and the two colours are balanced."""
    triggers = all_triggers()
    rows = []
    order: list[int] = []
    for i in range(n):
        if i % len(triggers) == 0:
            order = list(range(len(triggers)))
            rng.shuffle(order)
        index = order[i % len(triggers)]
        category, trigger = triggers[index]
        upper = (index + i // len(triggers)) % 2 == 0
        x1 = rng.randint(-100, 100) / 10
        x2 = rng.randint(1, 100) / 10 * (1 if upper else -1)
        answer = toy_colour((x1, x2), category, flipped)
        ask = rng.choice(_ASKS).format(t=trigger, x1=x1, x2=x2)
        rows.append(
            chat(
                ("system", _SYSTEM),
                ("user", ask),
                ("assistant", answer),
                x=[x1, x2],
                trigger=trigger,
                category=category,
                answer=answer,
            )
        )
    return rows
