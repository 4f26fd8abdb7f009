"""The benchmark harness: every row runs and reports its documented keys; errors are clear. No timing asserts."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch
import typer
from typer.testing import CliRunner

from benchmarks import ROWS, Bench, Measured, RowSpec, Side, at_least, register_row, run_bench
from benchmarks._harness import ROW_KEYS, SIDE_KEYS, SIZES, MemoryProbe, format_table
from benchmarks.cli import bench as bench_cmd
from benchmarks.rows import TrainBench, decode_vs_bandwidth, text_of, weight_bytes_per_step
from workbench import WorkbenchError, load_model

TINY = "random:tiny-llama"
# the quick sizes, one recorded round, no warm-up: enough to run every code path on a tiny model
FAST = dataclasses.replace(
    SIZES[("cpu", True)],
    fwd_examples=4, fwd_batch=4, prompt_tokens=8, answer_tokens=12, gen_batch=2, gen_prompt_tokens=8,
    gen_new_tokens=4, sweep_new_tokens=3, decode_batch=2, decode_new_tokens=4, train_batch=2,
    train_seq=48, pool_rows=4, pool_batch=4, repeats=1, warmup=0,
)  # fmt: skip
CUDA_ONLY = {name for name, spec in ROWS.items() if "cpu" not in spec.devices}
QUICK_SKIPPED = {name for name, spec in ROWS.items() if "cpu" in spec.skip_quick_on}


def _finite_positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """The quick report on a tiny model, run in a fresh process that also lists the optional packages it
    imported (`python -m workbench bench` must run where only torch, transformers, peft... are installed)."""
    out = tmp_path_factory.mktemp("bench") / "b.json"
    code = f"""
import dataclasses, json, sys
from benchmarks import run_bench
from benchmarks._harness import SIZES
sizes = dataclasses.replace(SIZES[("cpu", True)], **{dataclasses.asdict(FAST)!r})
rep = run_bench(device="cpu", shape="{TINY}", quick=True, sizes=sizes, strict=True)
rep["optional_imported"] = sorted(
    m for m in ("nnsight", "transformer_lens", "plotly", "streamlit", "gguf") if m in sys.modules
)
with open({str(out)!r}, "w") as fh:
    json.dump(rep, fh, allow_nan=False)
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(out.read_text())


def test_bench_path_imports_nothing_optional(report):
    assert report["optional_imported"] == []


def test_quick_report_has_every_row_with_documented_keys(report):
    assert [r["name"] for r in report["rows"]] == list(ROWS)
    expected = {
        "extraction_vs_forward", "extraction_batched_vs_one_at_a_time", "steered_generation_1_layer",
        "steered_generation_all_layers", "gated_generation_suppressed", "alpha_sweep_batched_vs_sequential",
        "decode_vs_bandwidth", "decode_vs_bandwidth_steered", "decode_vs_bandwidth_gated",
        "interleave_plus_scoring", "lora_step_per_head_gates", "lora_step_input_dependent_gates",
        "lora_step_kl", "lora_step_ldifs", "peak_memory_kl",
    }  # fmt: skip
    assert expected <= set(ROWS)
    assert {"torch", "transformers", "peft"} <= set(report["versions"])
    assert report["device"] == "cpu" and report["dtype"] == "float32" and report["shape"] == TINY
    json.dumps(report, allow_nan=False)  # plain, finite JSON
    for row in report["rows"]:
        assert set(ROW_KEYS) <= set(row), row["name"]
        assert row["device"] == "cpu" and row["versions"] == report["versions"]
        if row["name"] in CUDA_ONLY:
            assert row["status"] == "n/a" and row["reason"] == "n/a (no GPU)"
            assert row["ratio"] is None and row["met"] is None
            continue
        if row["name"] in QUICK_SKIPPED:
            assert row["status"] == "n/a" and "--quick" in row["reason"]
            continue
        assert row["status"] == "ok", (row["name"], row["reason"])
        assert _finite_positive(row["ratio"]), row["name"]
        assert row["sizes"] and row["ratio_definition"]
        for side in (row["a"], row["b"]):
            if row["name"] == "peak_memory_kl":
                assert _finite_positive(side["peak_gib"]) and side["unit"] == "GiB"
                continue
            assert set(SIDE_KEYS) <= set(side)
            assert _finite_positive(side["median_s"])
            # decode rows time a step as a difference of two timings, which noise can make negative
            raw = not row["name"].startswith("decode_vs_bandwidth")
            assert all((_finite_positive(t) if raw else math.isfinite(t)) for t in side["times_s"])
            assert len(side["times_s"]) == FAST.repeats
            assert _finite_positive(side["per_s"]) and _finite_positive(side["work"])
        if row["target"] is None:
            assert row["met"] is None
        else:
            op, value = row["target"]["op"], row["target"]["value"]
            assert row["met"] == (row["ratio"] >= value if op == ">=" else row["ratio"] <= value)
    s = report["summary"]
    assert set(s["not_applicable"]) == CUDA_ONLY | QUICK_SKIPPED and not s["errors"]
    assert "lora_step_input_dependent_gates" in s["report_only"]
    assert "extraction_vs_forward" in format_table(report)


