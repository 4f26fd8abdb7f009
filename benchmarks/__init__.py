"""Performance harness behind ``workbench bench``: pairs measured side by side, reported as ratios.

``run_bench(device=..., shape=..., quick=...)`` returns the report (see ``benchmarks/README.md`` for its
keys); ``ROWS`` is the ordered registry of rows and ``register_row(RowSpec(...))`` adds one (the extension
point for later rows and variants such as compiled decoding or monitor overhead).
"""

from . import _rows  # noqa: F401  (registers the shipped rows)
from ._harness import ROWS, Bench, Measured, RowSpec, Side, Target, at_least, at_most, register_row, run_bench

__all__ = [
    "ROWS",
    "Bench",
    "Measured",
    "RowSpec",
    "Side",
    "Target",
    "at_least",
    "at_most",
    "register_row",
    "run_bench",
]
