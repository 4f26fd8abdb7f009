"""CLI commands of the probes package (registered by ``workbench/cli.py``): extract-vector and screen."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from workbench import DEFAULT_MODEL
from workbench.cli_common import (
    CheckModelOpt,
    FileOverwriteOpt,
    ModelOpt,
    SeedOpt,
    load_model_quietly,
    number_list,
)

DEFAULT_N_INSTRUCTIONS = 2
"""Instruction pairs used by default on the command line (all five cost 2.5x the time on a CPU)."""


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
    from workbench.options import check_int, check_number

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
    model: ModelOpt = DEFAULT_MODEL,
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
    seed: SeedOpt = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace --out and its rows file if they exist (never an input file).")
    ] = False,
    method: Annotated[
        str,
        typer.Option(
            help="Direction per layer: mean_diff, pca, pca_centered (repeng's pca_diff) or logistic."
        ),
    ] = "mean_diff",
    convention: Annotated[
        str,
        typer.Option(
            help="Sign and length of pca / pca_centered: workbench (mean difference) or repeng (unit)."
        ),
    ] = "workbench",
) -> None:
    """Extract a persona vector from a trait's contrastive system prompts (every statistic, one file)."""
    from workbench.runs import check_output_files

    from . import extract_from_trait
    from ._extract import _check_method

    _check_extract_numbers(
        n_per_question, threshold, n_instructions, n_questions, max_new_tokens, temperature, batch_size
    )
    _check_method(method, convention)
    # before any work: existing outputs need --overwrite, and an input (the trait file, a file of the model
    # folder) is never replaced
    check_output_files([out, rows_path(Path(out))], overwrite=overwrite, inputs=[trait, model])
    start = time.perf_counter()
    lm = load_model_quietly(model)
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
        method=method,
        convention=convention,
    )
    path = result.save(out)
    rows = result.write_rows(rows_path(Path(out)))
    v = result.vectors["response_avg"]
    norms = v.norms()
    top = int(norms.argmax())
    typer.echo(result.note)
    typer.echo(
        f"wrote {path}: {', '.join(result.vectors)} vectors of shape {list(v.vectors.shape)} "
        f"(trait {v.trait}, method {method}, {v.metadata['n_positive']} positive / "
        f"{v.metadata['n_negative']} negative answers)"
    )
    if convention == "repeng":
        typer.echo("unit vector per layer, signed by repeng's vote over pairs (convention repeng)")
    else:
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
    model: ModelOpt = DEFAULT_MODEL,
    threshold: Annotated[
        float | None, typer.Option(help="Flag examples above this difference (default: mean + 2 std).")
    ] = None,
    statistic: Annotated[
        str,
        typer.Option(
            help="Which vector in the file: response_avg, prompt_avg, prompt_last or response_last."
        ),
    ] = "response_avg",
    batch_size: Annotated[int, typer.Option(help="Examples per batch.")] = 16,
    max_new_tokens: Annotated[
        int, typer.Option(help="Tokens of the base model's own (greedy) answers.")
    ] = 64,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing non-empty run directory.")] = False,
) -> None:
    """Projection-difference screening: which training examples push the model along the vector."""
    from workbench.data import load_chat_jsonl
    from workbench.options import check_int, check_number
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
    lm = load_model_quietly(model)
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


# -- workbench vector import / export (persona_vectors .pt, llama.cpp GGUF control vectors) --------------

vector_app = typer.Typer(
    help="Convert persona vectors: import .pt / GGUF control vectors, export GGUF for llama.cpp.",
    no_args_is_help=True,
)