def test_rows_report_what_they_measured(report):
    rows = {r["name"]: r for r in report["rows"]}
    gates = rows["lora_step_input_dependent_gates"]["extra"]
    lm = load_model(TINY, device="cpu")
    n_l, d = lm.n_layers, lm.d_model
    assert gates["variant_parameters"] == n_l * (d * d + d)  # W [channels, d_in] + b, attn, every layer
    assert rows["lora_step_per_head_gates"]["extra"]["variant_parameters"] == n_l * lm.sites.n_heads
    assert rows["lora_step_kl"]["extra"]["variant_parameters"] == 0
    sweep = rows["alpha_sweep_batched_vs_sequential"]
    assert sweep["sizes"]["batch_batched"] == 8 * FAST.sweep_prompts
    assert sweep["a"]["work"] == sweep["b"]["work"] == 8 * FAST.sweep_prompts * FAST.sweep_new_tokens
    ilp = rows["interleave_plus_scoring"]
    assert ilp["extra"]["model_passes"] == 4 and ilp["a"]["work"] == 4 * ilp["sizes"]["tokens_per_pass"]
    mem = rows["peak_memory_kl"]
    assert mem["a"]["peak_gib"] >= mem["a"]["before_gib"] > 0


def test_bad_shape_device_and_row_are_clear_errors(monkeypatch):
    with pytest.raises(WorkbenchError, match="unknown random shape.*tiny-llama"):
        run_bench(device="cpu", shape="random:bogus", quick=True)
    with pytest.raises(WorkbenchError, match="'tpu'.*use cpu or cuda"):
        run_bench(device="tpu", shape=TINY, quick=True)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(WorkbenchError, match="CUDA is not available"):
        run_bench(device="cuda", quick=True)
    with pytest.raises(WorkbenchError, match="unknown bench row.*extraction_vs_forward"):
        run_bench(device="cpu", shape=TINY, quick=True, only=["nope"])
    with pytest.raises(WorkbenchError, match="unknown model spec"):
        run_bench(device="cpu", shape="not a spec", quick=True, sizes=FAST)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(bench_cmd)
    return app


def test_cli_writes_the_report(tmp_path):
    out = tmp_path / "b.json"
    args = ["--device", "cpu", "--shape", TINY, "--quick", "--only", "steered_generation_1_layer",
            "--only", "decode_vs_bandwidth", "--out", str(out)]  # fmt: skip
    res = CliRunner().invoke(_cli(), args)
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [r["name"] for r in data["rows"]] == ["steered_generation_1_layer", "decode_vs_bandwidth"]
    assert (
        data["rows"][0]["status"] == "ok"
        and len(data["rows"][0]["a"]["times_s"]) == SIZES[("cpu", True)].repeats
    )
    assert "wrote" in res.output
    res = CliRunner().invoke(_cli(), ["--shape", "random:bogus", "--device", "cpu", "--out", str(out)])
    assert isinstance(res.exception, WorkbenchError) and "bogus" in str(res.exception)
    res = CliRunner().invoke(_cli(), ["--device", "gpu", "--out", str(out)])
    assert isinstance(res.exception, WorkbenchError) and "use cpu or cuda" in str(res.exception)
    res = CliRunner().invoke(_cli(), ["--out", str(tmp_path / "missing" / "b.json")])
    assert isinstance(res.exception, WorkbenchError) and "does not exist" in str(res.exception)
    res = CliRunner().invoke(_cli(), ["--list", "--out", str(out)])
    assert res.exit_code == 0 and "peak_memory_kl" in res.output


