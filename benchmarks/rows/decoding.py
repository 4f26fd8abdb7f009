"""Decoding rows: one decode step at batch ``decode_batch`` (plain, steered at every layer, gated; eager or
compiled) against the memory-bandwidth bound ``weight bytes / bandwidth`` (the GPU's data-sheet bandwidth, or a
measured device-to-device copy)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable
from typing import Any

import torch

from workbench import WorkbenchError

from .._harness import GIB, Bench, Measured, Side
from .common import compile_label, fixed_length, generate, make_gates, random_vector, texts

#: peak memory bandwidth in GB/s (1e9 bytes) by GPU name, from the vendors' data sheets (first match wins)
BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    (r"H200", 4800.0),
    (r"H100.*NVL", 3900.0),
    (r"H100.*PCIe", 2000.0),
    (r"H100", 3350.0),  # SXM5 (reported as "H100 80GB HBM3")
    (r"GH200", 4000.0),
    (r"A100.*80GB.*PCIe", 1935.0),
    (r"A100.*80GB", 2039.0),
    (r"A100", 1555.0),
    (r"L40S", 864.0),
    (r"L40", 864.0),
    (r"L4\b", 300.0),
    (r"A10G", 600.0),
    (r"A10\b", 600.0),
    (r"RTX 4090", 1008.0),
    (r"RTX 3090", 936.0),
    (r"V100", 900.0),
    (r"T4\b", 320.0),
)


def table_bandwidth(name: str) -> float | None:
    for pattern, gbs in BANDWIDTH_GBS:
        if re.search(pattern, name, re.I):
            return gbs * 1e9
    return None


def measured_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Bytes per second of a large device-to-device copy (each copy reads and writes ``nbytes``)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        nbytes = int(min(nbytes, free // 4))
    else:
        nbytes, repeats = min(nbytes, 1 << 27), min(repeats, 3)  # a host copy is slow; 128 MiB suffices
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return 2.0 * src.numel() * 4 * repeats / dt


def weight_bytes_per_step(model: torch.nn.Module) -> int:
    """Bytes of weights one decoding step reads: every parameter, less the input embedding table when it is
    not tied to the output layer (a step gathers only ``batch`` rows of it)."""
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in params.values())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
    if not tied:
        total -= emb.numel() * emb.element_size()
    return int(total)


def decode_vs_bandwidth(bench: Bench, variant: str = "plain", compile: bool | None = None) -> Measured:
    """Decode step time at batch ``decode_batch`` vs the bound ``weight bytes / bandwidth``.

    step time = (time of ``n`` new tokens - time of 1 new token) / (n - 1): the prefill cancels out. When
    noise makes that difference non-positive, the step is bounded from above by (time of ``n`` tokens) / n
    and ``extra["step_method"]`` says which estimate was used.
    """
    from steering import Steerer

    s = bench.sizes
    lm = bench.lm
    prompts = texts(bench, s.decode_batch, s.gen_prompt_tokens, seed=5)
    n = s.decode_new_tokens
    vec = random_vector(bench)
    gates = make_gates(bench, "input_dependent") if variant == "gated" else None

    def context() -> contextlib.AbstractContextManager[Any]:
        if variant == "steered":
            return Steerer(lm, vec, layers="all", alpha=4.0)
        if variant == "gated":
            assert gates is not None
            return gates.attached(lm, alpha=-1.0)
        if variant != "plain":
            raise WorkbenchError(f"unknown decode variant '{variant}'")
        return contextlib.nullcontext()

    def run(k: int) -> Callable[[], None]:
        def fn() -> None:
            with fixed_length(lm, k), context():
                generate(bench, prompts, k, compile=compile)

        return fn

    t = bench.time({"n": run(n), "one": run(1)})
    full, one = Side("n", t["n"]), Side("one", t["one"])
    step = (full.median_s - one.median_s) / (n - 1)
    step_method = "difference: (time of n tokens - time of 1 token) / (n - 1)"
    if not step > 0:  # timing noise (a loaded machine, a tiny model) swamped the difference
        step = full.median_s / n
        step_method = "upper bound: time of n tokens / n (the difference was not positive under noise)"
    wbytes = weight_bytes_per_step(lm.model)
    gate_bytes = 0 if gates is None else sum(p.numel() * p.element_size() for p in gates.parameters())
    name = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "cpu"
    measured = measured_bandwidth(bench.device)
    spec_bw = table_bandwidth(name) if bench.device.type == "cuda" else None
    bw = spec_bw or measured
    bound = wbytes / bw
    a = {
        "label": f"decode step, {variant}, compile {compile_label(compile, bench.device)}",
        "median_s": float(f"{step:.6g}"),
        "times_s": [round((x - y) / (n - 1), 6) for x, y in zip(t["n"], t["one"], strict=True)],
        "work": s.decode_batch,
        "unit": "tokens",
        "per_s": round(s.decode_batch / step, 2),
    }
    b = {
        "label": "memory-bandwidth bound: weight bytes / bandwidth",
        "median_s": round(bound, 6),
        "times_s": [round(bound, 6)],
        "work": s.decode_batch,
        "unit": "tokens",
        "per_s": round(s.decode_batch / bound, 2),
    }
    extra = {
        "step_method": step_method,
        "weight_gib_per_step": round(wbytes / GIB, 3),
        "weight_bytes_per_step": wbytes,
        "gate_bytes_per_step": gate_bytes,
        "bandwidth_gbs": round(bw / 1e9, 1),
        "bandwidth_source": "data sheet for " + name if spec_bw else "measured device-to-device copy",
        "measured_copy_gbs": round(measured / 1e9, 1),
        "generate_n_s": full.median_s,
        "generate_1_s": one.median_s,
    }
    sizes = {"batch": s.decode_batch, "new_tokens": n, "compile": compile_label(compile, bench.device)}
    return Measured(a, b, bound / step, "fraction of the bound: bound step time / measured step time",
                    sizes, extra, notes="KV-cache reads are not in the bound")  # fmt: skip
