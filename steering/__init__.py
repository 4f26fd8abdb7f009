"""Activation steering: add, ablate or replace a direction at inference and during training.

``Steerer`` steers inside a ``with`` block (generation, scoring or training); ``SteeringSpec`` describes
one vector of several; ``PreventiveSteering`` / ``PreventiveSteeringDefense`` steer only the training
forward pass (the defense is the training loop's ``preventive_steering``, registered on import); ``sweep`` measures the effect per layer and coefficient. ``nnsight_steer`` and ``tl_hooks``
apply the same edit inside nnsight traces and TransformerLens hooks; ``nnsight_model`` wraps a model for
nnsight for one ``with`` block without changing it. See ``docs/steering.md``.
"""

from ._interop import nnsight_model, nnsight_steer, tl_hooks
from ._load import load_vector
from ._preventive import (
    PreventiveSteering,
    PreventiveSteeringDefense,
    PreventiveSteeringSettings,
    register_training_defense,
)
from ._steerer import Steerer, SteeringSpec
from ._sweep import SweepResult, sweep

__all__ = [
    "PreventiveSteering",
    "PreventiveSteeringDefense",
    "PreventiveSteeringSettings",
    "Steerer",
    "SteeringSpec",
    "SweepResult",
    "load_vector",
    "nnsight_model",
    "nnsight_steer",
    "register_training_defense",
    "sweep",
    "tl_hooks",
]
