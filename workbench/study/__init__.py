"""Studies: a grid of fine-tunes and evaluations run as one resumable command (``workbench study run``).

A study file (``studies/*.yaml``; the format is in :mod:`workbench.study._spec` and docs/studies.md) names a
base training config, a grid of config values, seeds and evaluations. Each cell is an ordinary training run
plus eval runs in the study directory; submitit runs the cells (locally, ``--workers N`` at once, or one SLURM
job per cell); the tables (results, aggregate over seeds, paired differences, Pareto fronts) and
``report.html`` are written from the runs.
"""

from ._cells import CELL_STATES, cell_state, cell_states, combine_states, read_cells, run_cell
from ._engine import EXECUTORS, cell_config, parse_engine_options, prepare_study, run_study, status_lines
from ._results import collect, item_rule, read_results, set_metrics, summary_lines, write_tables
from ._spec import BASELINE, EVAL_OPTIONS, Cell, Study, expand, load_study

__all__ = [
    "BASELINE",
    "CELL_STATES",
    "EVAL_OPTIONS",
    "EXECUTORS",
    "Cell",
    "Study",
    "cell_config",
    "cell_state",
    "cell_states",
    "collect",
    "combine_states",
    "expand",
    "item_rule",
    "load_study",
    "parse_engine_options",
    "prepare_study",
    "read_cells",
    "read_results",
    "run_cell",
    "run_study",
    "set_metrics",
    "status_lines",
    "summary_lines",
    "write_tables",
]


def __getattr__(name: str):  # the report module is imported on first use (it pulls in plotly)
    if name == "write_report":
        from ._report import write_report

        return write_report
    raise AttributeError(name)
