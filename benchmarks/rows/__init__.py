"""The shipped benchmark rows: one list, in report order, registered when this package is imported.

Each family of rows lives in its own module and holds only row functions (``fn(bench, **params) ->
Measured``); this list says which rows the report has, in which order, with which params and targets:

- ``extraction``: ``teacher_forced_stats`` vs a plain forward; batched vs one example at a time
- ``generation``: ``generate`` under a ``Steerer`` / ``GateSet`` vs plain; the batched alpha sweep
- ``decoding``: a decode step vs the memory-bandwidth bound (CUDA only)
- ``interleave_plus``: the Interleaving+ defense's pool scoring vs plain forward passes
- ``training``: LoRA steps with gates / kl / ldifs vs a plain step (``TrainBench``); peak memory with kl
- ``benchmarks/_monitor_row.py``: the EM monitor's row (``lora_step_monitor``)

Rows that share work (the extraction pair, the generation variants, the training variants) measure it once
in one round-robin over all of their callables (``Bench.shared``); each row then reports its own pair from
it. Every callable runs the workbench's public code path; the baselines are written in the family modules,
as plainly as possible. ``common`` holds the inputs they share. A new row is one more ``RowSpec`` here
(or ``benchmarks.register_row`` from outside).
"""

from __future__ import annotations

from .._harness import RowSpec, at_least, at_most, register_row
from .common import SYSTEM, text_of
from .decoding import (
    BANDWIDTH_GBS,
    decode_vs_bandwidth,
    measured_bandwidth,
    table_bandwidth,
    weight_bytes_per_step,
)
from .extraction import batched_vs_one_at_a_time, extraction_vs_forward
from .generation import alpha_sweep, generation_pair
from .interleave_plus import interleave_plus_scoring
from .training import TrainBench, lora_step_pair, peak_memory_kl

# the EM monitor's row (its own module, benchmarks/_monitor_row.py)
from .._monitor_row import monitor_overhead_row  # isort: skip

#: the shipped rows in report order (training rows after the inference rows: ``TrainBench`` releases the
#: inference model; variants added later go last so earlier reports keep their order)
SHIPPED: tuple[RowSpec, ...] = (
    RowSpec("extraction_vs_forward",
            "activation extraction (all layers, response mean) vs plain forward",
            extraction_vs_forward, target=at_least(0.8, ">= 0.8x plain throughput")),
    RowSpec("extraction_batched_vs_one_at_a_time",
            "batched extraction vs one example at a time (the persona_vectors way)",
            batched_vs_one_at_a_time,
            target={"cpu": at_least(5.0, ">= 5x faster"),
                    "cuda": at_least(2.5, ">= 2.5x faster at 256-token examples")}),
    RowSpec("steered_generation_1_layer", "steered generation, 1 layer, vs plain generation",
            generation_pair, {"variant": "steer_one"}, at_least(0.95, ">= 0.95x throughput")),
    RowSpec("steered_generation_all_layers", "steered generation, all layers, vs plain generation",
            generation_pair, {"variant": "steer_all"}, at_least(0.9, ">= 0.9x throughput")),
    RowSpec("gated_generation_suppressed",
            "gated generation (input_dependent, suppressed) vs plain generation",
            generation_pair, {"variant": "gated"}, at_least(0.95, ">= 0.95x throughput")),
    RowSpec("gated_generation_per_head_suppressed",
            "gated generation (per_head, suppressed) vs plain generation",
            generation_pair, {"variant": "gated_head"}, at_least(0.95, ">= 0.95x throughput")),
    RowSpec("alpha_sweep_batched_vs_sequential",
            "sweep of 8 alphas as one batched call vs 8 sequential calls",
            alpha_sweep, target={"cpu": at_least(2.0, ">= 2x faster"), "cuda": at_least(4.0, ">= 4x faster")}),
    RowSpec("decode_vs_bandwidth", "decode at batch 16 vs the memory-bandwidth bound",
            decode_vs_bandwidth, {"variant": "plain"}, devices=("cuda",)),
    RowSpec("decode_vs_bandwidth_steered", "steered decode step (all layers) vs the memory-bandwidth bound",
            decode_vs_bandwidth, {"variant": "steered"}, devices=("cuda",)),
    RowSpec("decode_vs_bandwidth_gated", "gated decode step (suppressed) vs the memory-bandwidth bound",
            decode_vs_bandwidth, {"variant": "gated"}, devices=("cuda",)),
    RowSpec("interleave_plus_scoring",
            "Interleaving+ scoring (K = 3 adapters) vs plain forward over the same tokens",
            interleave_plus_scoring, target=at_least(0.8, ">= 0.8x throughput per model pass")),
    RowSpec("lora_step_per_head_gates", "LoRA step + per_head gates vs plain LoRA step",
            lora_step_pair, {"variant": "per_head"}, at_most(1.05, "<= 1.05x time")),
    RowSpec("lora_step_input_dependent_gates", "LoRA step + input_dependent gates vs plain LoRA step",
            lora_step_pair, {"variant": "input_dependent"}),
    RowSpec("lora_step_kl", "LoRA step + kl vs plain LoRA step",
            lora_step_pair, {"variant": "kl"}, at_most(1.4, "<= 1.4x time")),
    RowSpec("lora_step_ldifs", "LoRA step + ldifs vs plain LoRA step",
            lora_step_pair, {"variant": "ldifs"}, at_most(1.4, "<= 1.4x time")),
    RowSpec("lora_step_monitor", "LoRA step + EM monitor (every 20 steps) vs plain LoRA step",
            monitor_overhead_row, target=at_most(1.1, "<= 1.1x time (monitor <= 10%)"),
            skip_quick_on=("cpu",)),
    RowSpec("peak_memory_kl", "peak memory of a LoRA step with kl vs plain",
            peak_memory_kl, target=at_most(1.1, "<= 1.1x")),
    RowSpec("decode_vs_bandwidth_eager", "decode at batch 16, eager (no compile), vs the bound",
            decode_vs_bandwidth, {"variant": "plain", "compile": False}, devices=("cuda",)),
    RowSpec("steered_generation_all_layers_compiled",
            "steered generation, all layers, compiled vs plain compiled",
            generation_pair, {"variant": "steer_all", "compile": True}, at_least(0.9, ">= 0.9x throughput"),
            devices=("cuda",)),
)  # fmt: skip

for _spec in SHIPPED:
    register_row(_spec, overwrite=True)
del _spec

__all__ = [
    "BANDWIDTH_GBS",
    "SHIPPED",
    "SYSTEM",
    "TrainBench",
    "decode_vs_bandwidth",
    "generation_pair",
    "measured_bandwidth",
    "table_bandwidth",
    "text_of",
    "weight_bytes_per_step",
]
