"""``preventive_steering``: adds a persona vector during training forward passes (not at inference).

The steering itself lives in the ``steering`` package (``steering._preventive.PreventiveSteeringDefense``),
which ``workbench`` must not import at import time; this adapter imports it in ``setup``. Interface used::

    obj = PreventiveSteeringDefense(vector=..., layers=..., alpha=..., statistic=..., mode=..., ...)
    obj.setup(lm)                    # optional: load and check the vector against the model
    obj.forward_context(lm, batch)   # context manager that steers the training forward passes inside it

``lm`` is the ``LoadedModel`` being trained (``lm.model`` is the PEFT model, in training mode); ``batch``
is a mapping with ``input_ids``, ``attention_mask`` and ``labels`` (-100 outside assistant tokens).
Settings the steering class does not accept are not passed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
from dataclasses import dataclass
from typing import Any

from workbench._errors import WorkbenchError

from .._config import _f
from .._plugins import Defense, register_defense

STEERING_MODULE = "steering._preventive"
STEERING_CLASS = "PreventiveSteeringDefense"


@dataclass
class PreventiveSteeringSettings:
    vector: str = _f("", help="persona vector file (.safetensors, from `workbench extract-vector`)")
    layers: list[int] = _f(
        help="layers whose hook_resid_post is steered (at least one)", default_factory=list
    )
    alpha: float = _f(4.0, help="coefficient multiplying the vector")
    statistic: str = _f("response_avg", help="which statistic of the vector file to use")
    mode: str = _f("add", help="add, ablate or ablate_add (see the steering package)")
    positions: str = _f("all", help="all, prompt or response tokens")
    normalize: bool = _f(False, help="scale each layer's vector to unit norm before alpha")

    def __post_init__(self) -> None:
        if not self.vector:
            raise ValueError("'vector' (a persona vector file) is required")
        if not self.layers:
            raise ValueError("'layers' must list at least one layer")


@register_defense("preventive_steering")
class PreventiveSteeringAdapter(Defense):
    Settings = PreventiveSteeringSettings

    def setup(self, ctx: Any) -> None:
        try:
            mod = importlib.import_module(STEERING_MODULE)
        except ModuleNotFoundError as exc:
            raise WorkbenchError(
                f"defenses.preventive_steering needs the 'steering' package ({STEERING_MODULE}.{STEERING_CLASS}): {exc}"
            ) from exc
        cls = getattr(mod, STEERING_CLASS, None)
        if cls is None:
            raise WorkbenchError(f"{STEERING_MODULE} has no {STEERING_CLASS}")
        given = dataclasses.asdict(self.settings)
        if dataclasses.is_dataclass(cls):
            accepted = {f.name for f in dataclasses.fields(cls) if f.init}
            given = {k: v for k, v in given.items() if k in accepted}
        self.impl = cls(**given)
        if hasattr(self.impl, "setup"):
            self.impl.setup(ctx.lm)

    def forward_context(self, ctx: Any, batch: Any) -> contextlib.AbstractContextManager[Any]:
        return self.impl.forward_context(ctx.lm, batch)
