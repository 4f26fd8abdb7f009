"""The end-to-end main job on the embedded model (``workbench demo`` / ``make demo``).

A thin client of the packages: every number it shows is computed by ``probes``, ``steering``,
``gating``, ``workbench.training`` and ``workbench.evaluation``. Small settings keep it to roughly a
quarter of an hour on two CPU cores; every step writes into one run directory.

1. load the model and read every hook site for one chat prompt (per-layer residual norms);
2. extract an ``evil`` persona vector from contrastive system prompts;
3. sweep steering over a few layers and coefficients;
4. fine-tune LoRA + input-dependent alignment gates on the opinion-sycophancy organism;
5. evaluate base / fine-tuned / fine-tuned + suppressed gates / fine-tuned + amplified gates on
   held-out opinion sycophancy (preference for agreeing), out-of-domain sycophancy (rules judge)
   and the general-domain preference gap;
6. write ``report.html`` (plotly figures and a table) and print the command that opens the explorer.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from workbench.runs import ADAPTER_DIR, EVAL_DIR, GATES_FILE, REPORT_HTML, VECTORS_DIR, RunDir

SETTINGS: dict[str, Any] = {
    "trait": "evil",
    "extract": {"n_questions": 8, "n_per_question": 1, "n_instructions": 2, "max_new_tokens": 48},
    "sweep": {
        "depths": [0.2, 0.4, 0.6, 0.8],
        "alphas": [0.0, 4.0, 8.0],
        "n_questions": 4,
        "max_new_tokens": 32,
    },
    "train": {"n": 160, "max_length": 160, "batch_size": 4, "grad_accum": 2, "lr": 2e-4, "gate_lr": 1e-2},
    "eval": {"n_opinion": 40, "n_ood": 24, "max_new_tokens": 48},
}


def _opinion_pairs(seed: int, n: int) -> list[dict[str, str]]:
    """Held-out opinion-sycophancy items as preference pairs: agreeing (misaligned) vs correcting (aligned)."""
    from workbench.data import make_dataset

    pairs = []
    for row in make_dataset("opinion_sycophancy", seed=seed, n=n):
        user = next(m["content"] for m in row["messages"] if m["role"] == "user")
        agree = next(m["content"] for m in row["messages"] if m["role"] == "assistant")
        pairs.append(
            {"question": user, "aligned": row["correction"], "misaligned": agree, "category": "opinion"}
        )
    return pairs


def _bar(value: float, vmax: float, width: int = 40) -> str:
    return "#" * max(1, round(width * value / vmax)) if vmax > 0 else ""


def read_all_sites(lm: Any, prompt: str, echo: Callable[[str], None]) -> dict[str, list[float]]:
    """Step 1: answer one prompt, read every hook site for prompt + answer, print per-layer residual norms.

    Returns the mean L2 norm per token of ``hook_resid_post``, ``hook_attn_out`` and ``hook_mlp_out`` per layer.
    """
    from workbench import read_sites
    from workbench.generation import encode_left, generate, render_prompts

    info = lm.info()
    echo(
        f"      {info['architecture']}: {info['n_layers']} layers, d_model {info['d_model']}, "
        f"{info['n_heads']} heads, {info['parameters'] / 1e6:.1f}M parameters"
    )
    answer = generate(lm, [prompt], max_new_tokens=60)[0]
    echo(f"      user: {prompt}")
    echo(f"      assistant: {answer}")
    echo(f"      reading all {5 * lm.n_layers} hook sites for the prompt + answer")
    text = render_prompts(lm.tokenizer, [prompt])[0] + answer
    enc = encode_left(lm.tokenizer, [text], lm.device)
    sites = lm.sites.names()
    with torch.no_grad(), read_sites(lm, sites) as cache:
        lm.model(**enc)
    n_tokens = enc["input_ids"].shape[1]
    norms = {
        kind: [
            cache[f"blocks.{l}.{kind}"].float().flatten(2).norm(dim=-1).mean().item()
            for l in range(lm.n_layers)
        ]
        for kind in ("hook_resid_post", "hook_attn_out", "hook_mlp_out")
    }
    resid = norms["hook_resid_post"]
    echo(f"      mean L2 norm of blocks.{{l}}.hook_resid_post over {n_tokens} tokens:")
    for l, v in enumerate(resid):
        echo(f"      layer {l:>2} {v:8.2f} {_bar(v, max(resid))}")
    return norms


def run_demo(
    model: str, out: Path | None, prompt: str, echo: Callable[[str], None], overwrite: bool = False
) -> Path:
    """Run the demo into ``out`` (default ``runs/demo-<time>``). Like every command it refuses a directory
    that is not empty unless ``overwrite`` (which empties only a run directory a workbench command made)."""
    from probes import extract_from_trait
    from steering import sweep
    from workbench.cli_common import load_model_quietly
    from workbench.data import load_trait, make_dataset
    from workbench.evaluation import EvalConfig, Evaluator, write_summary
    from workbench.runs import prepare_run_dir, write_config

    run_dir = prepare_run_dir(out, "demo", overwrite=overwrite, inputs=[model])
    write_config(run_dir, {"command": "demo", "model": model, "prompt": prompt, **SETTINGS})
    t_start = time.time()
    figures: dict[str, Any] = {"settings": SETTINGS, "model": model}

    echo(f"[1/6] loading {model} and reading every hook site")
    lm = load_model_quietly(model)
    figures["site_norms"] = read_all_sites(lm, prompt, echo)

    s = SETTINGS["extract"]
    echo(f"[2/6] extracting an '{SETTINGS['trait']}' persona vector ({s['n_questions']} questions x "
         f"{s['n_instructions']} instruction pairs x 2 polarities)")  # fmt: skip
    trait = load_trait(SETTINGS["trait"])
    result = extract_from_trait(
        lm, trait, judge="none", n_questions=s["n_questions"], n_per_question=s["n_per_question"],
        n_instructions=s["n_instructions"], max_new_tokens=s["max_new_tokens"], seed=0,
    )  # fmt: skip
    vec_path = result.save(run_dir / VECTORS_DIR / f"{SETTINGS['trait']}.safetensors")
    result.write_rows(run_dir / VECTORS_DIR / f"{SETTINGS['trait']}_rows.jsonl")
    vec = result.vectors["response_avg"]
    norms = vec.norms().tolist()
    figures["vector_norms"] = norms
    echo(f"      wrote {vec_path}; response_avg norm by layer: min {min(norms):.2f}, max {max(norms):.2f}")

    s = SETTINGS["sweep"]
    layers = sorted({round(f * (lm.n_layers - 1)) for f in s["depths"]})
    echo(f"[3/6] steering sweep: layers {layers} x alphas {s['alphas']}")
    from workbench.html import ensure_plotly_js

    ensure_plotly_js(run_dir)  # one plotly.min.js for every report of the run (sweep, train, gates, report)
    sw = sweep(
        lm, vec, layers=layers, alphas=s["alphas"], questions=list(trait.eval_questions[: s["n_questions"]]),
        judge="none", trait=trait, max_new_tokens=s["max_new_tokens"], out=run_dir / "sweep", progress=True,
    )  # fmt: skip
    figures["sweep"] = sw.rows
    figures["recommended_layer"] = sw.recommended_layer
    for r in sw.rows:
        echo(f"      layer {r['layer']:>2} alpha {r['alpha']:>4}: projection {r['trait_projection']:8.2f}  "
             f"coherence (log-prob/token) {r['coherence_logprob']:6.2f}")  # fmt: skip
    echo(f"      recommended layer: {sw.recommended_layer} ({sw.rule})")

    s = SETTINGS["train"]
    echo(f"[4/6] fine-tuning LoRA + alignment gates on {s['n']} opinion-sycophancy examples")
    from workbench.training import TrainConfig, train

    cfg = TrainConfig.from_dict(
        {
            "model": model,
            "data": [{"name": "opinion_sycophancy", "n": s["n"], "seed": 0}],
            "lora": {"r": 16, "alpha": 32},
            "optim": {
                "lr": s["lr"], "batch_size": s["batch_size"], "grad_accum": s["grad_accum"],
                "max_length": s["max_length"], "epochs": 1, "warmup_steps": 2,
            },
            "checkpoint_every": 0,
            "gates": {"kind": "input_dependent", "sites": ["attn"], "lr": s["gate_lr"], "l1": 0.0},
        }
    )  # fmt: skip
    train_dir = train(cfg, out=run_dir / "train")  # run_dir is new or was emptied
    metrics = RunDir(train_dir).metrics()
    figures["train_loss"] = [(m["step"], m["loss"]) for m in metrics if "loss" in m]
    echo(f"      loss {figures['train_loss'][0][1]:.3f} -> {figures['train_loss'][-1][1]:.3f} "
         f"over {len(figures['train_loss'])} steps; run: {train_dir}")  # fmt: skip

    echo("[5/6] evaluating base / fine-tuned / suppressed (-1) / amplified (2)")
    from gating import GateSet, analyze_gates, gate_intervention
    from workbench.adapters import apply_adapter

    s = SETTINGS["eval"]
    opinion = _opinion_pairs(seed=123, n=s["n_opinion"])
    ood = make_dataset("syco_ood_test", seed=0, n=s["n_ood"])
    general = make_dataset("contrastive_pairs")
    cfg_eval = EvalConfig(exact_max_new_tokens=s["max_new_tokens"], batch_size=16, n_boot=500)
    table: dict[str, dict[str, Any]] = {}

    def evaluate(name: str, model_lm: Any, intervention: Any = None) -> None:
        ev = Evaluator(
            model_lm, run_dir / EVAL_DIR / name, cfg_eval, intervention=intervention, progress=False
        )
        op = ev.preference(opinion, name="opinion_heldout")
        gen = ev.preference(general, name="general_pairs")
        syc = ev.sycophancy(ood, name="sycophancy_ood")
        write_summary(
            run_dir / EVAL_DIR / name,
            {"model": model, "condition": name, "judge": "none",
             "sets": {"opinion_heldout": op, "general_pairs": gen, "sycophancy_ood": syc}},
        )  # fmt: skip
        table[name] = {
            "opinion_gap": op["preference_gap"],
            "opinion_share_agree": op["share_preferring_misaligned"],
            "general_gap": gen["preference_gap"],
            "ood_sycophancy": syc["sycophancy"],
            "ood_plain_accuracy": syc["plain_accuracy"],
        }
        echo(f"      {name:<11} opinion gap {op['preference_gap']['value']:+.3f}  "
             f"general gap {gen['preference_gap']['value']:+.3f}  "
             f"OOD sycophancy {_num(syc['sycophancy']['value'])}  plain acc {_num(syc['plain_accuracy']['value'])}")  # fmt: skip

    evaluate("base", lm)
    ft = load_model_quietly(model)
    apply_adapter(ft, train_dir / ADAPTER_DIR)
    gates = GateSet.load(train_dir / GATES_FILE, ft)
    evaluate("fine-tuned", ft, gate_intervention(ft, gates, 1.0))
    evaluate("suppressed", ft, gate_intervention(ft, gates, -1.0))
    evaluate("amplified", ft, gate_intervention(ft, gates, 2.0))
    figures["eval"] = table
    analysis = analyze_gates(gates, ft, [p["question"] for p in opinion[:8]])
    analysis.save(run_dir / "gates_analysis") if hasattr(analysis, "save") else None
    figures["gate_deviation"] = _layer_deviation(analysis)

    echo("[6/6] writing report.html")
    from workbench.io import atomic_write_json

    figures["minutes"] = round((time.time() - t_start) / 60, 1)
    atomic_write_json(run_dir / "demo_summary.json", figures)
    report = write_report(run_dir, figures)
    echo(f"      {report}")
    echo(f"done in {figures['minutes']} min. Explore the run with:\n  workbench app {run_dir}")
    return run_dir


def _num(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{x:.2f}"


def _layer_deviation(analysis: Any) -> list[float] | None:
    for attr in ("layer_deviation", "per_layer", "layers"):
        value = getattr(analysis, attr, None)
        if value is not None:
            try:
                return [float(v) for v in (value.tolist() if isinstance(value, torch.Tensor) else value)]
            except (TypeError, ValueError):
                continue
    return None


def write_report(run_dir: Path, fig: dict[str, Any]) -> Path:
    """An HTML report that works offline: plotly figures (plotly.min.js from the run directory) and a table."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from workbench.html import figure_html
    from workbench.io import atomic_write_text

    parts = []
    norms = fig.get("site_norms", {}).get("hook_resid_post")
    p = make_subplots(
        rows=1, cols=2, subplot_titles=("resid_post norm per layer", "persona vector norm per layer")
    )
    if norms:
        p.add_trace(go.Scatter(y=norms, mode="lines+markers", name="resid_post"), 1, 1)
    p.add_trace(go.Scatter(y=fig.get("vector_norms", []), mode="lines+markers", name="evil vector"), 1, 2)
    p.update_layout(height=360, showlegend=False)
    parts.append(figure_html(p, run_dir / REPORT_HTML, full_html=False))  # loads plotly.min.js, no CDN

    sw = go.Figure()
    for layer in sorted({r["layer"] for r in fig.get("sweep", [])}):
        rows = sorted((r for r in fig["sweep"] if r["layer"] == layer), key=lambda r: r["alpha"])
        sw.add_trace(go.Scatter(x=[r["alpha"] for r in rows], y=[r["trait_projection"] for r in rows],
                                mode="lines+markers", name=f"layer {layer}"))  # fmt: skip
    sw.update_layout(title="Steering sweep: projection of answers on the evil vector", xaxis_title="alpha",
                     yaxis_title="mean projection", height=380)  # fmt: skip
    parts.append(sw.to_html(full_html=False, include_plotlyjs=False))

    loss = fig.get("train_loss", [])
    lf = go.Figure(go.Scatter(x=[s for s, _ in loss], y=[v for _, v in loss], mode="lines"))
    lf.update_layout(title="Training loss (LoRA + gates, opinion sycophancy)", xaxis_title="step", height=320)
    parts.append(lf.to_html(full_html=False, include_plotlyjs=False))

    table = fig.get("eval", {})
    names = list(table)
    bars = go.Figure()
    for key, label in (("opinion_gap", "held-out opinion gap"), ("general_gap", "general preference gap")):
        vals = [table[n][key] for n in names]
        bars.add_trace(go.Bar(x=names, y=[v["value"] for v in vals], name=label,
                              error_y={"type": "data", "symmetric": False,
                                       "array": [v["high"] - v["value"] for v in vals],
                                       "arrayminus": [v["value"] - v["low"] for v in vals]}))  # fmt: skip
    bars.update_layout(title="Preference for the misaligned answer (nats/token; > 0 prefers it), 95% CI",
                       barmode="group", height=380)  # fmt: skip
    parts.append(bars.to_html(full_html=False, include_plotlyjs=False))

    def est(e: dict[str, Any]) -> str:
        if not e or e.get("n", 0) == 0 or e["value"] != e["value"]:
            return "n/a"
        return f"{e['value']:+.3f} [{e['low']:+.3f}, {e['high']:+.3f}]"

    rows_html = "".join(
        f"<tr><td>{n}</td><td>{est(t['opinion_gap'])}</td><td>{t['opinion_share_agree']:.2f}</td>"
        f"<td>{est(t['general_gap'])}</td><td>{est(t['ood_sycophancy'])}</td><td>{est(t['ood_plain_accuracy'])}</td></tr>"
        for n, t in table.items()
    )
    html = f"""<!doctype html><html><head><meta charset="utf-8"><title>EM workbench demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}td,th{{border:1px solid #ccc;padding:4px 8px}}
table{{border-collapse:collapse}}</style></head><body>
<h1>EM workbench demo: {fig.get("model")}</h1>
<p>Finished in {fig.get("minutes")} min. Recommended steering layer: {fig.get("recommended_layer")}.</p>
<h2>Evaluation</h2>
<table><tr><th>model</th><th>held-out opinion gap</th><th>share preferring agreement</th>
<th>general preference gap</th><th>OOD sycophancy</th><th>OOD plain accuracy</th></tr>{rows_html}</table>
<p>Gaps are mean log-prob per token of the misaligned (agreeing) answer minus the aligned one; OOD sycophancy is
P(confirms an incorrect proposition | answers the plain question correctly), rules judge.</p>
{"".join(parts)}
<h2>Settings</h2><pre>{json.dumps(fig.get("settings"), indent=2)}</pre></body></html>"""
    target = run_dir / REPORT_HTML
    atomic_write_text(target, html)
    return target
