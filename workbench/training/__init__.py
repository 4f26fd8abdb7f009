"""Training: one LoRA fine-tuning loop with pluggable in-training EM defenses, gates and checkpoints.

``train(config)`` runs a ``TrainConfig`` (YAML round-trip, ``--set`` overrides) and writes a run directory.
Defenses and plugins are training components: each registers itself with ``register_component(name,
settings_cls, component_cls, kind=...)`` (or the older ``register_defense`` / ``register_plugin``) from its
own package, found through the ``workbench.training`` entry points. ``Trainer.add_component`` adds one to a
trainer. See ``docs/training.md``.
"""

from ._config import DataSource, TrainConfig
from ._context import ForwardOutput, TrainContext
from ._data import Batch, split_prompt_answer
from ._loop import Trainer, TrainingStopped, train
from ._lora import compact_targets, resolve_target_modules
from ._losses import token_nll
from ._plugins import (
    Component,
    Defense,
    TrainPlugin,
    register_component,
    register_defense,
    register_plugin,
    registered_components,
    registered_defenses,
)

__all__ = [
    "Batch",
    "Component",
    "DataSource",
    "Defense",
    "ForwardOutput",
    "TrainConfig",
    "TrainContext",
    "TrainPlugin",
    "Trainer",
    "TrainingStopped",
    "compact_targets",
    "register_component",
    "register_defense",
    "register_plugin",
    "registered_components",
    "registered_defenses",
    "resolve_target_modules",
    "split_prompt_answer",
    "token_nll",
    "train",
]
