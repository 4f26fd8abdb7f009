"""``interleave``: mix a fraction of pool examples (benign / safety data) evenly through the training rows."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from workbench.settings import setting

from .._data import ORIGIN, interleave_evenly, n_to_add
from .._plugins import Defense, register_defense
from ._common import SourceSettings


@dataclass
class InterleaveSettings(SourceSettings):
    fraction: float = setting(0.1, help="share of the final training rows that come from the pool, in [0, 1)")

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"'fraction' must be in [0, 1), got {self.fraction}")


def pick(pool: list[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """``k`` rows drawn without replacement (the pool is repeated, reshuffled, when ``k`` exceeds it)."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    while len(out) < k:
        order = list(range(len(pool)))
        rng.shuffle(order)
        out.extend(pool[i] for i in order[: k - len(out)])
    return out


def mix(rows: list[dict[str, Any]], extra: list[dict[str, Any]], origin: str) -> list[dict[str, Any]]:
    """Insert ``extra`` (tagged with ``origin``) evenly through ``rows``."""
    return interleave_evenly(rows, [{**r, ORIGIN: origin} for r in extra])


@register_defense("interleave")
class InterleaveDefense(Defense):
    """Random pool rows, spread evenly through training (and shuffled with it when ``optim.shuffle``)."""

    Settings = InterleaveSettings

    def transform_data(self, ctx: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        s = self.settings
        k = n_to_add(len(rows), s.fraction)
        if k == 0:
            return rows
        pool = ctx.load_rows(s.source, s.n, s.seed)
        return mix(rows, pick(pool, k, s.seed), self.name)
