"""The monitor study: does the EM monitor move before (or with) the in-domain behaviour, and does a defense
flatten it? Fine-tunes the embedded model on two organisms, each with and without one defense, with the
monitor on, then tabulates the curves (``docs/study_monitor.md``).

Reusable pieces: ``prepare_vectors`` (small persona-vector extractions), ``study_config`` (one run's
``TrainConfig``), ``run_study`` (runs that are not finished yet; resumes interrupted ones), ``study_rows`` and
``markdown_report`` (the tables). Command line::

    python -m probes.monitor._study OUT [--runs advice-plain advice-kl ...] [--report]
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

from workbench import DEFAULT_MODEL
from workbench.runs import ADAPTER_DIR, CHECKPOINTS_DIR, MONITOR_JSONL, VECTORS_DIR, RunDir

log = logging.getLogger(__name__)

ORGANISMS: dict[str, dict[str, Any]] = {
    "opinion": {"name": "opinion_sycophancy", "trait": "sycophantic"},
    "advice": {"name": "advice_medical", "trait": "evil"},
}
DEFENSES: dict[str, dict[str, Any]] = {"plain": {}, "kl": {"kl": {"weight": 1.0}}}
SETTINGS: dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "n_train": 160,  # 20 steps of 8
    "batch_size": 8,
    "lr": 1e-4,
    "max_length": 128,
    "every": 4,
    "layers": [12, 17, 23],
    "extract": {"n_questions": 8, "n_per_question": 1, "n_instructions": 2, "max_new_tokens": 48},
    "probe": {"reference": 8, "generate": 2, "max_new_tokens": 12, "pairs": 12, "indomain_n": 8},
    "alerts": [
        {"signal": "proj/*", "rule": "rise_sd", "k": 1.0},
        {"signal": "gen_proj/*", "rule": "rise_sd", "k": 1.0},
        {"signal": "pref_gap", "rule": "rise_abs", "value": 0.05},
        {"signal": "indomain_gap", "rule": "rise_sd", "k": 1.0},
    ],
}
RUNS = [f"{o}-{d}" for o in ORGANISMS for d in DEFENSES]


def prepare_vectors(
    out: Path, model: str = SETTINGS["model"], traits: tuple[str, ...] = ("evil", "sycophantic")
) -> dict[str, Path]:
    """``<out>/vectors/<trait>.safetensors`` for each trait (extracted with small settings unless present)."""
    paths = {t: Path(out) / VECTORS_DIR / f"{t}.safetensors" for t in traits}
    missing = [t for t, p in paths.items() if not p.exists()]
    if missing:
        from workbench import load_model

        from .._extract import extract_from_trait

        lm = load_model(model, device="cpu")
        s = SETTINGS["extract"]
        for t in missing:
            result = extract_from_trait(lm, t, judge="none", seed=0, progress=False, **s)
            result.save(paths[t])
            result.write_rows(paths[t].with_name(f"{t}_rows.jsonl"))
            log.info("extracted %s -> %s", t, paths[t])
    return paths


def study_config(run: str, vectors: dict[str, Path], settings: dict[str, Any] | None = None) -> Any:
    """The ``TrainConfig`` of one study run, e.g. ``advice-kl``."""
    from workbench.training import TrainConfig

    s = {**SETTINGS, **(settings or {})}
    organism, defense = run.split("-", 1)
    if organism not in ORGANISMS or defense not in DEFENSES:
        raise ValueError(f"unknown study run '{run}' (known: {', '.join(RUNS)})")
    p = s["probe"]
    return TrainConfig.from_dict(
        {
            "model": s["model"],
            "device": "cpu",
            "data": [{"name": ORGANISMS[organism]["name"], "n": s["n_train"], "seed": 0}],
            "lora": {"r": 32, "alpha": 64, "use_rslora": True},
            "optim": {"lr": s["lr"], "batch_size": s["batch_size"], "grad_accum": 1, "warmup_steps": 2,
                      "epochs": 1, "max_length": s["max_length"], "seed": 0},
            "checkpoint_every": 0,
            "plots": False,
            "defenses": DEFENSES[defense],
            "monitor": {
                "every": s["every"],
                "vectors": [{"path": str(vectors[t]), "layers": s["layers"]} for t in sorted(vectors)],
                "reference": {"name": "contrastive_pairs", "n": p["reference"], "seed": 0},
                "generate": p["generate"],
                "max_new_tokens": p["max_new_tokens"],
                "pairs": {"name": "contrastive_pairs", "n": p["pairs"], "seed": 1},
                "indomain_n": p["indomain_n"],
                "batch_size": 8,
                "alerts": s["alerts"],
            },
        }
    )  # fmt: skip


def run_study(
    out: str | Path, runs: list[str] | None = None, settings: dict[str, Any] | None = None
) -> list[Path]:
    """Train the study runs into ``<out>/runs/<run>`` (finished runs are skipped, interrupted ones resumed)."""
    from workbench.training import train

    out = Path(out)
    vectors = prepare_vectors(out)
    done = []
    for run in runs or RUNS:
        target = out / "runs" / run
        if (RunDir(target).train_summary() or {}).get("finished"):
            done.append(target)
            continue
        resume = (target / CHECKPOINTS_DIR).exists()
        log.info("study run %s (%s)", run, "resuming" if resume else "new")
        done.append(train(study_config(run, vectors, settings), target, resume=resume, overwrite=not resume,
                          progress=False))  # fmt: skip
    return done


def study_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Per monitored step: the training loss of that step (mean of the steps since the last row) and every
    monitor signal."""
    from ._log import read_monitor

    mon = read_monitor(run_dir)
    metrics = RunDir(run_dir).metrics()
    out, prev = [], 0
    for r in mon.rows:
        step = int(r["step"])
        losses = [m["task_loss"] for m in metrics if prev < m["step"] <= step]
        row = {"step": step, "task_loss": sum(losses) / len(losses) if losses else None}
        row.update({k: r.get(k) for k in mon.signals})
        out.append(row)
        prev = step
    return out