def _blocks_text(blocks: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``"1..3, 7"``."""
    parts: list[tuple[int, int]] = []
    for b in sorted(blocks):
        if parts and parts[-1][1] == b - 1:
            parts[-1] = (parts[-1][0], b)
        else:
            parts.append((b, b))
    return ", ".join(str(a) if a == z else f"{a}..{z}" for a, z in parts)


@vector_app.command("export")
def vector_export(
    vector: Annotated[Path, typer.Argument(help="A persona_vector .safetensors file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="GGUF control vector to write (.gguf).")],
    statistic: Annotated[
        str,
        typer.Option(
            help="Which vector in the file: response_avg, prompt_avg, prompt_last or response_last."
        ),
    ] = "response_avg",
    layers: Annotated[
        list[str] | None,
        typer.Option(
            "--layers", help="Blocks to export (repeatable or comma-separated; default: all but block 0)."
        ),
    ] = None,
    scale: Annotated[float, typer.Option(help="Multiply every direction by this.")] = 1.0,
    overwrite: FileOverwriteOpt = False,
) -> None:
    """Write a llama.cpp control vector: block l becomes direction.l (block 0 cannot be steered there)."""
    from workbench.runs import check_output_files

    from . import PersonaVector, export_gguf

    chosen = number_list(layers, int, "--layers", "a whole number")
    check_output_files([out], overwrite=overwrite, inputs=[vector])
    vec = PersonaVector.load(vector, statistic=statistic)
    path = export_gguf(vec, out, scale=scale, layers=chosen)
    written = chosen if chosen is not None else list(range(1, vec.n_layers))
    typer.echo(
        f"wrote {path}: {len(written)} directions for blocks {_blocks_text(written)} of '{vec.trait}' "
        f"{vec.statistic} [{vec.n_layers}, {vec.d_model}] (direction.N = output of block N, as llama.cpp "
        "reads it)"
    )
    if chosen is None and vec.n_layers > 1:
        typer.echo("block 0 left out: llama.cpp cannot steer the output of block 0")


@vector_app.command("import")
def vector_import(
    source: Annotated[
        Path, typer.Argument(help="A llama.cpp control vector (.gguf) or a persona_vectors .pt tensor file.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="persona_vector .safetensors file to write.")],
    model: CheckModelOpt = None,
    trait: Annotated[
        str | None, typer.Option(help="Trait name (default: the file's, else 'imported').")
    ] = None,
    statistic: Annotated[
        str | None,
        typer.Option(help="Statistic to record (default: the file's, else response_avg)."),
    ] = None,
    old_workbench_numbering: Annotated[
        bool,
        typer.Option(
            help="The GGUF was exported by a workbench version before the numbering fix "
            "(direction.N was block N-1)."
        ),
    ] = False,
    overwrite: FileOverwriteOpt = False,
) -> None:
    """Import a GGUF control vector (direction.N = block N) or a .pt file (row l+1 = block l)."""
    from workbench import WorkbenchError
    from workbench.runs import check_output_files

    from . import PersonaVector, import_gguf, import_pt, is_gguf_file, save_vectors
    from ._vector import STATISTICS, _check_statistic

    if statistic is not None:
        _check_statistic(statistic)
    check_output_files([out], overwrite=overwrite, inputs=[source, model])
    if not source.is_file():
        raise WorkbenchError(f"vector file '{source}' does not exist")
    is_gguf = is_gguf_file(source)
    if not is_gguf and source.suffix not in (".pt", ".pth"):
        raise WorkbenchError(
            f"'{source}' is neither a GGUF file nor a .pt/.pth tensor file; accepted: .gguf, .pt, .pth"
        )
    if old_workbench_numbering and not is_gguf:
        raise WorkbenchError("--old-workbench-numbering applies to GGUF control vectors only")
    fp = load_model_quietly(model).fingerprint if model is not None else None
    if is_gguf:
        vec = import_gguf(
            source, fp, trait=trait, statistic=statistic, from_old_workbench=old_workbench_numbering
        )
        path = vec.save(out)
        present = vec.metadata["blocks_present"]
        typer.echo(
            f"read {source}: directions for blocks {_blocks_text(present)} (model hint "
            f"{vec.metadata['model_hint']}; numbering: {vec.metadata['direction_index']})"
        )
        missing = [b for b in range(vec.n_layers) if b not in present]
        if missing:
            typer.echo(f"blocks without a direction (zero rows): {_blocks_text(missing)}")
        vectors: dict[str, PersonaVector] = {vec.statistic: vec}
    else:
        got = import_pt(source, fp, trait=trait or "imported", statistic=statistic or "response_avg")
        if isinstance(got, PersonaVector):
            vectors = {got.statistic: got}
        else:
            odd = [k for k in got if k not in STATISTICS]
            if odd:
                raise WorkbenchError(
                    f"'{source}' holds tensors under {odd}; a file of several vectors needs statistic names "
                    f"as keys ({', '.join(STATISTICS)})"
                )
            vectors = got
        path = save_vectors(out, vectors)
        typer.echo(f"read {source}: row l+1 = block l (row 0, the embeddings, dropped)")
    first = next(iter(vectors.values()))
    model_text = first.fingerprint.short() if first.fingerprint else "no model fingerprint"
    typer.echo(
        f"wrote {path}: {', '.join(vectors)} [{first.n_layers}, {first.d_model}] trait '{first.trait}' "
        f"({model_text})"
    )
