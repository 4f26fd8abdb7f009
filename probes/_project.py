"""Projections onto a persona vector: of raw activations, per answer token, and per answer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from workbench import ModelLike, WorkbenchError
from workbench.chat import Message

from ._activations import answer_token_values
from ._vector import PersonaVector


def unit_direction(
    vector: PersonaVector | Tensor, layer: int | None = None, d_model: int | None = None
) -> Tensor:
    """The unit-norm ``[d_model]`` direction of ``vector`` (at ``layer`` for a ``PersonaVector``)."""
    if isinstance(vector, PersonaVector):
        if layer is None:
            raise WorkbenchError(
                "a layer is needed to project onto a PersonaVector (it has one row per layer)"
            )
        v = vector.layer(layer)
    else:
        v = torch.as_tensor(vector)
        if v.dim() != 1:
            raise WorkbenchError(f"expected a [d_model] direction, got shape {tuple(v.shape)}")
    if d_model is not None and v.shape[-1] != d_model:
        raise WorkbenchError(f"vector width {v.shape[-1]} does not match the model's d_model {d_model}")
    norm = v.float().norm()
    if not torch.isfinite(norm) or norm == 0:
        raise WorkbenchError("cannot project onto a zero (or non-finite) vector")
    return v.float() / norm


def project(activations: Tensor, vector: Tensor) -> Tensor:
    """Scalar projection onto the unit vector: ``activations @ vector / |vector|``.

    ``activations``: ``[..., d_model]``; ``vector``: ``[d_model]``. Returns ``[...]`` (float32).
    """
    u = unit_direction(vector)
    if activations.shape[-1] != u.shape[0]:
        raise WorkbenchError(
            f"activation width {activations.shape[-1]} does not match the vector's width {u.shape[0]}"
        )
    return activations.float() @ u.to(activations.device)


def _check_model(lm: ModelLike, vector: PersonaVector | Tensor, layer: int) -> Tensor:
    lm.sites.check_layer(layer)
    if isinstance(vector, PersonaVector):
        vector.check_model(d_model=lm.d_model)
        if vector.n_layers != lm.n_layers:
            raise WorkbenchError(
                f"'{vector.trait}' vector has {vector.n_layers} layers but the model has {lm.n_layers}"
            )
    return unit_direction(vector, layer, d_model=lm.d_model)


def token_projections(
    lm: ModelLike,
    vector: PersonaVector | Tensor,
    layer: int,
    prompts: Sequence[str | list[Message]],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
) -> list[Tensor]:
    """Per answer token, the projection of ``blocks.{layer}.hook_resid_post`` onto the unit vector.

    Each prompt is a user string or a message list (chat-formatted with the generation prompt); the answer
    is teacher-forced after it. Returns one ``[n_answer_tokens]`` tensor per example (batched, padding-aware).
    """
    u = _check_model(lm, vector, layer)
    return answer_token_values(
        lm, u, layer, prompts, answers, batch_size=batch_size, system=system, progress=progress
    )


def answer_projections(
    lm: ModelLike,
    vector: PersonaVector | Tensor,
    layer: int,
    prompts: Sequence[str | list[Message]],
    answers: Sequence[str],
    *,
    batch_size: int = 16,
    system: str | None = None,
    progress: bool = False,
) -> Tensor:
    """Mean projection over each answer's tokens: ``[n_examples]`` (NaN for an empty answer)."""
    per_token = token_projections(
        lm, vector, layer, prompts, answers, batch_size=batch_size, system=system, progress=progress
    )
    return torch.stack([t.mean() if t.numel() else torch.tensor(float("nan")) for t in per_token])
