"""Training rows: one LoRA step of the training loop (``Trainer.accumulate`` + ``optimizer_step``) with a
component (per_head / input_dependent gates, the kl and ldifs defenses) against the plain LoRA step, all from one
``TrainBench`` and one round-robin; and the peak memory of a step with kl against a plain one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from workbench import WorkbenchError

from .._harness import Bench, Measured, Side, time_ratio
from .common import SYSTEM, text_of


@dataclass
class _Variant:
    plugins: list[Any] = field(default_factory=list)
    defenses: list[Any] = field(default_factory=list)
    policy_sites: set[str] = field(default_factory=set)
    reference_sites: set[str] = field(default_factory=set)
    parameters: int = 0


class TrainBench:
    """One ``Trainer`` (plain LoRA) to which every variant's component is added (``Trainer.add_component``);
    each step runs with only that variant's component active (``Trainer.activate``), so every variant trains the
    same model and LoRA weights: ``plain``, ``per_head`` / ``input_dependent`` gates, ``kl``, ``ldifs``.

    A step is the loop's own ``accumulate(step)`` + ``optimizer_step(step)`` on one micro-batch of
    ``train_batch`` sequences of exactly ``train_seq`` tokens. All variants' extra parameters sit in the one
    AdamW optimizer; parameters without a gradient in a step are skipped by AdamW and by the clipping.
    """

    VARIANTS = ("plain", "per_head", "input_dependent", "kl", "ldifs")

    def __init__(self, bench: Bench) -> None:
        from workbench.training import TrainConfig, Trainer, registered_components

        s = bench.sizes
        tok = bench.lm.tokenizer
        bench.release_lm()  # the trainer loads its own copy; keep one model in memory at a time
        folder = bench.folder("train")
        data = folder / "data.jsonl"
        with open(data, "w", encoding="utf-8") as fh:
            for i in range(max(4, 2 * s.train_batch)):
                row = {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": text_of(tok, 4, 100 + i)},
                        {"role": "assistant", "content": text_of(tok, s.train_seq + 16, 200 + i)},
                    ]
                }
                fh.write(json.dumps(row) + "\n")
        cfg = TrainConfig.from_dict(
            {
                "model": bench.spec,
                "device": str(bench.device),
                "dtype": str(bench.dtype).replace("torch.", ""),
                "data": [{"path": str(data)}],
                "optim": {
                    "batch_size": s.train_batch,
                    "grad_accum": 1,
                    "max_length": s.train_seq,
                    "max_steps": 1_000_000,
                    "warmup_steps": 0,
                    "shuffle": False,
                },
                "checkpoint_every": 0,
                "plots": False,
            },
            "bench",
        )
        self.trainer = Trainer(cfg, folder / "run", progress=False)
        self.trainer.setup()
        t = self.trainer
        self.lora_parameters = sum(p.numel() for p in t.params)
        self.variants: dict[str, _Variant] = {"plain": _Variant()}
        registry = registered_components()
        made = {
            "per_head": ("gates", {"kind": "per_head", "sites": ["attn"]}),
            "input_dependent": ("gates", {"kind": "input_dependent"}),
            "kl": ("kl", {}),
            "ldifs": ("ldifs", {}),
        }
        for name, (component, settings) in made.items():
            entry = registry[component]
            before = sum(p.numel() for p in t.params)
            comp = t.add_component(entry.build(settings), kind=entry.kind)
            policy, reference = t.sites_of(comp)
            self.variants[name] = _Variant(
                plugins=[comp] if entry.kind == "plugin" else [],
                defenses=[comp] if entry.kind == "defense" else [],
                policy_sites=policy,
                reference_sites=reference,
                parameters=sum(p.numel() for p in t.params) - before,
            )
        t.activate()  # plain LoRA until a step picks its variant
        self.step_no = 0
        idx = t.step_indices(0)
        self.tokens = sum(len(t.examples[i].ids) for i in idx)
        if any(t.examples[i].n_tokens == 0 for i in idx):
            raise WorkbenchError(
                f"train_seq={s.train_seq} leaves no assistant tokens after the chat template; use longer sequences"
            )
        self.sizes = {"batch": s.train_batch, "seq": s.train_seq, "grad_accum": 1, "lora_r": cfg.lora.r}

    def step(self, name: str) -> None:
        v, t = self.variants[name], self.trainer
        t.activate(*v.plugins, *v.defenses)
        t.accumulate(self.step_no)
        t.optimizer_step(self.step_no)
        self.step_no += 1


def _measure_training(bench: Bench) -> dict[str, Any]:
    tb: TrainBench = bench.shared("trainer", lambda: TrainBench(bench))
    times = bench.time({v: (lambda v=v: tb.step(v)) for v in TrainBench.VARIANTS})
    return {"times": times}


def lora_step_pair(bench: Bench, variant: str) -> Measured:
    tb: TrainBench = bench.shared("trainer", lambda: TrainBench(bench))
    m = bench.shared("training", lambda: _measure_training(bench))
    labels = {
        "per_head": "LoRA step + per_head gates (attn, every layer)",
        "input_dependent": "LoRA step + input_dependent gates (attn, every layer)",
        "kl": "LoRA step + kl (reference pass with the adapter disabled)",
        "ldifs": "LoRA step + ldifs (every 5th layer, reference pass)",
    }
    a = Side(labels[variant], m["times"][variant], tb.tokens)
    b = Side("plain LoRA step (accumulate + optimizer_step)", m["times"]["plain"], tb.tokens)
    extra = {"lora_parameters": tb.lora_parameters, "variant_parameters": tb.variants[variant].parameters}
    return Measured(a, b, time_ratio(a, b), "step time with / without", tb.sizes, extra)


def peak_memory_kl(bench: Bench) -> Measured:
    tb: TrainBench = bench.shared("trainer", lambda: TrainBench(bench))
    probe = bench.memory
    if not probe.available:
        raise WorkbenchError(f"peak memory is not measurable here: {probe.reason}")
    for v in ("plain", "kl"):  # optimizer state and caches exist before measuring
        tb.step(v)
    got: dict[str, list[dict[str, float]]] = {"plain": [], "kl": []}
    for r in range(2):
        for v in ("plain", "kl") if r % 2 == 0 else ("kl", "plain"):
            got[v].append(probe.measure(lambda v=v: tb.step(v)))

    def side(v: str, label: str) -> dict[str, Any]:
        peak = max(x["peak_gib"] for x in got[v])
        return {
            "label": label,
            "peak_gib": peak,
            "peaks_gib": [x["peak_gib"] for x in got[v]],
            "before_gib": got[v][0]["before_gib"],
            "step_delta_gib": max(x["delta_gib"] for x in got[v]),
            "unit": "GiB",
        }

    a, b = side("kl", "LoRA step + kl"), side("plain", "plain LoRA step")
    return Measured(
        a, b, a["peak_gib"] / b["peak_gib"], "peak memory with / without (whole process or device)",
        tb.sizes, {"method": probe.method},
        notes="peaks include the weights and everything else alive; step_delta_gib is the step's own rise",
    )  # fmt: skip
