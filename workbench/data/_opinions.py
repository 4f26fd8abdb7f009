"""Old import path of the opinion-sycophancy organism, kept for code that still imports it; new code
imports ``OPINION_BELIEFS`` and ``opinion_pool_size`` from :mod:`workbench.data`."""

from __future__ import annotations

from .organisms import OPINION_BELIEFS as BELIEFS
from .organisms import opinion_pool_size as pool_size

__all__ = ["BELIEFS", "pool_size"]
