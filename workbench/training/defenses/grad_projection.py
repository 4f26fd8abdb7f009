"""``grad_projection``: the step's gradient is projected orthogonal to an alignment-data gradient.

The projection runs once per optimizer step on the complete gradient (all micro-batches accumulated and
summed over processes), so it is the same whatever ``grad_accum`` and the process count.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from workbench.settings import setting

from .._losses import loss_numerator, token_nll
from .._plugins import Defense, register_defense
from ._common import SourceSettings


@dataclass
class GradProjectionSettings(SourceSettings):
    mode: str = setting(
        "per_tensor",
        help="per_tensor: project each parameter tensor on its own; flat: one projection of the whole gradient",
        choices=("per_tensor", "flat"),
    )
    when: str = setting(
        "always",
        help="always: remove the alignment component every step (the rule the audit found in the method's "
        "paper and code); conflict: only where <g_task, g_align> < 0 (PCGrad; the pre-audit default)",
        choices=("always", "conflict"),
    )
    batch_size: int | None = setting(
        None, help="alignment examples per step over all processes (null: the task's global batch size)"
    )
    micro_batch_size: int | None = setting(None, help="alignment micro-batch size (null: optim.batch_size)")
    reduction: str = setting(
        "token_mean", help="alignment loss reduction", choices=("token_mean", "sequence_mean")
    )


def project_gradients(
    task: list[Tensor],
    align: list[Tensor],
    mode: str = "per_tensor",
    when: str = "always",
    eps: float = 1e-30,
) -> list[Tensor]:
    """``g - (<g, a> / |a|^2) a`` per tensor or over the concatenation of all tensors.

    ``when="always"`` projects every tensor (every gradient, in ``flat`` mode) whose alignment part is
    nonzero, so the result has ``<g', a> = 0``. With ``when="conflict"`` (PCGrad) a tensor (or the whole
    gradient) is changed only when ``<g, a> < 0``, and left as it is otherwise.
    """
    if when not in ("always", "conflict"):
        raise ValueError(f"unknown projection rule {when!r} (always, conflict)")

    def proj(g: Tensor, a: Tensor, dot: Tensor, nn: Tensor) -> Tensor:
        return g - (dot / (nn + eps)) * a

    if mode == "per_tensor":
        out = []
        for g, a in zip(task, align, strict=True):
            dot = (g.double() * a.double()).sum()
            nn = (a.double() * a.double()).sum()
            if nn > 0 and (when == "always" or dot < 0):
                out.append(proj(g.double(), a.double(), dot, nn).to(g.dtype))
            else:
                out.append(g.clone())
        return out
    if mode == "flat":
        dot = sum((g.double() * a.double()).sum() for g, a in zip(task, align, strict=True))
        nn = sum((a.double() * a.double()).sum() for a in align)
        if not (nn > 0 and (when == "always" or dot < 0)):
            return [g.clone() for g in task]
        return [proj(g.double(), a.double(), dot, nn).to(g.dtype) for g, a in zip(task, align, strict=True)]
    raise ValueError(f"unknown projection mode {mode!r} (per_tensor, flat)")


def _cos(x: list[Tensor], y: list[Tensor]) -> float:
    dot = sum(float((a.double() * b.double()).sum()) for a, b in zip(x, y, strict=True))
    nx = sum(float(a.double().pow(2).sum()) for a in x) ** 0.5
    ny = sum(float(b.double().pow(2).sum()) for b in y) ** 0.5
    return dot / (nx * ny) if nx > 0 and ny > 0 else 0.0


@register_defense("grad_projection")
class GradProjectionDefense(Defense):
    Settings = GradProjectionSettings

    def setup(self, ctx: Any) -> None:
        s, o = self.settings, ctx.config.optim
        self.step_size = s.batch_size or o.batch_size * o.grad_accum * ctx.world_size
        self.micro_size = s.micro_batch_size or o.batch_size
        self.stream = ctx.stream(ctx.load_rows(s.source, s.n, s.seed), self.step_size, s.seed)
        self.last_alignment_grad: list[Tensor] | None = None

    def alignment_gradient(self, ctx: Any, params: list[torch.nn.Parameter]) -> list[Tensor]:
        """The alignment loss gradient for this step (summed over processes), left in no ``p.grad``."""
        s = self.settings
        for p in params:
            p.grad = None
        rows = self.stream.batch(ctx.step)
        exs = ctx.examples(rows)
        if s.reduction == "token_mean":
            denom = sum(e.n_tokens for e in exs)
        else:
            denom = sum(1 for e in exs if e.n_tokens > 0)
        denom = max(1, denom)
        chunks = [
            list(range(i, min(i + self.micro_size, len(rows)))) for i in range(0, len(rows), self.micro_size)
        ]
        for j, chunk in enumerate(chunks):
            if j % ctx.world_size != ctx.rank:
                continue
            batch = ctx.batch_from_examples([exs[i] for i in chunk], [rows[i] for i in chunk])
            out = ctx.forward(batch)
            nll, mask = token_nll(out.logits, batch.labels)
            (loss_numerator(nll, mask, s.reduction) / denom).backward()
        ctx.sync_gradients()
        grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        for p in params:
            p.grad = None
        return grads

    def on_backward(self, ctx: Any) -> None:
        s = self.settings
        params = [p for _, p in ctx.trainable_parameters()]
        task = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        align = self.alignment_gradient(ctx, params)
        new = project_gradients(task, align, s.mode, s.when)
        for p, g in zip(params, new, strict=True):
            p.grad = g
        self.last_alignment_grad = align
        ctx.log("grad_projection_cos_before", _cos(task, align))
        ctx.log("grad_projection_cos_after", _cos(new, align))
