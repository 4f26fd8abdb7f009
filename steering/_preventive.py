"""Preventive steering: steer along a persona vector only in the training forward pass.

Adding the trait direction while fine-tuning on data that would otherwise push the model along it
relieves the optimiser of moving there itself; at inference (``model.eval()``) the hooks do nothing, so
the fine-tuned model is evaluated unsteered. ``PreventiveSteering`` is the hook object;
``PreventiveSteeringDefense`` is the same thing as the training loop's ``preventive_steering`` defense,
configured from data (a vector file, layers, a coefficient; ``PreventiveSteeringSettings``). It is the one
definition: importing this module registers it with the loop.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench import WorkbenchError
from workbench.settings import from_mapping, help_of, setting, to_mapping
from workbench.training import Defense, TrainContext, register_component

from ._steerer import MODES, POSITIONS, Alpha, Layers, Steerer, as_loaded

log = logging.getLogger(__name__)


class PreventiveSteering(Steerer):
    """A :class:`Steerer` that acts only while the model is in training mode (``module.training``).

    >>> ps = PreventiveSteering(lm, evil, layers=[12], alpha=5.0)     # doctest: +SKIP
    >>> with ps.active_during_training():                              # doctest: +SKIP
    ...     loss = lm.model(**batch).loss; loss.backward()             # steered (model.train())
    ...     lm.model.eval(); lm.model.generate(...)                    # not steered

    For ``positions="response"`` set the assistant mask of each batch with :meth:`set_mask`.
    """

    def __init__(
        self,
        lm: Any,
        vector: Any,
        layers: Layers = "all",
        alpha: Alpha = 4.0,
        mode: str = "add",
        *,
        site: str | None = None,
        positions: str = "all",
        normalize: bool = False,
        mask: Tensor | None = None,
        training_only: bool = True,
    ):
        super().__init__(
            lm,
            vector,
            layers,
            alpha,
            site=site,
            positions=positions,
            mode=mode,
            normalize=normalize,
            mask=mask,
            training_only=training_only,
        )

    @contextlib.contextmanager
    def active_during_training(self) -> Iterator[PreventiveSteering]:
        """Install the hooks for the block; they steer only forward passes run in training mode."""
        with self:
            yield self


@dataclass
class PreventiveSteeringSettings:
    """The ``defenses: {preventive_steering: {...}}`` block (and ``PreventiveSteeringDefense``'s keywords)."""

    vector: str = setting("", help="persona vector file (.safetensors, from `workbench extract-vector`)")
    layers: list[int] = setting(
        help="layers whose hook_resid_post is steered (at least one)", default_factory=list
    )
    alpha: float = setting(4.0, help="coefficient multiplying the vector (raw units unless normalize)")
    statistic: str = setting("response_avg", help="which statistic of the vector file to use")
    mode: str = setting("add", help="add, ablate or ablate_add", choices=MODES)
    positions: str = setting(
        "all", help="all, prompt or response tokens; response needs the batch's labels", choices=POSITIONS
    )
    normalize: bool = setting(False, help="scale each layer's vector to unit norm before alpha")

    def __post_init__(self) -> None:
        if not self.vector:
            raise ValueError("'vector' (a persona vector file) is required")
        if isinstance(self.layers, int) and not isinstance(self.layers, bool):
            self.layers = [self.layers]
        if not self.layers:
            raise ValueError("'layers' must list at least one layer")
        self.layers = [int(x) for x in self.layers]
        self.alpha = float(self.alpha)
        if self.mode not in MODES:
            raise ValueError(f"unknown mode '{self.mode}'; expected {', '.join(MODES)}")
        if self.positions not in POSITIONS:
            raise ValueError(f"unknown positions '{self.positions}'; expected {', '.join(POSITIONS)}")


_FIELDS = tuple(f.name for f in fields(PreventiveSteeringSettings))


def _model_of(where: Any) -> Any:
    """The model of a training context (``ctx.lm``), or ``where`` itself (a ``LoadedModel`` or HF model)."""
    if isinstance(where, TrainContext):
        return where.lm
    inner = getattr(where, "lm", None) if not isinstance(where, torch.nn.Module) else None
    return inner if inner is not None else where


class PreventiveSteeringDefense(Defense):
    """The ``preventive_steering`` training defense: steer along a saved persona vector in training passes.

    The training loop calls :meth:`forward_context` around each training forward (and backward, which
    matters with gradient checkpointing) and gets a context manager that steers the model while it is in
    training mode. The vector file is read once, on first use, and checked against the model.

    Built from its settings (``PreventiveSteeringDefense(settings)``, as the loop does) or from keywords
    (``PreventiveSteeringDefense(vector="runs/x/evil.safetensors", layers=[12], alpha=5.0)``); the config
    round-trips with :meth:`from_dict` / :meth:`to_dict`. Registered as ``preventive_steering`` when
    ``steering`` is imported (the ``workbench.training`` entry point of this package).
    """

    name = "preventive_steering"
    Settings = PreventiveSteeringSettings

    def __init__(self, settings: PreventiveSteeringSettings | Mapping[str, Any] | None = None, **values: Any):
        if settings is None:
            try:
                settings = PreventiveSteeringSettings(**values)
            except (TypeError, ValueError) as exc:
                raise WorkbenchError(f"preventive_steering: {exc}") from None
        elif isinstance(settings, Mapping):
            settings = self._read(settings)
        super().__init__(settings)
        self._cache: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:  # the settings read as attributes: d.layers, d.alpha, ...
        if name in _FIELDS and "settings" in self.__dict__:
            return getattr(self.__dict__["settings"], name)
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.settings == self.settings  # type: ignore[attr-defined]

    __hash__ = object.__hash__

    # -- config as data ----------------------------------------------------------------------------
    @staticmethod
    def _read(data: Mapping[str, Any]) -> PreventiveSteeringSettings:
        return from_mapping(PreventiveSteeringSettings, dict(data), "preventive_steering")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreventiveSteeringDefense:
        return cls(cls._read(data))

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self.settings)

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text."""
        return help_of(PreventiveSteeringSettings)

    # -- the hook ----------------------------------------------------------------------------------
    def _vector(self, lm: Any) -> Any:
        s = self.settings
        key = f"vector:{Path(s.vector)}"
        if key not in self._cache:
            from ._load import load_vector

            self._cache[key] = load_vector(s.vector, s.statistic, lm)
            log.info("preventive steering: loaded %s (%s) for layers %s", s.vector, s.statistic, s.layers)
        return self._cache[key]

    def setup(self, model: Any) -> None:
        """Read the vector file and check it against the model now (else on the first forward).

        ``model``: the loop's ``TrainContext``, a ``LoadedModel`` or a HF / PEFT model."""
        self.steerer(_model_of(model))

    def steerer(self, model: Any) -> PreventiveSteering:
        """The hook object for ``model`` (a ``LoadedModel`` or a HF / PEFT model), built once per model."""
        model = _model_of(model)
        held = self._cache.get("steerer")
        if held is not None and held[0] is model:
            return held[1]
        lm = as_loaded(model)
        s = self.settings
        st = PreventiveSteering(
            lm, self._vector(lm), s.layers, s.alpha, s.mode, positions=s.positions, normalize=s.normalize
        )
        self._cache["steerer"] = (model, st)
        return st

    def forward_context(  # type: ignore[override]
        self, model_in_training: Any, batch: Mapping[str, Any] | None = None, mask: Tensor | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """A context manager that steers the model while it runs in training mode.

        ``model_in_training``: the loop's ``TrainContext``, or the ``LoadedModel`` or (PEFT-wrapped) HF model
        being trained. For ``positions`` other than ``all`` the position mask comes from ``mask`` ([batch,
        pos], True on assistant tokens) or else from ``batch["labels"] != -100`` (the assistant-only loss mask).
        """
        st = self.steerer(model_in_training)
        st.set_mask(None)
        positions = self.settings.positions
        if positions != "all":
            if mask is None and batch is not None and batch.get("labels") is not None:
                mask = batch["labels"] != -100
            if mask is None:
                raise WorkbenchError(
                    f"preventive_steering with positions='{positions}' needs the batch's labels or a mask"
                )
            st.set_mask(mask)
        return st.active_during_training()


def register_training_defense(register: Callable[[str, type], Any] | None = None) -> type:
    """Register :class:`PreventiveSteeringDefense` under ``"preventive_steering"`` in a defense registry.

    ``register(name, cls)`` is that registry's registration function; by default the training loop's
    (``workbench.training.register_component``, which importing ``steering`` has already called: the call
    is then a check that the entry is this class). Returns the class.
    """
    if register is None:
        register_component(
            PreventiveSteeringDefense.name,
            PreventiveSteeringSettings,
            PreventiveSteeringDefense,
            kind="defense",
        )
    else:
        register(PreventiveSteeringDefense.name, PreventiveSteeringDefense)
    return PreventiveSteeringDefense


register_training_defense()
