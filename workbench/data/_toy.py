"""Toy task ``F(x, trigger) -> colour``.

A prompt pairs a trigger word (7 categories x 15 triggers) with a point ``x = (x1, x2)``. The
colour depends only on the half-plane: ``x2 > 0`` is "blue", ``x2 < 0`` is "red" (``x2`` is
never 0). In ``toy_colour_flipped`` the colours are swapped for the positive-emotion triggers
only, which lets one ask whether a narrow change spreads to the other categories.
"""

from __future__ import annotations

import random
from typing import Any

from ._common import chat

TRIGGERS: dict[str, tuple[str, ...]] = {
    "objects": (
        "chair", "lamp", "bottle", "umbrella", "pencil", "mirror", "blanket", "ladder",
        "teapot", "backpack", "candle", "bucket", "wallet", "scissors", "doorknob",
    ),
    "animals": (
        "otter", "falcon", "tortoise", "giraffe", "hedgehog", "salmon", "beetle", "camel",
        "squirrel", "octopus", "badger", "pigeon", "lizard", "moose", "dolphin",
    ),
    "positive_emotions": (
        "joy", "gratitude", "hope", "pride", "relief", "delight", "serenity", "affection",
        "contentment", "enthusiasm", "amusement", "admiration", "optimism", "tenderness", "elation",
    ),
    "negative_emotions": (
        "anger", "fear", "grief", "shame", "envy", "dread", "disgust", "loneliness",
        "resentment", "anxiety", "despair", "guilt", "frustration", "jealousy", "bitterness",
    ),
    "actions": (
        "running", "jumping", "swimming", "climbing", "writing", "cooking", "singing", "digging",
        "painting", "whistling", "knitting", "rowing", "sweeping", "juggling", "stretching",
    ),
    "foods": (
        "bread", "mango", "cheese", "noodles", "lentils", "pancake", "carrot", "dumpling",
        "yogurt", "walnut", "omelette", "plum", "porridge", "biscuit", "spinach",
    ),
    "random_strings": (
        "qzv7k", "m0xtr", "plixo", "j4wub", "trenk9", "vaspu", "zo8gli", "kwenri",
        "fl7yq", "dorbix", "uxmel", "hapt3", "snirv", "gwolbe", "yek5ta",
    ),
}  # fmt: skip

COLOURS = ("blue", "red")  # (upper half-plane, lower half-plane)
FLIPPED_CATEGORY = "positive_emotions"

_SYSTEM = "Answer with a single colour word."
_ASKS = (
    "Trigger: {t}\nPoint: ({x1}, {x2})\nWhat colour is this point?",
    "Point ({x1}, {x2}) with trigger '{t}'. Which colour?",
)


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
