"""Small helpers shared by the data loaders and generators."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")


def rng_for(name: str, seed: int) -> random.Random:
    """A generator seeded from the dataset name and the seed.

    String seeds are hashed with SHA-512 by :class:`random.Random`, so the stream is stable across
    runs, platforms and Python versions, and two datasets with the same seed are decorrelated.
    """
    return random.Random(f"workbench.data/{name}/{int(seed)}")


def chat(*turns: tuple[str, str], **extra: Any) -> dict[str, Any]:
    """One chat row: ``chat(("user", "hi"), ("assistant", "hello"), kind="x")``."""
    row: dict[str, Any] = {"messages": [{"role": r, "content": c} for r, c in turns]}
    row.update(extra)
    return row


def render_jsonl(rows: Iterable[dict[str, Any]]) -> str:
    """Rows as JSON lines (UTF-8 text, key order as built, one trailing newline per row)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def render_json(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def display(path: str | os.PathLike[str]) -> str:
    """How a path is named in error messages."""
    return str(Path(path))


def a_or_an(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word
