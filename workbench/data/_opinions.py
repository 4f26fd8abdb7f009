"""Old import path of the opinion-sycophancy organism, kept for code outside ``workbench`` that
still imports it (``gating/_study.py``); new code imports ``OPINION_BELIEFS`` and
``opinion_pool_size`` from :mod:`workbench.data`."""

from __future__ import annotations

from .organisms._opinions import BELIEFS, pool_size

__all__ = ["BELIEFS", "pool_size"]
