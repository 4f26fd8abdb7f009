"""CLI commands of the probes package (registered by ``workbench/cli.py``): extract-vector and screen."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

DEFAULT_N_INSTRUCTIONS = 2
"""Instruction pairs used by default on the command line (all five cost 2.5x the time on a CPU)."""


def _load(spec: str):
    from transformers.utils import logging as hf_logging

    from workbench import load_model

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    return load_model(spec)


def rows_path(out: Path) -> Path:
    """Where ``extract-vector`` writes its per-answer rows: ``<out stem>_rows.jsonl`` next to ``out``."""
    return out.with_name(f"{out.stem}_rows.jsonl")


def judge_cache_dir(out: Path) -> Path:
    """Where ``extract-vector`` caches judgments, so a rerun only judges new answers."""
    return out.with_name(f"{out.stem}_judge_cache")


def _check_extract_numbers(
    n_per_question, threshold, n_instructions, n_questions, max_new_tokens, temperature, batch_size
) -> None:
    """The numeric flags of ``extract-vector``, before any work (one line naming the flag and its range)."""
    from workbench._options import check_int, check_number

    check_int(n_per_question, "--n-per-question")
    check_number(threshold, "--threshold", minimum=0, maximum=100)
    check_int(n_instructions, "--n-instructions", minimum=0, note=" (0 = all)")
    check_int(n_questions, "--n-questions", minimum=0, note=" (0 = all)")  # -1 used to drop the last one
    check_int(max_new_tokens, "--max-new-tokens")
    check_number(temperature, "--temperature", minimum=0, note=" (0 = greedy)")
    check_int(batch_size, "--batch-size")


def extract_vector(
    trait: Annotated[
        str,
        typer.Option(
            "--trait", "-t", help="Shipped trait name (evil, sycophantic, hallucinating) or a JSON file."
        ),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output .safetensors file; rows go to <stem>_rows.jsonl beside it."),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Model spec: smollm2-135m (default), a folder, a hub id, random:<shape>."
        ),
    ] = "smollm2-135m",
    judge: Annotated[
        str,
        typer.Option("--judge", "-j", help="Judge spec: none (keep every pair), hf:<model>, openai:<model>."),
    ] = "none",
    n_per_question: Annotated[
        int, typer.Option("--n-per-question", help="Answers per question and instruction, for each polarity.")
    ] = 2,
    threshold: Annotated[
        float,
        typer.Option(help="Keep a pair when trait(pos) >= T, trait(neg) < 100 - T and both coherence >= 50."),
    ] = 50.0,
    n_instructions: Annotated[
        int,
        typer.Option(
            "--n-instructions", help="Use the first N (pos, neg) instruction pairs; 0 = all of them."
        ),
    ] = DEFAULT_N_INSTRUCTIONS,
    n_questions: Annotated[
        int, typer.Option("--n-questions", help="Use the first N extraction questions; 0 = all of them.")
    ] = 0,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens generated per answer.")] = 64,
    temperature: Annotated[float, typer.Option(help="Sampling temperature for the answers.")] = 1.0,
    batch_size: Annotated[int, typer.Option(help="Prompts per generation / forward batch.")] = 16,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace --out and its rows file if they exist (never an input file).")
    ] = False,
) -> None:
    """Extract a persona vector from a trait's contrastive system prompts (all three statistics, one file)."""
    from workbench.runs import check_output_files

    from . import extract_from_trait

    _check_extract_numbers(
        n_per_question, threshold, n_instructions, n_questions, max_new_tokens, temperature, batch_size
    )
    # before any work: existing outputs need --overwrite, and an input (the trait file, a file of the model
    # folder) is never replaced
    check_output_files([out, rows_path(Path(out))], overwrite=overwrite, inputs=[trait, model])
    start = time.perf_counter()
    lm = _load(model)
    judge_obj: object = judge
    if judge.strip() != "none":
        from workbench.judges import make_judge

        judge_obj = make_judge(judge, cache_dir=judge_cache_dir(Path(out)))
    result = extract_from_trait(
        lm,
        trait,
        judge=judge_obj,
        n_per_question=n_per_question,
        n_questions=n_questions or None,
        n_instructions=n_instructions or None,
        threshold=threshold,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        progress=True,
    )
    path = result.save(out)
    rows = result.write_rows(rows_path(Path(out)))
    v = result.vectors["response_avg"]
    norms = v.norms()
    top = int(norms.argmax())
    typer.echo(result.note)
    typer.echo(
        f"wrote {path}: {', '.join(result.vectors)} vectors of shape {list(v.vectors.shape)} "
        f"(trait {v.trait}, {v.metadata['n_positive']} positive / {v.metadata['n_negative']} negative answers)"
    )
    typer.echo(f"response_avg norm: largest at layer {top} ({float(norms[top]):.3f}), middle layer "
               f"{lm.n_layers // 2} ({float(norms[lm.n_layers // 2]):.3f})")  # fmt: skip
    typer.echo(f"wrote {rows} ({len(result.rows)} answers)")
    if result.filtered:
        typer.echo(f"judgments cached in {judge_cache_dir(Path(out))}")
    typer.echo(f"took {time.perf_counter() - start:.0f} s")


