"""Preventive steering: steer along a persona vector only in the training forward pass.

Adding the trait direction while fine-tuning on data that would otherwise push the model along it
relieves the optimiser of moving there itself; at inference (``model.eval()``) the hooks do nothing, so
the fine-tuned model is evaluated unsteered. ``PreventiveSteering`` is the hook object;
``PreventiveSteeringDefense`` is the same thing as a training-loop defense configured from data (a vector
file, layers, a coefficient).
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from torch import Tensor

from workbench import WorkbenchError

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


def _help(text: str, **kw: Any) -> Any:
    return field(metadata={"help": text}, **kw)


@dataclass
class PreventiveSteeringDefense:
    """Training-loop defense: preventive steering along a saved persona vector.

    The training loop calls :meth:`forward_context` around each training forward (and backward, which
    matters with gradient checkpointing) and gets a context manager that steers the model while it is in
    training mode. The vector file is read once, on first use, and checked against the model.

    Config (a dict or YAML mapping, e.g. ``{"vector": "runs/x/evil.safetensors", "layers": [12],
    "alpha": 5.0}``) round-trips with :meth:`from_dict` / :meth:`to_dict`.
    """

    name: ClassVar[str] = "preventive_steering"

    vector: str = _help("Path of a persona-vector file (safetensors, from `workbench extract-vector`).")
    layers: list[int] = _help("Layers whose hook_resid_post is steered.", default_factory=list)
    alpha: float = _help("Coefficient multiplying the vector (raw units unless normalize).", default=4.0)
    statistic: str = _help("Which statistic of the file to use.", default="response_avg")
    mode: str = _help("add, ablate or ablate_add.", default="add")
    positions: str = _help(
        "all, prompt or response; response needs the batch's labels (or assistant mask).", default="all"
    )
    normalize: bool = _help("Scale each layer's vector to unit norm before alpha.", default=False)
    _cache: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.vector:
            raise WorkbenchError("preventive_steering: 'vector' (a persona-vector file) is required")
        if not self.layers:
            raise WorkbenchError("preventive_steering: 'layers' must list at least one layer")
        if isinstance(self.layers, int):
            self.layers = [self.layers]
        self.layers = [int(x) for x in self.layers]
        self.alpha = float(self.alpha)
        if self.mode not in MODES:
            raise WorkbenchError(
                f"preventive_steering: unknown mode '{self.mode}'; expected {', '.join(MODES)}"
            )
        if self.positions not in POSITIONS:
            raise WorkbenchError(
                f"preventive_steering: unknown positions '{self.positions}'; expected {', '.join(POSITIONS)}"
            )

    # -- config as data ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreventiveSteeringDefense:
        known = {f.name for f in fields(cls) if f.init}
        unknown = sorted(set(data) - known)
        if unknown:
            raise WorkbenchError(
                f"preventive_steering: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: copy.copy(getattr(self, f.name)) for f in fields(self) if f.init}

    @classmethod
    def help(cls) -> dict[str, str]:
        """Field name -> help text."""
        return {f.name: f.metadata.get("help", "") for f in fields(cls) if f.init}

    # -- the hook ----------------------------------------------------------------------------------
    def _vector(self, lm: Any) -> Any:
        key = f"vector:{Path(self.vector)}"
        if key not in self._cache:
            from ._load import load_vector

            self._cache[key] = load_vector(self.vector, self.statistic, lm)
            log.info(
                "preventive steering: loaded %s (%s) for layers %s", self.vector, self.statistic, self.layers
            )
        return self._cache[key]

    def setup(self, model: Any) -> None:
        """Read the vector file and check it against ``model`` now (else on the first forward)."""
        self.steerer(model)

    def steerer(self, model: Any) -> PreventiveSteering:
        """The hook object for ``model`` (a ``LoadedModel`` or a HF / PEFT model), built once per model."""
        held = self._cache.get("steerer")
        if held is not None and held[0] is model:
            return held[1]
        lm = as_loaded(model)
        st = PreventiveSteering(
            lm,
            self._vector(lm),
            self.layers,
            self.alpha,
            self.mode,
            positions=self.positions,
            normalize=self.normalize,
        )
        self._cache["steerer"] = (model, st)
        return st

    def forward_context(
        self, model_in_training: Any, batch: Mapping[str, Any] | None = None, mask: Tensor | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """A context manager that steers ``model_in_training`` while it runs in training mode.

        ``model_in_training``: the ``LoadedModel`` or the (PEFT-wrapped) HF model being trained.
        For ``positions`` other than ``all`` the position mask comes from ``mask`` ([batch, pos], True on
        assistant tokens) or else from ``batch["labels"] != -100`` (the assistant-only loss mask).
        """
        st = self.steerer(model_in_training)
        st.set_mask(None)
        if self.positions != "all":
            if mask is None and batch is not None and batch.get("labels") is not None:
                mask = batch["labels"] != -100
            if mask is None:
                raise WorkbenchError(
                    f"preventive_steering with positions='{self.positions}' needs the batch's labels or a mask"
                )
            st.set_mask(mask)
        return st.active_during_training()


def register_training_defense(register: Callable[[str, type], Any] | None = None) -> type:
    """Register :class:`PreventiveSteeringDefense` under ``"preventive_steering"`` in a defense registry.

    ``register(name, cls)`` is the registry's registration function. By default the training loop's
    registry is used, where ``workbench.training`` ships an adapter under that name which builds this class
    from the config and calls :meth:`PreventiveSteeringDefense.forward_context`; then nothing more is
    needed. Returns the class.
    """
    if register is None:
        try:
            from workbench.training import register_defense, registered_defenses
        except ImportError as exc:
            raise WorkbenchError(
                "no defense registry found (workbench.training.register_defense); pass register="
            ) from exc
        if PreventiveSteeringDefense.name in registered_defenses():
            return PreventiveSteeringDefense  # the training package's own adapter already drives this class
        register = register_defense
    register(PreventiveSteeringDefense.name, PreventiveSteeringDefense)
    return PreventiveSteeringDefense
