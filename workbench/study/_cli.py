"""``workbench study run / status / report`` (registered by ``workbench/cli.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

study_app = typer.Typer(
    help="Run a grid of fine-tunes and evaluations as one resumable study (tables, Pareto plots, report).",
    no_args_is_help=True,
)


@study_app.command("run")
def run(
    study: Annotated[Path, typer.Argument(help="Study YAML (see docs/studies.md and studies/).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Study directory (default runs/study-<name>-<time>).")
    ] = None,
    workers: Annotated[
        int, typer.Option(help="Cells run at once (>= 1); one cell per GPU with --gpus-per-cell.")
    ] = 1,
    executor: Annotated[
        str,
        typer.Option(help="submitit executor: local (processes here), slurm (one job per cell) or debug."),
    ] = "local",
    resume: Annotated[
        bool,
        typer.Option(
            help="Continue the study in --out: finished runs are skipped, interrupted ones resumed."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(help="Empty --out first (only a workbench run directory holding none of the inputs)."),
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="Torch threads per worker (default: CPU cores / workers).")
    ] = None,
    gpus_per_cell: Annotated[int, typer.Option(help="GPUs per cell (0: none).")] = 0,
    engine_option: Annotated[
        list[str] | None,
        typer.Option(
            "--engine-option",
            help="key=value passed to submitit's update_parameters, e.g. slurm_partition=gpu, timeout_min=600.",
        ),
    ] = None,
) -> None:
    """Run every cell of a study not done yet, then write results.csv/.parquet, aggregate.csv, paired.csv,
    pareto.json and report.html."""
    from workbench import WorkbenchError

    from ._engine import parse_engine_options, run_study

    path, failed = run_study(
        study,
        out,
        workers=workers,
        executor=executor,
        resume=resume,
        overwrite=overwrite,
        threads=threads,
        gpus_per_cell=gpus_per_cell,
        engine_options=parse_engine_options(engine_option or []),
        echo=typer.echo,
    )
    typer.echo(f"run directory: {path}")
    if failed:
        raise WorkbenchError(
            f"{len(failed)} cell(s) failed ({', '.join(failed)}); the tables hold the others; see "
            f"'workbench study status {path}', fix the cause and rerun with --resume"
        )


@study_app.command("status")
def status(study_dir: Annotated[Path, typer.Argument(help="A study directory.")]) -> None:
    """The grid with each cell's state (done / running / failed / interrupted / pending)."""
    from ._engine import status_lines

    for line in status_lines(study_dir):
        typer.echo(line)


@study_app.command("report")
def report(study_dir: Annotated[Path, typer.Argument(help="A study directory.")]) -> None:
    """Write the tables and report.html again from the runs that finished (e.g. while cells still run)."""
    from ._results import write_tables

    write_tables(study_dir, echo=typer.echo)