def screen(
    vector: Annotated[Path, typer.Option("--vector", help="A persona_vector .safetensors file.")],
    layer: Annotated[int, typer.Option("--layer", "-l", help="Layer whose resid_post is projected.")],
    data: Annotated[Path, typer.Option("--data", "-d", help="Chat JSONL training data to screen.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Run directory (default: runs/screen-<time>).")
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model", "-m", help="Model spec: smollm2-135m (default), a folder, a hub id, random:<shape>."
        ),
    ] = "smollm2-135m",
    threshold: Annotated[
        float | None, typer.Option(help="Flag examples above this difference (default: mean + 2 std).")
    ] = None,
    statistic: Annotated[
        str, typer.Option(help="Which vector in the file: response_avg, prompt_avg or prompt_last.")
    ] = "response_avg",
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = 16,
    max_new_tokens: Annotated[
        int, typer.Option(help="Tokens of the base model's own (greedy) answers.")
    ] = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty run directory.")] = False,
) -> None:
    """Projection-difference screening: which training examples push the model along the vector."""
    from workbench._options import check_int, check_number
    from workbench.data import load_chat_jsonl
    from workbench.runs import check_run_dir, prepare_run_dir, write_config

    from . import PersonaVector, screen_dataset
    from ._screen import write_screen_report

    check_int(batch_size, "--batch-size")
    check_int(max_new_tokens, "--max-new-tokens")
    if threshold is not None:
        check_number(threshold, "--threshold")
    if out is not None:  # refused at once, not after loading the model
        check_run_dir(out, overwrite=overwrite, inputs=[vector, data, model])
    rows = load_chat_jsonl(data, prompts_only=False)
    lm = _load(model)
    vec = PersonaVector.load(vector, statistic=statistic, fingerprint=lm.fingerprint)
    vec.layer(layer)  # a clear error before any work
    run = prepare_run_dir(out, "screen", overwrite=overwrite, inputs=[vector, data, model])
    write_config(
        run,
        {
            "command": "screen",
            "model": model,
            "vector": str(vector),
            "statistic": statistic,
            "layer": layer,
            "data": str(data),
            "threshold": threshold,
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
        },
    )
    result = screen_dataset(
        lm,
        vec,
        layer,
        rows,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        threshold=threshold,
        progress=True,
    )
    write_screen_report(result, run)
    s = result.summary()
    typer.echo(
        f"screened {s['n_examples']} examples at layer {layer}: dataset score {s['dataset_score']:+.3f} "
        f"(std {s['std']:.3f}); flagged {s['n_flagged']} above {s['threshold']:.3f} ({s['threshold_rule']})"
    )
    for r in [r for r in result.ranked if r["diff"] is not None][:3]:
        typer.echo(f"  #{r['rank']} row {r['index']}: diff {r['diff']:+.3f}  {r['prompt'][:70]!r}")
    typer.echo(f"wrote {run} (ranked.jsonl, flags.jsonl, summary.json, histogram.html)")
