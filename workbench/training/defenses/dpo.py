"""``dpo``: a DPO loss on alignment preference pairs (chosen = aligned answer, rejected = misaligned one)
against the reference model (the same model with the adapter disabled)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from workbench.data import pair_prompt
from workbench.settings import setting

from .._data import teacher_forced_batch
from .._losses import dpo_loss, token_logprobs
from .._plugins import Defense, register_defense
from ._common import SourceSettings


@dataclass
class DPOSettings(SourceSettings):
    source: str = setting(
        "contrastive_pairs",
        help="pairs JSONL (question, aligned, misaligned) or a shipped dataset with those keys",
    )
    weight: float = setting(1.0, help="multiplier of the DPO loss")
    beta: float = setting(0.1, help="DPO inverse temperature")
    batch_size: int | None = setting(None, help="pairs per micro-batch (null: optim.batch_size)")


@register_defense("dpo")
class DPODefense(Defense):
    Settings = DPOSettings

    def setup(self, ctx: Any) -> None:
        s = self.settings
        self.stream = ctx.stream(ctx.load_rows(s.source, s.n, s.seed, kind="pairs"), s.batch_size, s.seed)

    def extra_loss(self, ctx: Any, batch: Any, outputs: Any) -> dict[str, Tensor]:
        s = self.settings
        pairs = self.stream.batch(ctx.global_micro)
        qs = [pair_prompt(p) for p in pairs]  # system + earlier turns when the row has them
        answers = [p["aligned"] for p in pairs] + [p["misaligned"] for p in pairs]
        tf = teacher_forced_batch(ctx.lm.tokenizer, qs + qs, answers, ctx.device)
        pol_lp, mask = token_logprobs(ctx.forward(tf).logits, tf.labels)
        ref_lp, _ = token_logprobs(ctx.reference_forward(tf).logits, tf.labels)
        pol, ref = pol_lp.sum(-1), ref_lp.sum(-1)  # [2 * pairs] summed answer log-probs
        n = len(pairs)
        loss = dpo_loss(pol[:n], pol[n:], ref[:n], ref[n:], s.beta)
        margin = ((pol[:n] - ref[:n]) - (pol[n:] - ref[n:])).detach()
        ctx.log("dpo_reward_margin", float(s.beta * margin.mean()))
        ctx.log("dpo_accuracy", float((margin > 0).float().mean()))
        return {"dpo": s.weight * loss}
