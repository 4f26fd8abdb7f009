"""Command-line functions for ``workbench steer`` and ``workbench sweep`` (registered by workbench/cli.py).

Both are plain typer-compatible functions: ``app.command("steer")(steer)``,
``app.command("sweep")(sweep_cmd)``.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Annotated

import typer

from workbench import DEFAULT_MODEL, WorkbenchError
from workbench.cli_common import CompileOpt, ModelOpt, SeedOpt, load_model_quietly, number_list
from workbench.options import printable

from ._load import load_vector

MIN_WIDTH = 20
"""The narrowest ``steer --width``: the answers are stacked below 63 columns and wrapped to the width."""

VectorOpt = Annotated[
    Path,
    typer.Option(
        "--vector", help="Persona-vector file (.safetensors, persona_vectors .pt or GGUF control vector)."
    ),
]
StatisticOpt = Annotated[
    str,
    typer.Option(
        help="Which statistic of the vector file: response_avg, prompt_avg, prompt_last or response_last."
    ),
]
PositionsOpt = Annotated[str, typer.Option(help="Steer all tokens, only the prompt, or only the response.")]
ModeOpt = Annotated[str, typer.Option(help="add, ablate or ablate_add.")]
NormalizeOpt = Annotated[
    bool, typer.Option(help="Scale the vector to unit norm per layer (alpha becomes a residual length).")
]


def _block(title: str, text: str, width: int) -> list[str]:
    lines = [f"== {title} " + "=" * max(0, width - len(title) - 4)]
    for para in (text or "(empty answer)").splitlines() or [""]:
        lines.extend(textwrap.wrap(para, width) or [""])
    return lines


def side_by_side(left_title: str, left: str, right_title: str, right: str, width: int = 100) -> str:
    """Two answers in two columns when ``width`` allows, else as two labelled blocks."""
    col = (width - 3) // 2
    if col < 30:
        return "\n".join(_block(left_title, left, width) + [""] + _block(right_title, right, width))
    a, b = _block(left_title, left, col), _block(right_title, right, col)
    n = max(len(a), len(b))
    a += [""] * (n - len(a))
    b += [""] * (n - len(b))
    return "\n".join(f"{x:<{col}} | {y}" for x, y in zip(a, b, strict=True))


def steer(
    vector: VectorOpt,
    layer: Annotated[int, typer.Option("--layer", "-l", help="Layer whose hook_resid_post is steered.")],
    alpha: Annotated[
        float, typer.Option("--alpha", "-a", help="Steering coefficient (negative suppresses).")
    ],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="User prompt, chat-formatted.")],
    model: ModelOpt = DEFAULT_MODEL,
    positions: PositionsOpt = "all",
    statistic: StatisticOpt = "response_avg",
    mode: ModeOpt = "add",
    normalize: NormalizeOpt = False,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 80,
    system: Annotated[str | None, typer.Option(help="Optional system prompt.")] = None,
    width: Annotated[int, typer.Option(help="Output width, >= 20; below 63 the answers are stacked.")] = 100,
) -> None:
    """Answer one prompt with and without steering (greedy) and show both answers side by side."""
    from workbench.generation import generate
    from workbench.options import check_int, check_number

    from ._steerer import Steerer

    check_number(alpha, "--alpha")
    check_int(max_new_tokens, "--max-new-tokens")
    check_int(width, "--width", minimum=MIN_WIDTH)
    lm = load_model_quietly(model)
    vec = load_vector(vector, statistic, lm)
    steerer = Steerer(lm, vec, [layer], alpha, positions=positions, mode=mode, normalize=normalize)
    base = generate(lm, [prompt], max_new_tokens=max_new_tokens, system=system)[0]
    with steerer:
        steered = generate(lm, [prompt], max_new_tokens=max_new_tokens, system=system)[0]
    trait = getattr(vec, "trait", "vector")
    title = f"steered: {trait} layer {layer} alpha {alpha:g} ({mode}, {positions})"
    # model output and prompts may hold terminal escape sequences: print them escaped
    typer.echo(f"prompt: {printable(prompt)}")
    typer.echo(side_by_side("base", printable(base), printable(title), printable(steered), width))


def _check_sweep_numbers(alphas, samples, max_new_tokens, n_questions, tolerance, batch_size) -> None:
    """The numeric flags of ``sweep``, before the run directory is made (one line naming the flag)."""
    from workbench.options import check_finite, check_int, check_number

    check_finite(alphas or [], "--alphas")
    check_int(samples, "--samples")
    check_int(max_new_tokens, "--max-new-tokens")
    if n_questions is not None:  # -1 used to drop the last question
        check_int(n_questions, "--n-questions")
    if tolerance is not None:
        check_number(tolerance, "--coherence-tolerance", minimum=0)
    if batch_size is not None:  # 0 used to mean "all", -1 crashed
        check_int(batch_size, "--batch-size")


def sweep_cmd(
    vector: VectorOpt,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Run directory for sweep.csv, sweep.html, summary.json.")
    ],
    model: ModelOpt = DEFAULT_MODEL,
    layers: Annotated[
        list[str] | None,
        typer.Option(
            "--layers", help="Layers to sweep (repeatable or comma-separated; default: 5 mid layers)."
        ),
    ] = None,
    alphas: Annotated[
        list[str] | None,
        typer.Option("--alphas", help="Coefficients (repeatable or comma-separated; default 0,2,4,8)."),
    ] = None,
    judge: Annotated[
        str, typer.Option("--judge", "-j", help="hf:<model spec>, openai:<model> or none (judge-free).")
    ] = "none",
    trait: Annotated[
        str | None, typer.Option(help="Trait name or JSON file (default: the vector's trait).")
    ] = None,
    samples: Annotated[int, typer.Option(help="Answers per question (greedy when 1).")] = 1,
    max_new_tokens: Annotated[int, typer.Option(help="Answer length limit.")] = 48,
    statistic: StatisticOpt = "response_avg",
    positions: PositionsOpt = "all",
    mode: ModeOpt = "add",
    normalize: NormalizeOpt = False,
    pairs: Annotated[
        str | None,
        typer.Option(help="Contrastive pairs JSONL (or 'contrastive_pairs') for the log-prob margin."),
    ] = None,
    n_questions: Annotated[int | None, typer.Option(help="Use only the first N questions (N >= 1).")] = None,
    coherence_tolerance: Annotated[
        float | None,
        typer.Option(
            help="How far coherence may fall below the baseline for a cell to count in the recommendation "
            "(default: 10 judge points, or 0.5 nats/token without a judge)."
        ),
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option(help="Prompts per generate call, >= 1 (default: all).")
    ] = None,
    seed: SeedOpt = 0,
    batch_alphas: Annotated[
        bool, typer.Option(help="All coefficients of a layer in one generate call (one alpha per row).")
    ] = True,
    compile: CompileOpt = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
) -> None:
    """Steering effect per layer and coefficient: trait expression and coherence, with plots."""
    from workbench.runs import prepare_run_dir, write_config

    from ._sweep import _resolve_trait, sweep

    layer_list = number_list(layers, int, "--layers")
    alpha_list = number_list(alphas, float, "--alphas")
    _check_sweep_numbers(alpha_list, samples, max_new_tokens, n_questions, coherence_tolerance, batch_size)
    run_dir = prepare_run_dir(out, "sweep", overwrite=overwrite, inputs=[vector, model, trait, pairs])
    lm = load_model_quietly(model)
    vec = load_vector(vector, statistic, lm)
    tr = _resolve_trait(trait, vec)
    questions = None
    if n_questions is not None:
        if tr is None:
            raise WorkbenchError("--n-questions needs a trait (pass --trait)")
        questions = list(tr.eval_questions)[:n_questions]
    ref_pairs = None
    if pairs:
        from workbench.data import DATASETS, load_pairs, make_dataset

        ref_pairs = (
            make_dataset(pairs) if pairs in DATASETS and not Path(pairs).exists() else load_pairs(pairs)
        )
    write_config(
        run_dir,
        {
            "command": "sweep",
            "model": model,
            "vector": str(vector),
            "statistic": statistic,
            "layers": layer_list,
            "alphas": alpha_list,
            "judge": judge,
            "trait": trait,
            "samples": samples,
            "max_new_tokens": max_new_tokens,
            "positions": positions,
            "mode": mode,
            "normalize": normalize,
            "pairs": pairs,
            "n_questions": n_questions,
            "coherence_tolerance": coherence_tolerance,
            "batch_size": batch_size,
            "seed": seed,
            "batch_alphas": batch_alphas,
            "compile": compile,
        },
    )
    result = sweep(
        lm,
        vec,
        layer_list,
        alpha_list,
        questions,
        judge=judge,
        trait=tr,
        max_new_tokens=max_new_tokens,
        samples=samples,
        batch_size=batch_size,
        seed=seed,
        pairs=ref_pairs,
        positions=positions,
        mode=mode,
        normalize=normalize,
        coherence_tolerance=coherence_tolerance,
        out=run_dir,
        progress=True,
        batch_alphas=batch_alphas,
        compile=compile,
    )
    typer.echo(
        f"{'layer':>5} {'alpha':>6} {'trait':>10} {'coherence':>10}" + ("  margin" if ref_pairs else "")
    )
    for r in result.rows:
        t = "-" if r["trait"] is None else f"{r['trait']:.3f}"
        c = "-" if r["coherence"] is None else f"{r['coherence']:.3f}"
        m = f"  {r['margin']:.3f}" if ref_pairs and r["margin"] is not None else ""
        typer.echo(f"{r['layer']:>5} {r['alpha']:>6g} {t:>10} {c:>10}{m}")
    typer.echo(f"recommended layer: {result.recommended_layer} ({result.rule})")
    typer.echo(f"run directory: {run_dir}")
