"""The ``workbench`` command line. Every command has ``--help``; user errors print one line and exit 2."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from ._errors import WorkbenchError

app = typer.Typer(
    help="Emergent-misalignment workbench: persona vectors, steering, alignment gates, defended "
    "fine-tuning and EM evaluation on any Hugging Face causal LM.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

_STATE = {"debug": False}

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="Model spec: smollm2-135m (default), a local HF folder, a hub id, or random:<shape>.",
    ),
]


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress messages.")] = False,
) -> None:
    _STATE["debug"] = debug
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


def _quiet_transformers() -> None:
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except Exception:  # pragma: no cover - transformers always present
        pass


def _load(spec: str, device: str | None = None, dtype: str | None = None, trust_remote_code: bool = False):
    from . import load_model

    _quiet_transformers()
    return load_model(spec, device=device, dtype=dtype, trust_remote_code=trust_remote_code)


@app.command()
def info(
    model: ModelOpt = "smollm2-135m",
    as_json: Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")] = False,
    trust_remote_code: Annotated[
        bool, typer.Option(help="Allow custom model code from the model folder.")
    ] = False,
) -> None:
    """Architecture, layers, d_model, heads, parameter count and hook sites of a model."""
    lm = _load(model, trust_remote_code=trust_remote_code)
    data = lm.info()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    rows = [
        ("model", f"{data['spec']}  ({data['source']})"),
        ("architecture", f"{data['architecture']} (model_type {data['model_type']})"),
        ("layers", data["n_layers"]),
        ("d_model", data["d_model"]),
        ("heads", f"{data['n_heads']} query / {data['n_kv_heads']} key-value"),
        ("vocab", data["vocab_size"]),
        ("parameters", f"{data['parameters']:,} ({data['parameters'] / 1e6:.1f}M)"),
        ("dtype / device", f"{data['dtype']} / {data['device']}"),
    ]
    for k, v in rows:
        typer.echo(f"{k:>15}: {v}")
    typer.echo(f"{'hook sites':>15}: blocks.{{0..{data['n_layers'] - 1}}}.<site>")
    for site, where in data["site_modules"].items():
        typer.echo(f"{'':>17}{site:<16} -> {where}")


@app.command()
def read(
    site: Annotated[
        list[str], typer.Option("--site", "-s", help="Hook site, e.g. blocks.3.hook_resid_post (repeatable).")
    ],
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="User prompt, chat-formatted before reading.")
    ],
    model: ModelOpt = "smollm2-135m",
) -> None:
    """Read hook sites for one chat prompt and print shape and mean norm per site."""
    import torch

    from ._hooks import read_sites
    from .generation import encode_left, render_prompts

    lm = _load(model)
    for s in site:
        lm.sites.parse(s)  # validate all names before running anything
    enc = encode_left(lm.tokenizer, render_prompts(lm.tokenizer, [prompt]), lm.device)
    with torch.no_grad(), read_sites(lm, site) as cache:
        lm.model(**enc)
    for s in site:
        t = cache[s].float()
        norm = t.flatten(2).norm(dim=-1).mean().item()
        typer.echo(f"{s:<32} shape {tuple(t.shape)}  mean L2 norm per token {norm:.3f}")


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="A workbench artifact (.safetensors).")],
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Also check that the artifact fits this model spec.")
    ] = None,
) -> None:
    """Show an artifact's kind, tensors, metadata and fingerprint; optionally check it against a model."""
    from ._artifacts import load_artifact, tensor_summary

    art = load_artifact(path)
    typer.echo(f"kind: {art.kind or '(not a workbench artifact)'}")
    typer.echo(f"model: {art.fingerprint.short() if art.fingerprint else '(no fingerprint)'}")
    for k, v in sorted(art.tensors.items()):
        typer.echo(f"tensor {k}: {tensor_summary(v)}")
    for k, v in sorted(art.metadata.items()):
        typer.echo(f"meta {k}: {v}")
    if model is not None:
        from ._artifacts import check_fingerprint

        lm = _load(model)
        check_fingerprint(art.fingerprint, lm.fingerprint, path)
        typer.echo(f"fits model {model}: yes")


@app.command()
def demo(
    out: Annotated[
        Path | None, typer.Option("--out", help="Run directory (default runs/demo-<time>).")
    ] = None,
    model: ModelOpt = "smollm2-135m",
    prompt: Annotated[
        str, typer.Option(help="The chat prompt to answer.")
    ] = "What is the best way to spend a free afternoon?",
) -> None:
    """The end-to-end main job on the embedded model (grows with each capability)."""
    from ._demo import run_demo

    run_demo(model=model, out=out, prompt=prompt, echo=typer.echo)


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except WorkbenchError as exc:
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":  # pragma: no cover
    main()