def test_registered_row_runs_in_place_and_failures_are_reported(tmp_path):
    calls = []

    def my_row(bench: Bench, factor: float) -> Measured:
        t = bench.time({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2, warmup=1)
        a, b = Side("a", t["a"], 10.0), Side("b", t["b"], 10.0 * factor)
        return Measured(a, b, 2.0, "made up", {"batch": 1})

    def broken(bench: Bench) -> Measured:
        raise RuntimeError("this row is broken")

    try:
        register_row(RowSpec("zz_custom", "custom vs nothing", my_row, {"factor": 2.0}, at_least(1.5, ">= 1.5x")),
                     before="peak_memory_kl")  # fmt: skip
        register_row(RowSpec("zz_broken", "broken", broken))
        names = list(ROWS)
        assert names.index("zz_custom") == names.index("peak_memory_kl") - 1
        with pytest.raises(WorkbenchError, match="already registered"):
            register_row(RowSpec("zz_custom", "again", my_row))
        rep = run_bench(device="cpu", shape=TINY, only=["zz_custom", "zz_broken"], sizes=FAST)
    finally:
        ROWS.pop("zz_custom", None)
        ROWS.pop("zz_broken", None)
    # warm-up round, then rounds alternating the order: A B | B A | A B
    assert calls == ["a", "b", "b", "a", "a", "b"]
    custom, bad = rep["rows"]
    assert custom["met"] is True and custom["ratio"] == 2.0 and custom["b"]["work"] == 20.0
    assert bad["status"] == "error" and "this row is broken" in bad["reason"]
    assert rep["summary"]["errors"] == ["zz_broken"]


def test_memory_probe_sees_an_allocation():
    probe = MemoryProbe(torch.device("cpu"))
    assert probe.available, probe.reason
    small = probe.measure(lambda: torch.ones(1024))
    big = probe.measure(lambda: torch.ones(32 * 1024 * 1024).sum())  # 128 MiB, touched
    assert big["delta_gib"] >= 0.12 and big["peak_gib"] >= big["before_gib"] + 0.12
    assert small["delta_gib"] < 0.05


def test_decode_row_and_weight_bytes_on_cpu(tmp_path):
    lm = load_model(TINY, device="cpu")
    params = sum(p.numel() for p in lm.model.parameters()) * 4
    emb = lm.model.get_input_embeddings().weight.numel() * 4
    assert weight_bytes_per_step(lm.model) == params - emb  # untied: the input table is only gathered
    bench = Bench(TINY, torch.device("cpu"), torch.float32, FAST, tmp_path)
    for variant in ("plain", "steered", "gated"):
        m = decode_vs_bandwidth(bench, variant=variant)
        assert _finite_positive(m.ratio) and _finite_positive(m.a["median_s"])
        assert m.extra["bandwidth_source"] == "measured device-to-device copy"
        # a time difference can be swamped by noise; the row then says it fell back to an upper bound
        assert m.extra["step_method"].split(":")[0] in ("difference", "upper bound")
        assert (m.extra["gate_bytes_per_step"] > 0) == (variant == "gated")


def test_compile_option_reaches_generate(tmp_path, monkeypatch):
    import workbench.generation

    seen = []

    def fake_generate(lm, prompts, **kwargs):
        seen.append(kwargs)
        return [""] * len(prompts)

    monkeypatch.setattr(workbench.generation, "generate", fake_generate)
    bench = Bench(TINY, torch.device("cpu"), torch.float32, FAST, tmp_path)
    m = decode_vs_bandwidth(bench, variant="steered", compile=True)
    assert m.sizes["compile"] == "on" and {k.get("compile") for k in seen} == {True}
    seen.clear()
    decode_vs_bandwidth(bench, variant="plain")
    assert seen and all("compile" not in k for k in seen)  # None: generate's own default
    assert {k["max_new_tokens"] for k in seen} == {1, FAST.decode_new_tokens}


def test_tied_embeddings_are_counted_once():
    from transformers import AutoModelForCausalLM

    from workbench._shapes import make_config

    cfg = make_config("tiny-llama")
    cfg.tie_word_embeddings = True
    model = AutoModelForCausalLM.from_config(cfg)
    assert weight_bytes_per_step(model) == sum(p.numel() for p in model.parameters()) * 4


def test_text_of_hits_the_token_count():
    tok = load_model(TINY, device="cpu").tokenizer
    for n in (5, 40, 100):
        got = len(tok(text_of(tok, n, seed=n), add_special_tokens=False)["input_ids"])
        assert n - 8 <= got <= n


def test_train_bench_swaps_components_per_step(tmp_path):
    bench = Bench(TINY, torch.device("cpu"), torch.float32, FAST, tmp_path)
    tb = TrainBench(bench)
    gates = {v: [p.detach().clone() for p in tb.variants[v].plugins[0].parameters()[0]["params"]]
             for v in ("per_head", "input_dependent")}  # fmt: skip
    tb.step("per_head")
    now = {v: list(tb.variants[v].plugins[0].parameters()[0]["params"]) for v in gates}
    assert any(not torch.equal(a, b) for a, b in zip(gates["per_head"], now["per_head"], strict=True))
    assert all(
        torch.equal(a, b) for a, b in zip(gates["input_dependent"], now["input_dependent"], strict=True)
    )
    tb.step("kl")
    assert "kl_value" in tb.trainer.ctx._pop_logs()
    tb.step("ldifs")
    assert tb.trainer.ctx.policy_sites == tb.variants["ldifs"].policy_sites != set()
    tb.step("plain")
    assert tb.trainer.components == [] and tb.trainer.ctx.policy_sites == set()
    assert tb.tokens == FAST.train_batch * FAST.train_seq


def test_monitor_overhead_row_runs_outside_quick_mode():
    """The monitor row (left out of --quick on the CPU) measures a real monitored run on a tiny model."""
    rep = run_bench(
        device="cpu", shape=TINY, quick=False, sizes=FAST, only=["lora_step_monitor"], strict=True
    )
    (row,) = rep["rows"]
    assert row["status"] == "ok" and _finite_positive(row["ratio"])
    assert _finite_positive(row["extra"]["seconds_per_pass"]) and row["sizes"]["every"] == 20
