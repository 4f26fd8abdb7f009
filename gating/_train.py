"""``train_gates``: a small self-contained trainer for gates alone or gates plus a trainable PEFT model.

The full training loop (``workbench train`` with the ``gates`` plugin) is the way for real runs; this one
exists for tests, notebooks and quick studies. Loss: token-mean cross-entropy on assistant tokens only
(prompt and padding excluded), plus ``l1 * mean |g - 1|`` when ``l1 > 0``.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench import WorkbenchError
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


def _is_peft(model: Any) -> bool:
    return hasattr(model, "peft_config")


def train_gates(
    lm: Any,
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

    ``train_model=None`` trains the model's trainable parameters too when ``lm.model`` is a PEFT model (LoRA
    and gates together); otherwise only the gates learn and the base stays frozen. The model's
    ``requires_grad`` flags and train/eval mode are restored afterwards.
    """
    if gates is None:
        gates = GateSet.create(lm, kind=kind, sites=sites, layers=layers, rank=rank, seed=seed)
    model = lm.model
    if train_model is None:
        train_model = _is_peft(model)
    model_params = [p for p in model.parameters() if p.requires_grad] if train_model else []
    if train_model and not model_params:
        raise WorkbenchError(
            "train_model=True but the model has no trainable parameters (wrap it with LoRA first)"
        )
    flags = [(p, p.requires_grad) for p in model.parameters()]
    was_training = model.training
    groups = [{"params": list(gates.parameters()), "lr": lr, "weight_decay": 0.0}]
    if model_params:
        groups.append({"params": model_params, "lr": model_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups)
    data = tokenize_rows(lm.tokenizer, rows, max_length)
    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    rng = random.Random(seed)
    n_batches = (len(data) + batch_size - 1) // batch_size
    total = epochs * n_batches
    gates.train()
    try:
        for p, _ in flags:
            p.requires_grad_(train_model and p.requires_grad)
        if train_model:
            model.train()
        step = 0
        bar = tqdm(total=total, desc="training gates", disable=not progress, unit="batch")
        for epoch in range(epochs):
            order = list(range(len(data)))
            rng.shuffle(order)
            for b in range(n_batches):
                batch = collate(
                    [data[i] for i in order[b * batch_size : (b + 1) * batch_size]], pad, lm.device
                )
                with gates.attached(lm, alpha=1.0, track_inputs=l1 > 0) as handle:
                    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                    ce = lm_loss(out.logits, batch["labels"])
                    reg = gates.sparsity(handle, batch["attention_mask"]) if l1 > 0 else ce.new_zeros(())
                loss = (ce + l1 * reg) / grad_accum
                loss.backward()
                if (b + 1) % grad_accum == 0 or b + 1 == n_batches:
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                gates.history.append({"step": step, "epoch": epoch, "loss": ce.item(), "l1": reg.item()})
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{ce.item():.3f}")
        bar.close()
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)
        gates.eval()
        opt.zero_grad(set_to_none=True)
    return gates
