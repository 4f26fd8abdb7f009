"""``workbench bench``: the typer-compatible command function (registered by ``workbench/cli.py``).

Runs with only torch, transformers, peft, accelerate, safetensors, numpy, typer, tqdm and pyyaml installed
(the GPU machine): nothing optional is imported on this path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from workbench import DEFAULT_MODEL, WorkbenchError


def bench(
    out: Annotated[Path, typer.Option("--out", "-o", help="Where to write the JSON report.")],
    device: Annotated[
        str | None, typer.Option("--device", help="cpu or cuda (default: cuda when available, else cpu).")
    ] = None,
    shape: Annotated[
        str | None,
        typer.Option(
            "--shape",
            help=f"Model spec: {DEFAULT_MODEL} (default on cpu), random:qwen2.5-7b (default on cuda), any "
            "random:<shape>, a local folder or a hub id.",
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Small sizes (about 3 minutes on 2 CPU cores).")
    ] = False,
    dtype: Annotated[
        str | None,
        typer.Option(
            "--dtype", help="float32, bfloat16 or float16 (default: float32 on cpu, bfloat16 on cuda)."
        ),  # fmt: skip
    ] = None,
    only: Annotated[
        list[str] | None, typer.Option("--only", help="Run only this row (repeatable); see --list.")
    ] = None,
    list_rows: Annotated[bool, typer.Option("--list", help="List the rows and exit.")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first row that fails.")] = False,
) -> None:
    """Performance ratios measured side by side (interleaved, medians): extraction, steering, gates,
    defended LoRA steps, Interleaving+ scoring, decoding vs the memory-bandwidth bound."""
    from workbench.io import atomic_write_json

    from ._harness import ROWS, format_table, run_bench, select_rows

    if list_rows:
        select_rows(None)
        for name, spec in ROWS.items():
            typer.echo(f"{name:<38} {spec.title}")
        return
    if out.exists() and out.is_dir():
        raise WorkbenchError(f"--out '{out}' is a folder; give a file name such as bench.json")
    if not out.parent.exists():
        raise WorkbenchError(f"--out '{out}': the folder '{out.parent}' does not exist")
    report = run_bench(
        device=device,
        shape=shape,
        quick=quick,
        dtype=dtype,
        only=only,
        strict=strict,
        progress=True,
    )
    atomic_write_json(out, report)
    typer.echo(format_table(report))
    typer.echo(f"wrote {out}")
    errors = report["summary"]["errors"]
    if errors:
        raise WorkbenchError(
            f"{len(errors)} bench row(s) failed ({', '.join(errors)}); their reasons are in {out}"
        )
