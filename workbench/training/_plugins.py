"""What plugs into the training loop: components (defenses and plugins) and their one registry.

Every component is one registry entry, ``register_component(name, settings_cls, component_cls, kind=...)``,
pairing a name with its settings dataclass (fields made with ``workbench.settings.setting``) and its
``TrainPlugin`` class (as peft's ``register_peft_method`` pairs a method's config and model classes):

- ``kind="defense"``: configured under the config's ``defenses:`` mapping (``defenses: {kl: {...}}``);
- ``kind="plugin"``: configured by a top-level config block named ``block`` (default: the name), e.g.
  ``gates:`` or ``monitor:``. Plugins also shape the model outside training passes (evaluation, reference
  passes lift them with ``reference_context``).

``workbench`` names none of the packages that provide components. They are found through the entry points
of the group ``workbench.training`` (``[project.entry-points."workbench.training"]`` in a package's
``pyproject.toml``; the value is the module that registers the component when imported) and the modules
listed in the ``WORKBENCH_PLUGINS`` environment variable (comma-separated), imported once, the first time
a config names something not registered yet. ``register_defense`` and ``register_plugin`` are the two
older spellings of ``register_component`` and keep working.

The interface of a plugin (``gating/training.py`` is one)::

    from workbench.training import TrainPlugin, register_component

    class GatesPlugin(TrainPlugin):
        Settings = GatesConfig                            # the `gates:` block (kind, sites, layers, lr, l1)
        def __init__(self, settings: GatesConfig): ...
        def setup(self, ctx): ...                         # build gate modules for ctx.lm (on ctx.device)
        def parameters(self): return [(gate_params, lr)]  # or torch-style dicts {"params", "lr", "weight_decay"}
        def forward_context(self, ctx, batch): ...        # context manager that applies the gates (every policy pass)
        def reference_context(self, ctx): ...             # context manager that turns gates off (reference passes)
        def extra_loss(self, ctx, batch, outputs): ...    # {"gates_l1": l1 * mean|g - 1|}
        def state_dict(self) / load_state_dict(state): ...# tensors, for resumable checkpoints
        def save(self, run_dir): ...                      # write run_dir / "gates.safetensors"

    register_component("gates", GatesConfig, GatesPlugin, kind="plugin")
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

#: the entry-point group whose entries (``name = "module"``) register training components when imported
ENTRY_POINT_GROUP = "workbench.training"
ENV_VAR = "WORKBENCH_PLUGINS"
KINDS = ("defense", "plugin")

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


@dataclass(frozen=True)
class Component:
    """One registry entry: a component's name, kind, settings dataclass and class (or factory).

    ``settings`` is None for a plugin registered with a bare factory (``register_plugin``): its block is then
    passed as a plain dict. ``resume_free``: the block only observes training, so its settings may change
    between a run and its ``--resume``."""

    name: str
    settings: type | None
    cls: Callable[[Any], Any]
    kind: str = "defense"
    block: str | None = None
    resume_free: bool = False

    @property
    def key(self) -> str:
        """Where the config names it: the defense name, or the plugin's top-level block."""
        return self.block or self.name

    def read_settings(self, data: Any, where: str = "config") -> Any:
        """The settings object for config ``data`` (a mapping), validated; a plain dict without a class."""
        from workbench.settings import from_mapping

        prefix = f"defenses.{self.name}." if self.kind == "defense" else f"{self.key}."
        if self.settings is None:
            if data is not None and not isinstance(data, dict):
                raise WorkbenchError(f"{where}: '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
            return dict(data or {})
        return from_mapping(self.settings, data or {}, where, prefix=prefix)

    def build(self, settings: Any) -> TrainPlugin:
        """The component for a settings object (or a config mapping, validated first)."""
        if self.settings is not None and not isinstance(settings, self.settings):
            settings = self.read_settings(settings)
        return as_plugin(self.cls(settings), self.name)


_COMPONENTS: dict[str, Component] = {}
_DISCOVERED = False


def register_component(
    name: str,
    settings_cls: type | None,
    component_cls: Callable[[Any], Any],
    *,
    kind: str = "defense",
    block: str | None = None,
    resume_free: bool = False,
    overwrite: bool = False,
) -> Component:
    """Register a training component; a name already taken by another class is refused.

    ``component_cls(settings)`` builds it from a ``settings_cls`` object (a dataclass; None: a plugin block
    passed as a plain dict). A defense is configured as ``defenses: {name: {...}}``, a plugin by the
    top-level block ``block`` (default ``name``). Registering the same pair again is a no-op.
    """
    if kind not in KINDS:
        raise WorkbenchError(f"component '{name}': kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if settings_cls is not None and not dataclasses.is_dataclass(settings_cls):
        raise WorkbenchError(f"{kind} '{name}': its settings class must be a dataclass")
    if kind == "defense":
        if not (isinstance(component_cls, type) and issubclass(component_cls, TrainPlugin)):
            raise WorkbenchError(f"defense '{name}' must be a TrainPlugin subclass")
        if settings_cls is None:
            raise WorkbenchError(f"defense '{name}': Settings must be a dataclass")
        block = None
    entry = Component(name, settings_cls, component_cls, kind, block, resume_free)
    held = _COMPONENTS.get(name) or next((c for c in _COMPONENTS.values() if c.key == entry.key), None)
    if held is not None and not overwrite and (held.cls is not component_cls or held.kind != kind):
        what = getattr(held.cls, "__qualname__", repr(held.cls))
        raise WorkbenchError(
            f"a training {'defense' if kind == 'defense' else 'plugin'} named '{name}' is already registered ({what})"
        )
    if held is not None and overwrite:
        _COMPONENTS.pop(held.name, None)
    if kind == "defense" or isinstance(component_cls, type) and issubclass(component_cls, TrainPlugin):
        component_cls.name = name  # type: ignore[attr-defined]
    _COMPONENTS[name] = entry
    return entry


def register_defense(name: str, cls: type | None = None, *, overwrite: bool = False) -> Any:
    """Make a ``TrainPlugin`` subclass available as ``defenses: {name: {...}}`` (``register_component`` with
    ``kind="defense"`` and the class's ``Settings``).

    Use as a class decorator (``@register_defense("kl")``) or call ``register_defense("kl", KLDefense)``.
    """

    def deco(cls: type[Defense]) -> type[Defense]:
        if not (isinstance(cls, type) and issubclass(cls, TrainPlugin)):
            raise WorkbenchError(f"defense '{name}' must be a TrainPlugin subclass")
        register_component(name, cls.Settings, cls, kind="defense", overwrite=overwrite)
        return cls

    return deco(cls) if cls is not None else deco


def register_plugin(
    name: str, factory: Callable[[Any], TrainPlugin], *, overwrite: bool = False, resume_free: bool = False
) -> None:
    """Make ``factory`` build the plugin configured by the config block ``name:`` (``register_component``
    with ``kind="plugin"``; the factory's ``Settings`` dataclass, if it has one, validates the block)."""
    found = getattr(factory, "Settings", None)
    settings = (
        found
        if isinstance(found, type) and dataclasses.is_dataclass(found) and found is not NoSettings
        else None
    )
    register_component(
        name, settings, factory, kind="plugin", block=name, resume_free=resume_free, overwrite=overwrite
    )


def _load_builtin() -> None:
    from . import defenses  # noqa: F401  (registers the built-in defenses)


def entry_point_modules() -> list[tuple[str, str]]:
    """``(name, module)`` of the ``workbench.training`` entry points of the installed packages, by name."""
    from importlib.metadata import entry_points

    return sorted(
        {(ep.name, ep.value.split(":", 1)[0].strip()) for ep in entry_points(group=ENTRY_POINT_GROUP)}
    )


def plugin_modules() -> list[str]:
    """The modules searched for components: the entry points', then those in ``$WORKBENCH_PLUGINS``."""
    extra = [m.strip() for m in os.environ.get(ENV_VAR, "").replace(":", ",").split(",") if m.strip()]
    out: list[str] = []
    for mod in [m for _, m in entry_point_modules()] + extra:
        if mod not in out:
            out.append(mod)
    return out


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


def registered_components(kind: str | None = None) -> dict[str, Component]:
    """Every registered component (after discovery), by name; ``kind`` keeps one kind."""
    _load_builtin()
    _discover_once()
    return {n: c for n, c in sorted(_COMPONENTS.items()) if kind is None or c.kind == kind}


def get_defense(name: str, where: str = "config") -> type[Defense]:
    """The defense class registered as ``name`` (plugin modules are searched if needed)."""
    return get_component(name, where).cls  # type: ignore[return-value]


def get_component(name: str, where: str = "config") -> Component:
    """The defense registered as ``name`` (plugin modules are searched if needed)."""
    _load_builtin()
    entry = _COMPONENTS.get(name)
    if entry is None or entry.kind != "defense":
        _discover_once()
        entry = _COMPONENTS.get(name)
    if entry is None or entry.kind != "defense":
        names = sorted(n for n, c in _COMPONENTS.items() if c.kind == "defense")
        raise WorkbenchError(
            f"{where}: unknown defense '{name}'; registered defenses: {', '.join(names)} "
            f"(plugin modules searched: {', '.join(plugin_modules())}; add yours to ${ENV_VAR})"
        )
    return entry


def plugin_block(key: str) -> Component | None:
    """The plugin registered for the top-level config block ``key`` (plugin modules searched if needed)."""
    found = next((c for c in _COMPONENTS.values() if c.kind == "plugin" and c.key == key), None)
    if found is None and not _DISCOVERED:
        _discover_once()
        found = next((c for c in _COMPONENTS.values() if c.kind == "plugin" and c.key == key), None)
    return found


def block_names() -> list[str]:
    """Top-level config keys that belong to plugins: the registered blocks and the names of entry points
    that registered no defense (a plugin whose package does not load keeps its name, so its block is
    reported at setup as needing the plugin, not as an unknown key)."""
    _load_builtin()
    _discover_once()
    names = {c.key for c in _COMPONENTS.values() if c.kind == "plugin"}
    names |= {n for n, _ in entry_point_modules() if n not in _COMPONENTS}
    return sorted(names)


def get_plugin(name: str, where: str = "config") -> Component:
    """The plugin registered for the config block ``name`` (plugin modules are searched if needed)."""
    found = plugin_block(name)
    if found is None:
        raise WorkbenchError(
            f"{where}: the '{name}:' block needs a training plugin registered as '{name}', and none is "
            f"(searched: {', '.join(plugin_modules())}); is its package installed?"
        )
    return found


def registered_defenses() -> dict[str, type[Defense]]:
    return {n: c.cls for n, c in registered_components("defense").items()}  # type: ignore[misc]
