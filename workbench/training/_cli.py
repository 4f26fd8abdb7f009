"""``workbench train``: a typer-compatible command function (registered by ``workbench/cli.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._presets import preset_names


def train(
    config: Annotated[Path, typer.Argument(help="Training config YAML (see docs/training.md).")],
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a config value, e.g. --set optim.lr=3e-5 --set defenses.kl.weight=0.5; "
            f"--set preset=NAME applies a paper preset ({', '.join(preset_names())}; explicit values win).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default runs/train-<time>).")
    ] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.")] = False,
    overwrite: Annotated[
        bool,
        typer.Option(help="Empty --out first (only a workbench run directory holding none of the inputs)."),
    ] = False,
) -> None:
    """LoRA fine-tune with defenses and/or gates; writes config.yaml, metrics.jsonl, plots.html, adapter/.

    Several processes: torchrun --nproc_per_node N -m workbench.training._launch CONFIG [same options].
    """
    from ._loop import train as run_train

    run_dir = run_train(config, out, overrides=list(set_ or []), resume=resume, overwrite=overwrite)
    from workbench.runs import RunDir

    summary = RunDir(run_dir).train_summary()
    if summary:
        if summary.get("stopped_by"):
            typer.echo(
                f"stopped by {summary['stopped_by']} at step {summary.get('stopped_at_step')}: "
                f"{summary.get('stop_reason')} (continue with --resume)"
            )
    typer.echo(f"run directory: {run_dir}")
