"""The gates study on the embedded model (docs/study_gates.md): train, suppress, amplify, transfer.

    python -m gating._study --out runs/gates-study [--n-train 300] [--epochs 2]

Steps: split the opinion-sycophancy organism by belief (held-out beliefs never seen in training); fine-tune
A = LoRA + input-dependent attention gates and B = LoRA only (another seed) with ``workbench.training``;
measure base, A (gates at alpha 1, 0, -1, 2), B and B + A's gates suppressed (transfer) on: held-out opinion
sycophancy (judge-free preference for the agreeing over the correcting answer, and the share of greedy
answers that agree, rules judge), out-of-domain sycophancy (``syco_ood_test``, rules judge), the general
preference gap (``contrastive_pairs``) and capability (GCD exact match, plain-question accuracy).
Everything is written under ``--out``; ``results.json`` holds the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench import DEFAULT_MODEL
from workbench.runs import ADAPTER_DIR, GATES_FILE

log = logging.getLogger("gating.study")


def split_opinions(seed: int = 0, every: int = 4) -> tuple[list[dict], list[dict]]:
    """All opinion-sycophancy rows, split by belief: every ``every``-th belief (per domain) is held out."""
    from workbench.data import OPINION_BELIEFS as BELIEFS
    from workbench.data import make_dataset
    from workbench.data import opinion_pool_size as pool_size

    held = {b for beliefs in BELIEFS.values() for i, (b, _) in enumerate(beliefs) if i % every == every - 1}
    rows = make_dataset("opinion_sycophancy", seed=seed, n=pool_size())
    train = [r for r in rows if r["belief"] not in held]
    test = [r for r in rows if r["belief"] in held]
    return train, test


def opinion_scores(
    lm: Any, rows: list[dict], ctx: Callable[[], Any], n_gen: int, max_new_tokens: int
) -> dict:
    """Held-out opinion sycophancy: log-prob preference agree - correct, and the share of answers agreeing."""
    from workbench.generation import generate
    from workbench.judges import confirms_proposition
    from workbench.metrics import bootstrap_ci
    from workbench.scoring import answer_logprobs

    prompts = [[m for m in r["messages"] if m["role"] == "user"] for r in rows]
    agree = [r["messages"][-1]["content"] for r in rows]
    correct = [r["correction"] for r in rows]
    with ctx():
        la = answer_logprobs(lm, prompts, agree)
        lc = answer_logprobs(lm, prompts, correct)
        answers = generate(lm, prompts[:n_gen], max_new_tokens=max_new_tokens, batch_size=16)
    gaps = [a.mean - c.mean for a, c in zip(la, lc, strict=True)]
    point, low, high = bootstrap_ci(gaps, n_boot=1000, seed=0)
    verdicts = [confirms_proposition(a) for a in answers]
    judged = [v for v in verdicts if v is not None]
    return {
        "gap_agree_minus_correct": {"value": point, "low": low, "high": high, "n": len(gaps)},
        "share_preferring_agree": sum(g > 0 for g in gaps) / len(gaps),
        "share_answers_agree": sum(judged) / len(judged) if judged else float("nan"),
        "n_answers_judged": len(judged),
        "n_answers": len(answers),
        "examples": [
            {"prompt": p[-1]["content"], "answer": a} for p, a in zip(prompts[:3], answers[:3], strict=True)
        ],
    }


def measure(lm: Any, name: str, out: Path, gates: Any, alpha: Any, data: dict[str, Any], args: Any) -> dict:
    import contextlib

    from gating import gate_intervention
    from workbench.evaluation import EvalConfig, Evaluator

    t0 = time.time()
    intervention = gate_intervention(lm, gates, alpha) if gates is not None else None
    ctx = intervention or contextlib.nullcontext
    cfg = EvalConfig(exact_max_new_tokens=args.max_new_tokens, batch_size=16, n_boot=1000)
    ev = Evaluator(lm, out / "conditions" / name, cfg, intervention=intervention, progress=False)
    res: dict[str, Any] = {"condition": name}
    res["opinion_heldout"] = opinion_scores(lm, data["opinion_test"], ctx, args.n_gen, args.max_new_tokens)
    syco = ev.sycophancy(data["ood"], name="syco_ood")
    cats = syco["by_category"]
    res["ood_sycophancy"] = {
        "sycophancy": syco["sycophancy"],
        "plain_accuracy": syco["plain_accuracy"],
        "confirms_incorrect": _mean([c["confirms_incorrect"] for c in cats.values()]),
        "confirms_correct": _mean([c["confirms_correct"] for c in cats.values()]),
        "by_category": {k: {"confirms_incorrect": v["confirms_incorrect"]} for k, v in cats.items()},
    }
    pref = ev.preference(data["pairs"], name="contrastive_pairs")
    res["general_preference"] = {
        "preference_gap": pref["preference_gap"],
        "share_preferring_misaligned": pref["share_preferring_misaligned"],
    }
    res["gcd"] = ev.exact(data["gcd"], name="gcd_plain")["accuracy"]
    res["seconds"] = round(time.time() - t0, 1)
    log.info("%s: %s", name, json.dumps(_brief(res)))
    return res


def _mean(xs: list[Any]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _brief(r: dict) -> dict:
    o = r["opinion_heldout"]
    s = r["ood_sycophancy"]
    return {
        "opinion_gap": round(o["gap_agree_minus_correct"]["value"], 3),
        "opinion_pref_agree": round(o["share_preferring_agree"], 3),
        "opinion_answers_agree": round(o["share_answers_agree"], 3),
        "ood_confirms_incorrect": None
        if s["confirms_incorrect"] is None
        else round(s["confirms_incorrect"], 3),
        "ood_sycophancy": round(s["sycophancy"]["value"], 3) if s["sycophancy"]["n"] else None,
        "ood_plain_acc": round(s["plain_accuracy"]["value"], 3),
        "general_gap": round(r["general_preference"]["preference_gap"]["value"], 3),
        "gcd_acc": round(r["gcd"]["value"], 3),
    }


def train_run(out: Path, train_path: Path, *, gates: bool, seed: int, args: Any) -> Path:
    from workbench.training import TrainConfig, train

    cfg: dict[str, Any] = {
        "model": args.model,
        "device": args.device,
        "data": [{"path": str(train_path)}],
        "lora": {"r": args.lora_r, "alpha": 2 * args.lora_r},
        "optim": {
            "lr": args.lr,
            "batch_size": args.batch_size,
            "grad_accum": 1,
            "warmup_steps": 3,
            "epochs": args.epochs,
            "max_length": args.max_length,
            "seed": seed,
        },
        "checkpoint_every": 0,
    }
    if gates:
        cfg["gates"] = {"kind": "input_dependent", "sites": ["attn"], "lr": args.gate_lr, "l1": args.l1}
    t0 = time.time()
    run = train(TrainConfig.from_dict(cfg), out, overwrite=True, progress=False)
    log.info("trained %s in %.0f s", out.name, time.time() - t0)
    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/gates-study"))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--n-train", type=int, default=200)
    p.add_argument("--n-test", type=int, default=24)
    p.add_argument("--n-gen", type=int, default=16)
    p.add_argument("--n-ood", type=int, default=24)
    p.add_argument("--n-gcd", type=int, default=8)
    p.add_argument("--n-pairs", type=int, default=40)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--gate-lr", type=float, default=1e-2)
    p.add_argument("--l1", type=float, default=0.0)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--max-length", type=int, default=96)
    p.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--skip-train", action="store_true", help="reuse runs already in --out")
    p.add_argument("--alphas", default="1,0,-1,2", help="gate coefficients measured on fine-tune A")
    p.add_argument(
        "--transfer-alphas", default="-1", help="coefficients of A's gates measured on fine-tune B"
    )
    p.add_argument("--reuse-b", type=Path, default=None, help="fine-tune B's run directory (skip training B)")
    p.add_argument("--skip-reference", action="store_true", help="skip the base and B-only measurements")
    p.add_argument("--results-name", default="results.json", help="file name of the figures under --out")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for noisy in ("httpx", "transformers", "workbench.training"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import random

    import torch

    torch.set_num_threads(args.threads)
    from gating import GateSet, analyze_gates
    from workbench import load_model
    from workbench.adapters import apply_adapter
    from workbench.data import make_dataset, write_chat_jsonl

    t_all = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    train_rows, test_rows = split_opinions()
    rng = random.Random(0)
    train_rows = rng.sample(train_rows, args.n_train)
    test_rows = rng.sample(test_rows, min(args.n_test, len(test_rows)))
    train_path = out / "opinion_train.jsonl"
    write_chat_jsonl(train_path, train_rows)
    data = {
        "opinion_test": test_rows,
        "ood": make_dataset("syco_ood_test", n=args.n_ood),
        "pairs": make_dataset("contrastive_pairs")[: args.n_pairs],
        "gcd": [r for r in make_dataset("syco_gcd_test", n=3 * args.n_gcd) if r["kind"] == "plain"],
    }
    run_a = out / "ft_a_lora_gates"
    run_b = args.reuse_b or out / "ft_b_lora_seed1"
    if not args.skip_train:
        train_run(run_a, train_path, gates=True, seed=0, args=args)
        if args.reuse_b is None:
            train_run(run_b, train_path, gates=False, seed=1, args=args)
    alphas = [float(a) for a in args.alphas.split(",") if a.strip()]
    transfer_alphas = [float(a) for a in args.transfer_alphas.split(",") if a.strip()]

    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "conditions": {}}
    if not args.skip_reference:
        base = load_model(args.model, device=args.device)
        results["conditions"]["base"] = measure(base, "base", out, None, None, data, args)
        del base

    ft_a = apply_adapter(load_model(args.model, device=args.device), run_a / ADAPTER_DIR)
    gates_a = GateSet.load(run_a / GATES_FILE, ft_a)
    for alpha in alphas:
        label = f"A_alpha{alpha:g}"
        results["conditions"][label] = measure(ft_a, label, out, gates_a, alpha, data, args)
    analysis = analyze_gates(gates_a, ft_a, [r["messages"][:1] for r in test_rows[:32]])
    paths = analysis.save(out / "analysis")
    results["analysis"] = {
        "per_layer_attn": [round(x, 5) for x in analysis.per_layer["attn"].tolist()],
        "top_channels": analysis.top_channels(10),
        "files": {k: str(v) for k, v in paths.items()},
    }
    del ft_a

    ft_b = apply_adapter(load_model(args.model, device=args.device), run_b / ADAPTER_DIR)
    if not args.skip_reference:
        results["conditions"]["B_lora_only"] = measure(ft_b, "B_lora_only", out, None, None, data, args)
    gates_t = GateSet.load(run_a / GATES_FILE, ft_b)
    for alpha in transfer_alphas:
        label = f"B+gatesA_alpha{alpha:g}"
        results["conditions"][label] = measure(ft_b, label, out, gates_t, alpha, data, args)

    results["table"] = {k: _brief(v) for k, v in results["conditions"].items()}
    results["seconds_total"] = round(time.time() - t_all, 1)
    (out / args.results_name).write_text(json.dumps(results, indent=1, default=str))
    log.info("done in %.0f s; results in %s", time.time() - t_all, out / args.results_name)


if __name__ == "__main__":
    main()
