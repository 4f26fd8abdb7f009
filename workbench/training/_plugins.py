"""What plugs into the training loop: defenses and plugins share one small interface, ``TrainPlugin``.

Two registries:

- **defenses** (``register_defense(name)`` class decorator): named in the config's ``defenses:`` mapping,
  each with a ``Settings`` dataclass validated when the config is read;
- **plugins** (``register_plugin(name, factory)``): a config block of the same name (``gates:``,
  ``monitor:``) is passed, as a plain dict, to ``factory(settings) -> TrainPlugin``.

Packages that build on ``workbench`` (``steering``, ``gating``) register their own entries. ``workbench``
never imports them at import time: when the config names an entry that is not registered, the modules in
``PLUGIN_MODULES`` and in the ``WORKBENCH_PLUGINS`` environment variable (comma-separated module names) are
imported once, and each registers what it provides.

The interface for the gating package (``gating/training.py``)::

    from workbench.training import TrainPlugin, register_plugin

    class GatesPlugin(TrainPlugin):
        def __init__(self, settings: dict): ...           # the config's `gates:` block (kind, sites, layers, lr, l1)
        def setup(self, ctx): ...                         # build gate modules for ctx.lm (on ctx.device)
        def parameters(self): return [(gate_params, lr)]  # or torch-style dicts {"params", "lr", "weight_decay"}
        def forward_context(self, ctx, batch): ...        # context manager that applies the gates (every policy pass)
        def reference_context(self, ctx): ...             # context manager that turns gates off (reference passes)
        def extra_loss(self, ctx, batch, outputs): ...    # {"gates_l1": l1 * mean|g - 1|}
        def state_dict(self) / load_state_dict(state): ...# tensors, for resumable checkpoints
        def save(self, run_dir): ...                      # write run_dir / "gates.safetensors"

    register_plugin("gates", GatesPlugin)
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from workbench._errors import WorkbenchError

if TYPE_CHECKING:
    from ._context import Batch, ForwardOutput, TrainContext

log = logging.getLogger(__name__)

#: modules imported (once) when a config names an unregistered defense or plugin
PLUGIN_MODULES: tuple[str, ...] = ("steering.defense", "gating.training", "probes.monitor")
ENV_VAR = "WORKBENCH_PLUGINS"

ParamGroups = list[tuple[list[nn.Parameter], float | None] | dict[str, Any]]


@dataclass
class NoSettings:
    """A defense without settings."""


class TrainPlugin:
    """One job in the training loop. Every hook is optional; the defaults do nothing.

    Call order: ``transform_data`` (before LoRA is attached, on the base model), ``setup``, then
    ``on_train_start`` once per call of ``Trainer.run``; per optimizer step and micro-batch:
    ``forward_context`` around every policy forward pass, ``extra_loss`` after the task forward; after the
    micro-batches' backward passes (and the gradient all-reduce): ``on_backward``; after the optimizer
    step and its metrics row: ``on_step_end``; at the end ``save`` then ``finalize`` (main process only).
    """

    name: str = ""
    Settings: type = NoSettings

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings if settings is not None else self.Settings()

    def transform_data(self, ctx: TrainContext, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Return the training rows (add, drop, rewrite); ``ctx.lm`` is the base model without LoRA."""
        return rows

    def setup(self, ctx: TrainContext) -> None:
        """Prepare (load data, build modules, request hook sites). LoRA is attached by now."""

    def parameters(self) -> ParamGroups:
        """Extra trainable parameters: ``[(params, lr or None)]`` or torch param-group dicts."""
        return []

    def forward_context(self, ctx: TrainContext, batch: Batch) -> contextlib.AbstractContextManager[Any]:
        """A context manager active during every policy (trained-model) forward pass."""
        return contextlib.nullcontext()

    def reference_context(self, ctx: TrainContext) -> contextlib.AbstractContextManager[Any]:
        """A context manager that removes this plugin's effect for reference passes (e.g. gates off)."""
        return contextlib.nullcontext()

    def extra_loss(self, ctx: TrainContext, batch: Batch, outputs: ForwardOutput) -> dict[str, Tensor]:
        """Loss terms for this micro-batch (each a scalar mean over the micro-batch; each is logged)."""
        return {}

    def on_backward(self, ctx: TrainContext) -> None:
        """Edit the accumulated, all-reduced gradients (``p.grad``) before clipping and the step."""

    def on_train_start(self, ctx: TrainContext, step: int) -> None:
        """The loop is about to run from ``step`` (0, or the step of the checkpoint a ``--resume`` loaded).

        Called on every process, before the first step of this call. Observers (the EM monitor) take their
        start-of-training measurement here and, on resume, drop what they logged after ``step``."""

    def on_step_end(self, ctx: TrainContext, step: int) -> None:
        """After optimizer step ``step`` (1-based count of completed steps) and its metrics row.

        Called on every process. Must not change what training computes: no gradients, no RNG draws
        that training would see, the model back in training mode. ``ctx.request_stop(reason)`` asks the
        loop to write a checkpoint and end the run cleanly (``--resume`` continues it)."""

    def state_dict(self) -> dict[str, Tensor]:
        """Tensors to store in checkpoints (besides parameters returned by ``parameters()``)."""
        return {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore what ``state_dict`` returned."""

    def save(self, run_dir: Path) -> None:
        """Write final artifacts into the run directory."""

    def finalize(self, ctx: TrainContext, run_dir: Path) -> None:
        """Post-hoc work on the finished run (e.g. project the saved adapter)."""

    def limit_steps(self, ctx: TrainContext, steps: int) -> int:
        """Optionally lower the total number of optimizer steps."""
        return steps


class _Wrapped(TrainPlugin):
    """A plugin object that implements only some hooks (duck-typed): the others do nothing."""

    def __init__(self, obj: Any, name: str) -> None:
        self.obj = obj
        self.name = getattr(obj, "name", None) or name
        self.settings = getattr(obj, "settings", None)

    def __getattribute__(self, attr: str) -> Any:
        if attr in _HOOKS:
            fn = getattr(object.__getattribute__(self, "obj"), attr, None)
            if fn is not None:
                return fn
        return object.__getattribute__(self, attr)


_HOOKS = (
    "transform_data",
    "setup",
    "parameters",
    "forward_context",
    "reference_context",
    "extra_loss",
    "on_backward",
    "on_train_start",
    "on_step_end",
    "state_dict",
    "load_state_dict",
    "save",
    "finalize",
    "limit_steps",
)


def as_plugin(obj: Any, name: str) -> TrainPlugin:
    """``obj`` itself if it is a ``TrainPlugin``, else a wrapper giving its missing hooks the defaults."""
    if isinstance(obj, TrainPlugin):
        obj.name = obj.name or name
        return obj
    return _Wrapped(obj, name)


class Defense(TrainPlugin):
    """Base class of the in-training defenses (a ``TrainPlugin`` registered by name)."""


_DEFENSES: dict[str, type[Defense]] = {}
_PLUGINS: dict[str, Callable[[dict[str, Any]], TrainPlugin]] = {}
_DISCOVERED = False


def register_defense(name: str, cls: type | None = None, *, overwrite: bool = False) -> Any:
    """Make a ``TrainPlugin`` subclass available as ``defenses: {name: {...}}``.

    Use as a class decorator (``@register_defense("kl")``) or call ``register_defense("kl", KLDefense)``.
    Its ``Settings`` dataclass (fields with help text) validates the config entry.
    """

    def deco(cls: type[Defense]) -> type[Defense]:
        if name in _DEFENSES and not overwrite and _DEFENSES[name] is not cls:
            raise WorkbenchError(
                f"a defense named '{name}' is already registered ({_DEFENSES[name].__qualname__})"
            )
        if not (isinstance(cls, type) and issubclass(cls, TrainPlugin)):
            raise WorkbenchError(f"defense '{name}' must be a TrainPlugin subclass")
        if not dataclasses.is_dataclass(cls.Settings):
            raise WorkbenchError(f"defense '{name}': Settings must be a dataclass")
        cls.name = name
        _DEFENSES[name] = cls
        return cls

    return deco(cls) if cls is not None else deco


def register_plugin(
    name: str, factory: Callable[[dict[str, Any]], TrainPlugin], *, overwrite: bool = False
) -> None:
    """Make ``factory`` build the plugin configured by the config block ``name:`` (e.g. ``gates``)."""
    if name in _PLUGINS and not overwrite and _PLUGINS[name] is not factory:
        raise WorkbenchError(f"a training plugin named '{name}' is already registered")
    _PLUGINS[name] = factory


def _load_builtin() -> None:
    from . import defenses  # noqa: F401  (registers the built-in defenses)


def plugin_modules() -> list[str]:
    extra = [m.strip() for m in os.environ.get(ENV_VAR, "").replace(":", ",").split(",") if m.strip()]
    return list(PLUGIN_MODULES) + extra


def discover_plugins(modules: Iterable[str] | None = None) -> list[str]:
    """Import plugin modules (they call the register functions); returns those that were found."""
    found = []
    for mod in modules if modules is not None else plugin_modules():
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if mod == missing or mod.startswith(missing + "."):
                log.debug("plugin module %s not installed", mod)
                continue
            raise WorkbenchError(f"plugin module '{mod}' failed to import: {exc}") from exc
        found.append(mod)
    return found


def _discover_once() -> None:
    global _DISCOVERED
    if not _DISCOVERED:
        _DISCOVERED = True
        discover_plugins()


def get_defense(name: str, where: str = "config") -> type[Defense]:
    """The defense class registered as ``name`` (plugin modules are searched if needed)."""
    _load_builtin()
    if name not in _DEFENSES:
        _discover_once()
    if name not in _DEFENSES:
        raise WorkbenchError(
            f"{where}: unknown defense '{name}'; registered defenses: {', '.join(sorted(_DEFENSES))} "
            f"(plugin modules searched: {', '.join(plugin_modules())}; add yours to ${ENV_VAR})"
        )
    return _DEFENSES[name]


def get_plugin(name: str, where: str = "config") -> Callable[[dict[str, Any]], TrainPlugin]:
    """The factory registered for the config block ``name`` (plugin modules are searched if needed)."""
    if name not in _PLUGINS:
        _discover_once()
    if name not in _PLUGINS:
        raise WorkbenchError(
            f"{where}: the '{name}:' block needs a training plugin registered as '{name}', and none is "
            f"(searched: {', '.join(plugin_modules())}); is its package installed?"
        )
    return _PLUGINS[name]


def registered_defenses() -> dict[str, type[Defense]]:
    _load_builtin()
    return dict(_DEFENSES)