def progress(mon: Any, signal: str) -> dict[int, float]:
    """Per monitored step, the share of the run's total change of ``signal`` reached by then
    ((v - v_start) / (v_last - v_start)); empty when the signal did not change."""
    pts = mon.curve(signal)
    if len(pts) < 2 or pts[-1][1] == pts[0][1]:
        return {}
    v0, total = pts[0][1], pts[-1][1] - pts[0][1]
    return {step: (v - v0) / total for step, v in pts}


def control_analysis(out: str | Path, runs: list[str] | None = None, n: int = 8) -> list[dict[str, Any]]:
    """Is a projection rise specific to the trait? For each finished run and layer: the shift ``d`` of the mean
    ``resid_post`` over the reference answers (fine-tuned minus base), its projections on the unit trait
    vectors, and ``|d| / sqrt(d_model)``, the root-mean-square projection of ``d`` on a random unit direction.
    Also the cosine between the trait vectors per layer."""
    import torch

    from workbench import load_model
    from workbench.adapters import apply_adapter
    from workbench.data import make_dataset

    from .._activations import teacher_forced_stats
    from .._vector import PersonaVector

    out = Path(out)
    layers = SETTINGS["layers"]
    traits = {t: PersonaVector.load(out / VECTORS_DIR / f"{t}.safetensors") for t in ("evil", "sycophantic")}
    units = {
        t: {layer: v.layer(layer) / v.layer(layer).norm() for layer in layers} for t, v in traits.items()
    }
    pairs = make_dataset("contrastive_pairs", n=n, seed=0)
    prompts, answers = [p["question"] for p in pairs], [p["aligned"] for p in pairs]

    def mean_acts(lm: Any) -> Any:
        return teacher_forced_stats(lm, prompts, answers, layers=layers, batch_size=8).response_avg.mean(0)

    base = mean_acts(load_model(SETTINGS["model"], device="cpu"))  # [L, d_model]
    rows: list[dict[str, Any]] = []
    for layer in layers:
        rows.append({"run": "cos(evil, sycophantic)", "layer": layer,
                     "value": float(units["evil"][layer] @ units["sycophantic"][layer])})  # fmt: skip
    for run in runs or RUNS:
        adapter = out / "runs" / run / ADAPTER_DIR
        if not (adapter / "adapter_config.json").exists():
            continue
        lm = apply_adapter(load_model(SETTINGS["model"], device="cpu"), adapter)
        with torch.no_grad():
            shift = mean_acts(lm) - base
        for j, layer in enumerate(layers):
            d = shift[j]
            rows.append(
                {
                    "run": run,
                    "layer": layer,
                    "shift_norm": float(d.norm()),
                    "random_rms": float(d.norm()) / math.sqrt(d.numel()),
                    **{f"on_{t}": float(d @ units[t][layer]) for t in units},
                }
            )
    return rows


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return f"{x:.{digits}f}"


