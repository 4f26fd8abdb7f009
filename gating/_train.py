"""``train_gates``: gates (alone or with a PEFT model's LoRA) trained on chat rows by the one training loop.

``train_gates`` runs ``workbench.training.Trainer`` with the ``gates`` plugin on an already loaded model, for
notebooks and quick studies (``workbench train`` with a ``gates:`` block is the way for real runs). Loss: the
loop's token-mean cross-entropy on assistant tokens only (prompt and padding excluded), plus
``l1 * mean |g - 1|`` when ``l1 > 0``. ``tokenize_rows``, ``collate`` and ``lm_loss`` are small helpers for
single forward passes outside the loop.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from workbench import DEFAULT_MODEL, ModelLike, WorkbenchError
from workbench.chat import assistant_mask

from ._gateset import GateSet

log = logging.getLogger(__name__)


def tokenize_rows(
    tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(input ids, labels) per chat row; labels are -100 outside assistant tokens; cut to ``max_length``."""
    out = []
    for i, row in enumerate(rows):
        if "messages" not in row:
            raise WorkbenchError(f"training row {i} has no 'messages'")
        ids, mask = assistant_mask(tokenizer, row["messages"])
        ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask[1:]):
            log.warning("training row %d has no assistant token within %d tokens; skipped", i, max_length)
            continue
        out.append((ids, [t if m else -100 for t, m in zip(ids, mask, strict=True)]))
    if not out:
        raise WorkbenchError("no training row has assistant tokens to learn from")
    return out


def collate(
    examples: Sequence[tuple[list[int], list[int]]], pad_id: int, device: torch.device
) -> dict[str, torch.Tensor]:
    n = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    mask = torch.zeros((len(examples), n), dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        labels[i, : len(y)] = torch.tensor(y)
        mask[i, : len(x)] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device), "labels": labels.to(device)}


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Token-mean cross-entropy; position t predicts token t+1; -100 labels are ignored."""
    return torch.nn.functional.cross_entropy(
        logits[:, :-1].float().reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100
    )


def train_gates(
    lm: ModelLike,
    rows: Sequence[dict[str, Any]],
    *,
    gates: GateSet | None = None,
    kind: str = "input_dependent",
    sites: Sequence[str] = ("attn",),
    layers: Sequence[int] | None = None,
    rank: int = 8,
    lr: float = 1e-2,
    model_lr: float = 2e-4,
    train_model: bool | None = None,
    l1: float = 0.0,
    epochs: int = 1,
    batch_size: int = 8,
    grad_accum: int = 1,
    max_length: int = 256,
    seed: int = 0,
    progress: bool = False,
) -> GateSet:
    """Train gates on chat ``rows`` (assistant-only loss) and return them; ``gates.history`` holds the losses.

    A thin call of the training loop (``workbench.training.Trainer`` with the ``gates`` plugin) on the
    already loaded ``lm``, in a temporary run directory: no weight decay, no clipping, no warm-up, the loop's
    linear decay of the learning rates. ``train_model=None`` trains the model's trainable parameters too
    (at ``model_lr``) when ``lm.model`` is a PEFT model (LoRA and gates together); otherwise only the gates
    learn and the base stays frozen. The model's ``requires_grad`` flags and train/eval mode are restored
    afterwards. ``gates.history`` gets one row per optimizer step: ``step`` (0-based), ``epoch``, ``loss``
    (the task loss) and ``l1`` (mean |g - 1|, when ``l1 > 0``).
    """
    from workbench.training import TrainConfig, Trainer

    from .training import GatesConfig, GatesPlugin

    model = lm.model
    if train_model is None:
        train_model = hasattr(model, "peft_config")
    flags = [(p, p.requires_grad) for p in model.parameters()]
    if train_model and not any(flag for _, flag in flags):
        raise WorkbenchError(
            "train_model=True but the model has no trainable parameters (wrap it with LoRA first)"
        )
    settings = GatesConfig(kind=kind, sites=tuple(sites), layers=None if layers is None else list(layers),
                           lr=lr, l1=l1, rank=rank)  # fmt: skip
    if gates is not None:
        settings = GatesConfig(kind=gates.kind, sites=tuple(gates.sites), layers=list(gates.layers),
                               lr=lr, l1=l1, rank=gates.rank)  # fmt: skip
    was_training = model.training
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "rows.jsonl"
        data.write_text("".join(json.dumps(dict(r)) + "\n" for r in rows), encoding="utf-8")
        cfg = TrainConfig.from_dict(
            {
                "model": DEFAULT_MODEL,  # not loaded: the trainer trains ``lm``
                "device": str(lm.device),
                "data": [{"path": str(data)}],
                "lora": None,
                "optim": {"lr": model_lr, "weight_decay": 0.0, "warmup_steps": 0, "grad_accum": grad_accum,
                          "max_grad_norm": None, "epochs": epochs, "batch_size": batch_size,
                          "max_length": max_length, "seed": seed},
                "checkpoint_every": 0,
                "plots": False,
            },
            "train_gates",
            complete=False,
        )  # fmt: skip
        plugin = GatesPlugin(settings, gates=gates)
        try:
            if not train_model:
                for p, _ in flags:
                    p.requires_grad_(False)
            trainer = Trainer(cfg, Path(tmp) / "run", progress=progress, lm=lm)
            trainer.add_component(plugin, kind="plugin")
            trainer.setup()
            trainer.run()
            rows_out = [
                json.loads(line) for line in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()
            ]
        finally:
            for p, flag in flags:
                p.requires_grad_(flag)
            model.train(was_training)
    out = plugin.gates
    assert out is not None
    out.eval()
    for r in rows_out:
        out.history.append(
            {
                "step": r["step"] - 1,
                "epoch": int((r["step"] - 1) // trainer.steps_per_epoch),
                "loss": r["task_loss"],
                "l1": r.get("gates_l1", 0.0) / l1 if l1 > 0 else 0.0,
            }
        )
    return out
