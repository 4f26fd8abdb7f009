"""GPU tier (opt-in; runs only where CUDA exists): the quick benchmark on CUDA reports every row."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks import ROWS, run_bench

pytestmark = pytest.mark.gpu


def test_quick_bench_on_cuda():
    # a small full-size shape keeps the tier short; `workbench bench --quick` defaults to random:qwen2.5-7b
    report = run_bench(device="cuda", shape="random:qwen2.5-0.5b", quick=True, strict=True)
    json.dumps(report, allow_nan=False)
    assert report["dtype"] == "bfloat16" and report["machine"]["gpu"]
    assert [r["name"] for r in report["rows"]] == list(ROWS)
    for row in report["rows"]:
        assert row["status"] == "ok", (row["name"], row["reason"])  # every row runs on CUDA
        assert math.isfinite(row["ratio"]) and row["ratio"] > 0, row["name"]
    rows = {r["name"]: r for r in report["rows"]}
    for name in ("decode_vs_bandwidth", "decode_vs_bandwidth_steered", "decode_vs_bandwidth_gated"):
        row = rows[name]
        assert 0 < row["ratio"] < 1.5, (
            name,
            row["ratio"],
        )  # a fraction of the bound (1.5: measurement slack)
        assert row["extra"]["bandwidth_gbs"] > 0 and row["a"]["per_s"] > 0
    mem = rows["peak_memory_kl"]
    assert mem["a"]["peak_gib"] >= mem["b"]["before_gib"] > 0
