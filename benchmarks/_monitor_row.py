"""The EM monitor's row (``lora_step_monitor``): a LoRA step plus the monitor's pass amortised over its interval.

``monitor_overhead`` measures both in one short monitored run; ``monitor_overhead_row`` reports them as a
bench row. The row is listed (in report order) with the other shipped rows in ``benchmarks/rows``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._harness import Bench, Measured


def monitor_overhead(
    model: str = "random:smollm2-135m",
    *,
    every: int = 20,  # probes.monitor.DEFAULT_EVERY
    steps: int = 4,
    device: str | None = None,
    dtype: str | None = None,
    batch_size: int = 2,
    grad_accum: int = 8,
    max_length: int = 256,
    layers: Sequence[int] | None = None,
    out: str | Path | None = None,
) -> dict[str, Any]:
    """Share of training time the monitor takes at interval ``every``, measured side by side.

    Trains ``steps`` LoRA steps on shipped ``advice_medical`` rows with the monitor measuring after every
    step (a random unit persona vector at ``layers``, default: the middle layer; the default probe sets),
    and returns ``{"share": median pass seconds / (every * median step seconds), ...}``. Weight values do
    not matter for the timing, so ``random:<shape>`` models serve (the ``workbench bench`` row). ``out``
    keeps the run (``<out>/run``) and the vector; default: a temporary directory.
    """
    import tempfile

    import torch

    from probes import PersonaVector
    from probes.monitor import Monitor, read_monitor
    from workbench import RunDir
    from workbench.training import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(out) if out is not None else Path(tmp)
        run = root / "run"
        run.mkdir(parents=True, exist_ok=True)
        cfg = TrainConfig.from_dict(
            {
                "model": model,
                "device": device,
                "dtype": dtype,
                "data": [{"name": "advice_medical", "n": max(8, steps * batch_size * grad_accum), "seed": 0}],
                "optim": {
                    "batch_size": batch_size,
                    "grad_accum": grad_accum,
                    "max_steps": steps,
                    "max_length": max_length,
                    "warmup_steps": 0,
                },
                "checkpoint_every": 0,
                "plots": False,
            }
        )
        trainer = Trainer(cfg, run, progress=False)
        trainer.setup()
        fp = trainer.lm.fingerprint
        gen = torch.Generator().manual_seed(0)
        vec = PersonaVector(
            torch.randn(fp.n_layers, fp.d_model, generator=gen), trait="random", fingerprint=fp
        )
        path = vec.save(root / "random_vector.safetensors")
        chosen = list(layers) if layers is not None else [fp.n_layers // 2]
        monitor = Monitor({"every": 1, "vectors": [{"path": str(path), "layers": chosen}]})
        trainer.add_component(monitor, kind="plugin")  # set up now; it has no parameters to optimize
        trainer.run()
        log = read_monitor(run)
        step_rows = RunDir(run).metrics()
    passes = sorted(float(r["monitor_seconds"]) for r in log.rows)
    step_secs = sorted(float(r["seconds"]) for r in step_rows)
    pass_s = passes[len(passes) // 2]
    step_s = step_secs[len(step_secs) // 2]
    return {
        "model": model,
        "every": every,
        "seconds_per_pass": pass_s,
        "seconds_per_step": step_s,
        "share": pass_s / (every * step_s),
        "steps": steps,
        "signals": log.signals,
    }


def monitor_overhead_row(bench: Bench, every: int = 20) -> Measured:
    """LoRA step with the EM monitor (one pass every ``every`` steps, amortised) vs a plain LoRA step.

    ``monitor_overhead`` trains a few steps with the monitor measuring after each, on the bench's model
    shape, at the training defaults (batch 2 x 8, 256 tokens) and the monitor's default probe sets;
    A = step + pass / every, B = step (medians).
    """
    steps = 2 if bench.quick else 4
    r = monitor_overhead(
        bench.spec,
        every=every,
        steps=steps,
        device=str(bench.device),
        dtype=str(bench.dtype).replace("torch.", ""),
    )
    step, per_pass = float(r["seconds_per_step"]), float(r["seconds_per_pass"])
    a = {
        "label": f"LoRA step + monitor (1 pass / {every} steps)",
        "median_s": round(step + per_pass / every, 6),
        "work": 1,
        "unit": "steps",
    }
    b = {"label": "plain LoRA step", "median_s": round(step, 6), "work": 1, "unit": "steps"}
    return Measured(
        a,
        b,
        1.0 + float(r["share"]),
        "time ratio: (step + pass / every) / step",
        {"every": every, "steps": steps},
        {"seconds_per_pass": per_pass, "share": r["share"]},
        notes="passes and steps are timed in one run (not interleaved pairs)",
    )
