"""Training: one LoRA fine-tuning loop with pluggable in-training EM defenses, gates and checkpoints.

``train(config)`` runs a ``TrainConfig`` (YAML round-trip, ``--set`` overrides) and writes a run directory.
Defenses are ``Defense`` subclasses registered with ``register_defense(name)``; other packages (gates,
monitors) plug in with ``register_plugin(name, factory)``. See ``docs/training.md``.
"""

from ._config import DataSource, TrainConfig
from ._context import ForwardOutput, TrainContext
from ._data import Batch
from ._loop import Trainer, TrainingStopped, train
from ._plugins import Defense, TrainPlugin, register_defense, register_plugin, registered_defenses

__all__ = [
    "Batch",
    "DataSource",
    "Defense",
    "ForwardOutput",
    "TrainConfig",
    "TrainContext",
    "TrainPlugin",
    "Trainer",
    "TrainingStopped",
    "register_defense",
    "register_plugin",
    "registered_defenses",
    "train",
]