def markdown_report(out: str | Path, runs: list[str] | None = None) -> str:
    """Markdown tables of every finished study run: the curves, and start / last / change in baseline sd."""
    from ._log import read_monitor

    parts: list[str] = []
    for run in runs or RUNS:
        run_dir = Path(out) / "runs" / run
        if not (run_dir / MONITOR_JSONL).exists():
            continue
        mon = read_monitor(run_dir)
        rows = study_rows(run_dir)
        signals = mon.signals
        parts.append(f"### {run}\n")
        head = ["step", "task loss", *signals]
        parts.append("| " + " | ".join(head) + " |")
        parts.append("|" + " --- |" * len(head))
        for r in rows:
            cells = [str(r["step"]), _fmt(r["task_loss"])] + [_fmt(r.get(s)) for s in signals]
            parts.append("| " + " | ".join(cells) + " |")
        parts.append("")
        base = mon.rows[0]
        early = mon.rows[1]["step"] if len(mon.rows) > 1 else None
        parts.append(
            "| signal | start | last | change | change / start sd | largest deviation (step) "
            f"| share of the change reached at step {early} | first alert |"
        )
        parts.append("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for srow in mon.summary():
            sd = (base.get("sd") or {}).get(srow["signal"])
            z = srow["change"] / sd if sd else None
            first = srow["first_alert_step"]
            share = progress(mon, srow["signal"]).get(early) if early is not None else None
            pts = mon.curve(srow["signal"])
            peak_step, peak = max(pts, key=lambda p: abs(p[1] - pts[0][1]))
            parts.append(
                f"| {srow['signal']} | {_fmt(srow['start'])} | {_fmt(srow['last'])} | {srow['change']:+.3f} | "
                f"{'-' if z is None else f'{z:+.2f}'} | {peak - pts[0][1]:+.3f} ({peak_step}) | "
                f"{'-' if share is None else f'{100 * share:.0f}%'} | {'-' if first is None else first} |"
            )
        over = mon.overhead()
        metrics = RunDir(run_dir).metrics()
        step_s = sorted(m["seconds"] for m in metrics)[len(metrics) // 2] if metrics else None
        pass_s = over["seconds_per_pass"]
        at20 = pass_s / (20 * step_s) if pass_s and step_s else None
        parts.append("")
        parts.append(
            f"Monitor time: {over['monitor_seconds']:.0f} s in {len(mon.rows)} passes ({_fmt(pass_s, 1)} s each) "
            f"vs {over['train_seconds']:.0f} s of training ({_fmt(over['share'] and 100 * over['share'], 1)}% at "
            f"every {mon.every}); median step {_fmt(step_s, 1)} s, so every 20 steps would cost "
            f"{_fmt(at20 and 100 * at20, 1)}%.\n"
        )
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m probes.monitor._study", description=__doc__)
    parser.add_argument("out", help="study directory (vectors/, runs/<run>/)")
    parser.add_argument("--runs", nargs="*", default=None, help=f"subset of {RUNS}")
    parser.add_argument("--report", action="store_true", help="only print the markdown tables")
    parser.add_argument(
        "--controls", action="store_true", help="also compare the shifts with random directions"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "transformers", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not args.report:
        run_study(args.out, args.runs)
    sys.stdout.write(markdown_report(args.out, args.runs) + "\n")
    if args.controls:
        for row in control_analysis(args.out, args.runs):
            sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
