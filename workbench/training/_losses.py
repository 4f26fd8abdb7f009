"""Loss math shared by the loop and the defenses. Masks and reductions are explicit arguments.

Convention: ``labels`` is ``[batch, pos]`` with ``-100`` outside the tokens that count; the logits at
position ``t`` predict token ``t + 1``, so every per-token quantity below is ``[batch, pos - 1]`` and is
paired with ``mask = labels[:, 1:] != -100``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100


def shifted_mask(labels: Tensor) -> Tensor:
    """``[batch, pos-1]`` bool: positions whose next token is in the loss."""
    return labels[:, 1:] != IGNORE


def token_nll(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token negative log-likelihood ``[batch, pos-1]`` (0 where masked) and the mask."""
    mask = shifted_mask(labels)
    target = labels[:, 1:].clamp_min(0)
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -logp.gather(-1, target[..., None]).squeeze(-1)
    return nll * mask, mask


def token_logprobs(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token log-probability of the labelled tokens ``[batch, pos-1]`` (0 where masked) and the mask."""
    nll, mask = token_nll(logits, labels)
    return -nll, mask


def masked_reduce(values: Tensor, mask: Tensor, how: str) -> Tensor:
    """Mean of ``values`` over ``mask``: ``token_mean`` (all tokens pooled) or ``sequence_mean``
    (mean of per-sequence means over sequences with at least one token). No tokens: 0."""
    m = mask.to(values.dtype)
    if how == "token_mean":
        return (values * m).sum() / m.sum().clamp_min(1.0)
    if how == "sequence_mean":
        per_seq_n = m.sum(dim=1)
        keep = per_seq_n > 0
        per_seq = (values * m).sum(dim=1) / per_seq_n.clamp_min(1.0)
        return per_seq[keep].sum() / keep.sum().clamp_min(1)
    if how == "sum":
        return (values * m).sum()
    raise ValueError(f"unknown reduction {how!r} (token_mean, sequence_mean, sum)")


def loss_numerator(values: Tensor, mask: Tensor, how: str) -> Tensor:
    """What a micro-batch contributes to a batch mean before dividing by the batch's count:
    the token sum (``token_mean``) or the sum of per-sequence means (``sequence_mean``)."""
    m = mask.to(values.dtype)
    if how == "token_mean":
        return (values * m).sum()
    if how == "sequence_mean":
        per_seq_n = m.sum(dim=1)
        return ((values * m).sum(dim=1) / per_seq_n.clamp_min(1.0)).sum()
    raise ValueError(f"unknown reduction {how!r}")


def kl_per_token(logits_model: Tensor, logits_ref: Tensor, direction: str) -> Tensor:
    """Per-position KL divergence ``[batch, pos]`` between the two next-token distributions.

    ``forward``: KL(ref || model) = sum p_ref (log p_ref - log p_model) (mass-covering);
    ``reverse``: KL(model || ref) = sum p_model (log p_model - log p_ref) (mode-seeking).
    """
    lm = torch.log_softmax(logits_model.float(), dim=-1)
    lr = torch.log_softmax(logits_ref.float(), dim=-1)
    if direction == "forward":
        return (lr.exp() * (lr - lm)).sum(-1)
    if direction == "reverse":
        return (lm.exp() * (lm - lr)).sum(-1)
    raise ValueError(f"unknown KL direction {direction!r} (forward, reverse)")


def masked_kl(logits_model: Tensor, logits_ref: Tensor, labels: Tensor, direction: str, how: str) -> Tensor:
    """``masked_reduce`` of ``kl_per_token`` over the positions whose next token is in the loss.

    The log-softmaxes over the vocabulary are computed only at those positions (assistant tokens): the same
    values as computing them everywhere and masking, for a fraction of the cost on chat data.
    """
    mask = shifted_mask(labels)  # [batch, pos-1]
    picked = kl_per_token(logits_model[:, :-1][mask], logits_ref[:, :-1][mask], direction)
    values = picked.new_zeros(mask.shape).masked_scatter(mask, picked)
    return masked_reduce(values, mask, how)


def dpo_loss(
    policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Tensor:
    """Direct preference optimisation: mean of ``-log sigmoid(beta * ((pc - rc) - (pr - rr)))``.

    Arguments are ``[pairs]`` summed log-probabilities of the chosen / rejected answers under the policy
    and the reference model.
    """
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()
