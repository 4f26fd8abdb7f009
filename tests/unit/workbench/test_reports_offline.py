"""HTML reports work offline: every writer loads plotly.js from the run directory, never from a CDN, and a run
tree carries one ``plotly.min.js``. ``build_report_run`` is shared with the browser test."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch

from workbench._html import PLOTLY_JS, ensure_plotly_js, plotly_js_bytes, plotly_js_src, write_figure_html

SCRIPT_SRC = re.compile(r"<script\b[^>]*\bsrc=[\"']([^\"']+)[\"']", re.IGNORECASE)
TINY = "random:tiny-llama"


def _train_rows(path: Path) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Colour {i}?"},
                {"role": "assistant", "content": f"Red {i}."},
            ]
        }
        for i in range(4)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def build_report_run(root: Path) -> dict[str, Path]:
    """A demo-shaped run directory from tiny random-model results: sweep, training plots, gate heatmap,
    screening histogram and the demo's ``report.html``; returns the report paths."""
    from apps.demo import read_all_sites, write_report
    from gating import GateSet, analyze_gates
    from probes import screen_dataset, write_screen_report
    from steering import sweep
    from workbench import load_model
    from workbench.runs import write_config
    from workbench.training import TrainConfig, train

    root.mkdir(parents=True, exist_ok=True)
    write_config(root, {"command": "demo", "model": TINY})
    ensure_plotly_js(root)  # what run_demo does before its first report (the sweep)
    lm = load_model(TINY, device="cpu")
    torch.manual_seed(0)
    vec = torch.randn(lm.n_layers, lm.d_model)

    reports: dict[str, Path] = {}
    sw = sweep(lm, vec, layers=[0, 2], alphas=[0.0, 4.0], questions=["Hi?", "Why?"], max_new_tokens=4,
               out=root / "sweep")  # fmt: skip
    reports["sweep"] = root / "sweep" / "sweep.html"
    cfg = TrainConfig.from_dict(
        {
            "model": TINY, "device": "cpu", "data": [{"path": str(_train_rows(root / "train_rows.jsonl"))}],
            "lora": {"r": 2, "alpha": 4}, "checkpoint_every": 0, "plots": True,
            "optim": {"batch_size": 2, "grad_accum": 1, "warmup_steps": 0, "max_steps": 2, "max_length": 32},
        }
    )  # fmt: skip
    reports["train"] = train(cfg, root / "train", progress=False) / "plots.html"
    gates = GateSet.create(lm, kind="per_channel", sites=("attn",))
    with torch.no_grad():
        for p in gates.parameters():
            p.add_(torch.rand(p.shape) - 0.5)
    reports["gates"] = analyze_gates(gates).save(root / "gates_analysis")["heatmap"]
    rows = [json.loads(x) for x in (root / "train_rows.jsonl").read_text().splitlines()]
    screened = screen_dataset(lm, vec[1], 1, rows, max_new_tokens=4)
    reports["screen"] = write_screen_report(screened, root / "screen")["histogram"]

    def est(v: float) -> dict:
        return {"value": v, "low": v - 0.2, "high": v + 0.2, "n": 10}

    figures = {
        "model": TINY,
        "settings": {"tiny": True},
        "minutes": 0.1,
        "site_norms": read_all_sites(lm, "Hello!", lambda _s: None),
        "vector_norms": vec.norm(dim=-1).tolist(),
        "sweep": sw.rows,
        "recommended_layer": sw.recommended_layer,
        "train_loss": [(1, 3.2), (2, 2.9)],
        "eval": {
            name: {
                "opinion_gap": est(g),
                "opinion_share_agree": 0.5,
                "general_gap": est(g / 2),
                "ood_sycophancy": est(0.3),
                "ood_plain_accuracy": est(0.6),
            }
            for name, g in (("base", 0.1), ("fine-tuned", 0.8), ("suppressed", -0.2))
        },  # fmt: skip
    }
    reports["demo"] = write_report(root, figures)
    return reports


def _script_srcs(html: str) -> list[str]:
    return SCRIPT_SRC.findall(html)


def _assert_offline(report: Path) -> Path:
    """The report loads plotly.js through one relative script that exists; returns that file."""
    html = report.read_text(encoding="utf-8")
    srcs = _script_srcs(html)
    assert srcs, f"{report} loads no script"
    for src in srcs:
        assert not re.match(r"^(https?:)?//", src, re.IGNORECASE), f"{report} loads {src} from the network"
    assert "cdn.plot.ly" not in html and "cdn.jsdelivr" not in html
    assert len(srcs) == 1 and srcs[0].endswith(PLOTLY_JS)
    js = (report.parent / srcs[0]).resolve()
    assert js.is_file() and js.read_bytes() == plotly_js_bytes()
    assert "Plotly.newPlot" in html
    return js


def test_every_report_of_a_run_tree_shares_one_local_plotly_js(tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        reports = build_report_run(tmp_path / "demo")
    finally:
        torch.set_num_threads(n)
    assert set(reports) == {"sweep", "train", "gates", "screen", "demo"}
    shared = {name: _assert_offline(path) for name, path in reports.items()}
    root_js = (tmp_path / "demo" / PLOTLY_JS).resolve()
    assert set(shared.values()) == {root_js}  # nested reports point at ../plotly.min.js
    assert [p.relative_to(tmp_path) for p in tmp_path.rglob(PLOTLY_JS)] == [Path("demo") / PLOTLY_JS]
    bundle = len(plotly_js_bytes())
    for name, path in reports.items():
        assert path.stat().st_size < bundle / 20, f"{name}: {path.stat().st_size} bytes, plotly.js embedded?"


def test_a_report_outside_a_run_tree_gets_plotly_js_beside_it(tmp_path):
    import plotly.graph_objects as go

    from workbench.training._plots import write_plots

    run = tmp_path / "runs" / "train-1"  # runs/ holds no config.yaml: nothing above the run is used
    run.mkdir(parents=True)
    (tmp_path / "runs" / PLOTLY_JS).write_bytes(plotly_js_bytes())
    (run / "config.yaml").write_text("command: train\n")
    (run / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 3.0 - s}) + "\n" for s in (1, 2))
    )
    out = write_plots(run)
    assert out == run / "plots.html" and _assert_offline(out) == (run / PLOTLY_JS).resolve()

    fig = go.Figure(go.Scatter(y=[1, 2]))
    loose = write_figure_html(fig, tmp_path / "loose" / "deep" / "fig.html")
    assert _assert_offline(loose) == (tmp_path / "loose" / "deep" / PLOTLY_JS).resolve()


def test_stale_plotly_js_is_replaced_and_a_current_one_is_left_alone(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / PLOTLY_JS).write_text("/* plotly.js of another version */")
    assert plotly_js_src(run / "a.html") == PLOTLY_JS
    assert (run / PLOTLY_JS).read_bytes() == plotly_js_bytes()
    os.utime(run / PLOTLY_JS, ns=(1_000_000_000, 1_000_000_000))
    ensure_plotly_js(run)
    plotly_js_src(run / "b.html")
    assert (run / PLOTLY_JS).stat().st_mtime_ns == 1_000_000_000  # not rewritten
    # an ancestor run directory's stale copy is not used: the report gets a current one beside it
    (run / "config.yaml").write_text("command: x\n")
    (run / PLOTLY_JS).write_text("stale")
    assert plotly_js_src(run / "sub" / "c.html") == PLOTLY_JS
    assert (run / "sub" / PLOTLY_JS).read_bytes() == plotly_js_bytes()
    assert not list(run.glob(".*.tmp")) and not list((run / "sub").glob(".*.tmp"))
