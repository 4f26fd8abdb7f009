"""``workbench gate``: apply trained gates at inference (suppress, amplify or any alpha).

The lead registers ``gate`` with ``app.command("gate")(gate)``; ``gate_intervention`` (in ``_gateset``)
serves ``workbench eval --gates FILE --gate-alpha A``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import typer

from workbench import DEFAULT_MODEL, WorkbenchError
from workbench.cli_common import ModelOpt, load_model_quietly
from workbench.options import check_int, check_number, printable

from ._gateset import GateSet, gate_intervention

SUPPRESS_ALPHA = -1.0
AMPLIFY_ALPHA = 2.0


def resolve_cli_alpha(suppress: bool, amplify: bool, alpha: float | None) -> float:
    """--suppress is alpha -1, --amplify alpha 2 (unless --alpha is given with it); exactly one is needed."""
    if suppress and amplify:
        raise WorkbenchError("give either --suppress or --amplify, not both")
    if alpha is not None:
        check_number(alpha, "--alpha")  # NaN or infinity would turn every gated answer into garbage
    if suppress:
        if alpha is not None and alpha > 0:
            raise WorkbenchError(f"--suppress needs a negative --alpha, got {alpha}")
        return SUPPRESS_ALPHA if alpha is None else float(alpha)
    if amplify:
        if alpha is not None and alpha <= 1:
            raise WorkbenchError(f"--amplify needs --alpha above 1, got {alpha}")
        return AMPLIFY_ALPHA if alpha is None else float(alpha)
    if alpha is None:
        raise WorkbenchError("choose what to do with the gates: --suppress, --amplify or --alpha A")
    return float(alpha)


def alpha_for_layers(alpha: float, layers: list[int] | None, gates: GateSet) -> float | dict[int, float]:
    """``alpha`` at the chosen gated layers only (the others off), or at every gated layer."""
    if not layers:
        return alpha
    bad = [l for l in layers if l not in gates.layers]
    if bad:
        raise WorkbenchError(f"--layers {bad}: these layers have no gates (gated layers: {gates.layers})")
    return {int(l): alpha for l in layers}


def _side_by_side(columns: list[tuple[str, str]], width: int | None = None) -> str:
    """``(title, answer)`` columns next to each other, each answer wrapped to ``width`` characters."""
    width = width or (56 if len(columns) <= 2 else 38)
    wrapped = [textwrap.wrap(text.strip() or "(empty)", width) or [""] for _, text in columns]
    n = max(len(w) for w in wrapped)
    lines = [
        " | ".join(f"{t:<{width}}" for t, _ in columns).rstrip(),
        "-+-".join("-" * width for _ in columns),
    ]
    for i in range(n):
        lines.append(" | ".join(f"{w[i] if i < len(w) else '':<{width}}" for w in wrapped).rstrip())
    return "\n".join(lines)


def gated_label(alpha: float, layers: list[int] | None) -> str:
    """``suppressed (alpha=-1, layers 0,2)``, ``amplified (alpha=2)``, ``gated (alpha=0.5)``, ..."""
    word = (
        "suppressed" if alpha < 0 else "amplified" if alpha > 1 else "gates off" if alpha == 0
        else "as trained" if alpha == 1 else "gated"
    )  # fmt: skip
    return f"{word} (alpha={alpha:g}{', layers ' + ','.join(map(str, layers)) if layers else ''})"


def gate(
    gates: Annotated[
        Path,
        typer.Option(
            "--gates",
            "-g",
            help="Trained gates: gates.safetensors, or an alignment-gating reference gating_params.pth.",
        ),
    ],
    model: ModelOpt = DEFAULT_MODEL,
    adapter: Annotated[Path | None, typer.Option(help="A PEFT adapter folder to apply first.")] = None,
    suppress: Annotated[
        bool, typer.Option("--suppress", help="Suppress the gates: alpha = -1 (2 - g).")
    ] = False,
    amplify: Annotated[bool, typer.Option("--amplify", help="Amplify the gates: alpha = 2.")] = False,
    alpha: Annotated[
        float | None, typer.Option(help="Gate coefficient: 1 trained, 0 off, -1 suppress, >1 amplify.")
    ] = None,
    layers: Annotated[
        list[int] | None, typer.Option("--layers", "-l", help="Apply at these layers only (repeatable).")
    ] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", "-p", help="A chat prompt to answer.")] = None,
    eval_questions: Annotated[
        list[str] | None,
        typer.Option(
            "--eval",
            help="Evaluate with the gates applied: questions YAML, JSONL set or shipped dataset name (repeatable).",
        ),
    ] = None,
    judge: Annotated[
        str, typer.Option("--judge", "-j", help="Judge for --eval: rules, none, hf:..., openai:...")
    ] = "rules",
    samples: Annotated[
        int | None, typer.Option(help="Answers per paraphrase for free-form --eval sets.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default runs/gate-<time>).")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 80,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
) -> None:
    """Apply trained gates at inference: gates off, as trained and gated answers side by side, or an evaluation."""
    from workbench import runs
    from workbench.evaluation import load_eval_sets
    from workbench.generation import generate
    from workbench.io import atomic_write_json
    from workbench.runs import prepare_run_dir, write_config

    a = resolve_cli_alpha(suppress, amplify, alpha)
    check_int(max_new_tokens, "--max-new-tokens")
    if samples is not None:
        check_int(samples, "--samples")
    if prompt is None and not eval_questions:
        raise WorkbenchError("nothing to do: give --prompt TEXT and/or --eval SET")
    if not Path(gates).exists():
        raise WorkbenchError(f"gates file '{gates}' does not exist")
    sets = load_eval_sets(mixed=eval_questions or [], mixed_flag="--eval")
    run_dir = prepare_run_dir(
        out, "gate", overwrite=overwrite, inputs=[gates, model, adapter, eval_questions]
    )
    write_config(
        run_dir,
        {
            "command": "gate",
            "gates": str(gates),
            "model": model,
            "adapter": str(adapter) if adapter else None,
            "alpha": a,
            "layers": layers,
            "prompt": prompt,
            "eval": eval_questions,
            "judge": judge,
            "samples": samples,
            "max_new_tokens": max_new_tokens,
        },
    )
    lm = load_model_quietly(model)
    if adapter is not None:
        from workbench.adapters import apply_adapter

        apply_adapter(lm, adapter)
    gs = GateSet.load(gates, lm)
    spec = alpha_for_layers(a, layers, gs)
    label = gated_label(a, layers)
    if prompt is not None:
        # the model the gates were trained with, gates off (alpha 0); as trained (alpha 1); the chosen alpha
        off_label = "fine-tuned, gates off" if adapter is not None else "gates off"
        trained_label = "as trained (alpha=1)"
        gates_off = generate(lm, [prompt], max_new_tokens=max_new_tokens)[0]
        with gs.attached(lm, alpha=1.0):
            as_trained = generate(lm, [prompt], max_new_tokens=max_new_tokens)[0]
        if a == 1.0 and not layers:
            gated_answer = as_trained
        else:
            with gs.attached(lm, alpha=spec):
                gated_answer = generate(lm, [prompt], max_new_tokens=max_new_tokens)[0]
        columns = [(off_label, gates_off), (trained_label, as_trained)]
        if a != 1.0 or layers:
            columns.append((label, gated_answer))
        # model output and prompts may hold terminal escape sequences: print them escaped
        typer.echo(f"prompt: {printable(prompt)}\n")
        typer.echo(_side_by_side([(title, printable(text)) for title, text in columns]))
        atomic_write_json(
            run_dir / runs.ANSWERS_JSON,
            {
                "prompt": prompt,
                "alpha": a,
                "layers": layers,
                "gates_off": gates_off,  # older runs stored this answer as "base"
                "as_trained": as_trained,
                "gated": gated_answer,
                "labels": {"gates_off": off_label, "as_trained": trained_label, "gated": label},
            },
        )
    if sets:
        from workbench.evaluation import EvalConfig, Evaluator, evaluate_sets

        cfg = EvalConfig(samples=samples, judge=judge, max_new_tokens=max_new_tokens)
        ev = Evaluator(lm, run_dir, cfg, intervention=gate_intervention(lm, gs, spec))
        head = {"gates": str(gates), "alpha": a, "layers": layers, "judge": judge}
        evaluate_sets(ev, sets, run_dir, head, note=f" with gates at alpha {a:g}", echo=typer.echo)
    typer.echo(f"run directory: {run_dir}")
