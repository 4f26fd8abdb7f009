"""Performance harness behind ``workbench bench``: pairs measured side by side, reported as ratios.

``run_bench(device=..., shape=..., quick=...)`` returns the report (see ``benchmarks/README.md`` for its
keys); ``ROWS`` is the ordered registry of rows and ``register_row(RowSpec(...))`` adds one (the extension
point for later rows and variants such as compiled decoding or monitor overhead). The shipped rows are listed
in ``benchmarks/rows/__init__.py``, their functions in one module per family under ``benchmarks/rows/``.
"""

from . import rows  # noqa: F401  (registers the shipped rows: benchmarks/rows/__init__.py lists them)
from ._harness import ROWS, Bench, Measured, RowSpec, Side, Target, at_least, at_most, register_row, run_bench
from ._monitor_row import monitor_overhead  # the EM monitor's share of training time (lora_step_monitor)

__all__ = [
    "ROWS",
    "Bench",
    "Measured",
    "RowSpec",
    "Side",
    "Target",
    "at_least",
    "at_most",
    "monitor_overhead",
    "register_row",
    "run_bench",
]
