"""Settings shared by defenses that read an alignment (or pool) data source."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.settings import setting


@dataclass
class SourceSettings:
    """Where alignment / pool rows come from."""

    source: str = setting("benign_safety", help="chat JSONL path or shipped dataset name")
    n: int | None = setting(None, help="rows to use (null: the dataset's default size / the whole file)")
    seed: int = setting(0, help="seed for generating and ordering these rows")
