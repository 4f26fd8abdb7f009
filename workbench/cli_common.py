"""What every ``workbench`` command shares: its option declarations and the quiet model loader.

Commands live beside the code they drive (``workbench/cli.py``, ``probes/_cli.py``, ``steering/_cli.py``,
``gating/_cli.py``, ...) and are registered by ``workbench/cli.py``; an option that more than one command
takes is declared here once, with one help text, and used as a type::

    from workbench import DEFAULT_MODEL
    from workbench.cli_common import ModelOpt, load_model_quietly

    def info(model: ModelOpt = DEFAULT_MODEL) -> None:
        lm = load_model_quietly(model)

An option whose meaning differs between commands (``--out`` is a file for one and a run directory for
another) keeps its own declaration at the command.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from ._models import DEFAULT_MODEL

if TYPE_CHECKING:
    from ._models import LoadedModel

__all__ = [
    "DEFAULT_MODEL",
    "CheckModelOpt",
    "CompileOpt",
    "FileOverwriteOpt",
    "JsonOpt",
    "ModelOpt",
    "SeedOpt",
    "TrustRemoteCodeOpt",
    "load_model_quietly",
    "number_list",
    "quiet_transformers",
]

MODEL_HELP = f"Model spec: {DEFAULT_MODEL} (default), a local HF folder, a hub id, or random:<shape>."

ModelOpt = Annotated[str, typer.Option("--model", "-m", help=MODEL_HELP)]
"""``--model/-m``: the model a command runs (give it the default ``DEFAULT_MODEL``)."""

CheckModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        help="Check the file against this model spec (its fingerprint must fit; an imported vector takes it).",
    ),
]
"""``--model/-m`` of commands that read a file and only optionally check it against a model (default None)."""

TrustRemoteCodeOpt = Annotated[bool, typer.Option(help="Allow custom model code from the model folder.")]
SeedOpt = Annotated[int, typer.Option(help="Sampling seed.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
FileOverwriteOpt = Annotated[bool, typer.Option(help="Replace --out if it exists.")]
CompileOpt = Annotated[
    bool | None,
    typer.Option(help="Static KV cache + torch.compile decoding (default: on for CUDA, off on the CPU)."),
]


def quiet_transformers() -> None:
    """Turn off transformers' progress bars and its warnings below error level (for command-line output)."""
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - transformers always present
        pass


def load_model_quietly(
    spec: str = DEFAULT_MODEL,
    device: Any = None,
    dtype: Any = None,
    trust_remote_code: bool = False,
    *,
    seed: int = 0,
) -> LoadedModel:
    """``workbench.load_model`` after :func:`quiet_transformers`: the loader of every command, the demo, the
    explorer and the benchmarks (same arguments, same errors). It calls ``workbench.load_model`` as the
    package holds it at call time (so a test or a tool that replaces it there is heard)."""
    from . import load_model

    quiet_transformers()
    return load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code, seed=seed)


def number_list(
    values: list[str] | None, cast: type, flag: str, noun: str = "a valid number"
) -> list[Any] | None:
    """``["0,2", "4"]`` -> ``[0, 2, 4]`` (each part through ``cast``): repeated flags and comma-separated lists
    both work; ``None`` when nothing was given. A part ``cast`` refuses is a one-line error naming ``flag``."""
    from ._errors import WorkbenchError

    if not values:
        return None
    out = []
    for v in values:
        for part in str(v).split(","):
            if part.strip():
                try:
                    out.append(cast(part.strip()))
                except ValueError:
                    raise WorkbenchError(f"{flag}: '{part.strip()}' is not {noun}") from None
    return out
