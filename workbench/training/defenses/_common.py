"""Settings shared by defenses that read an alignment (or pool) data source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .._config import _f


@dataclass
class SourceSettings:
    """Where alignment / pool rows come from."""

    source: str = _f("benign_safety", help="chat JSONL path or shipped dataset name")
    n: int | None = _f(None, help="rows to use (null: the dataset's default size / the whole file)")
    seed: int = _f(0, help="seed for generating and ordering these rows")


def help_of(cls: type) -> dict[str, Any]:
    """``{field: help}`` of a settings dataclass."""
    return {f.name: f.metadata.get("help", "") for f in cls.__dataclass_fields__.values()}  # type: ignore[attr-defined]
