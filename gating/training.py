"""The ``gates`` plugin of the training loop (``workbench train``): gates learned with LoRA, or alone.

Config block (all keys optional)::

    gates:
      kind: input_dependent     # input_dependent | low_rank | per_channel | per_head
      sites: [attn]             # attn (before the output projection) and/or mlp (MLP output)
      layers: null              # null = every layer, or a list of layer indices
      lr: 0.01                  # learning rate of the gate parameters
      l1: 0.0                   # weight of mean |g - 1| (over channels and non-padding tokens)
      rank: 8                   # rank of low_rank gates
    lora: null                  # (the loop's key) null trains the gates alone, base frozen

The trained gates are written to ``<run_dir>/gates.safetensors`` (kind ``gates``; metadata: gate kind,
sites, layers, rank, model fingerprint). Importing this module registers the plugin with the loop
(``register_component``); ``workbench.training`` imports it by itself when a config has a ``gates:`` block,
through this package's ``workbench.training`` entry point.

Gates are attached (alpha 1) around every policy forward pass and absent from reference passes (KL to the
reference model and the like compare against the base model without LoRA and without gates).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor

from workbench import WorkbenchError, runs
from workbench.settings import Bounds, from_mapping, setting, to_mapping
from workbench.training import TrainPlugin, register_component

from ._gate import GATE_SITES, gate_class
from ._gateset import GateHandle, GateSet

GATES_FILE = runs.GATES_FILE  # the run directory's names are workbench.runs'


@dataclass
class GatesConfig:
    """The ``gates:`` block of a training config."""

    kind: str = setting("input_dependent", help="gate kind (see gating.GATE_KINDS)")
    sites: tuple[str, ...] = setting(("attn",), help="attn and/or mlp")
    layers: list[int] | None = setting(None, help="gated layers; null = all")
    lr: float = setting(1e-2, help="learning rate of the gates", bounds=Bounds(0, 1e6))
    l1: float = setting(0.0, help="weight of the sparsity penalty mean |g - 1|", bounds=Bounds(0, 1e6))
    rank: int = setting(8, help="rank of low_rank gates", bounds=Bounds(1, 1_000_000))

    def __post_init__(self) -> None:
        self.sites = (self.sites,) if isinstance(self.sites, str) else tuple(self.sites)
        for s in self.sites:
            if s not in GATE_SITES:
                raise ValueError(f"'sites': unknown site '{s}' (choose from {list(GATE_SITES)})")
        gate_class(self.kind)  # unknown kind -> clear error
        if self.layers is not None:
            self.layers = [int(x) for x in self.layers]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, where: str = "config") -> GatesConfig:
        """Validate a ``gates:`` block; errors name the key (``gates.l1``) and the accepted values."""
        return from_mapping(cls, dict(raw or {}), where, prefix="gates.")

    def as_dict(self) -> dict[str, Any]:
        return to_mapping(self)


class GatesPlugin(TrainPlugin):
    """Trains a ``GateSet`` inside the loop: the gates are attached at alpha 1 around every policy pass."""

    name = "gates"
    Settings = GatesConfig

    def __init__(
        self, settings: Mapping[str, Any] | GatesConfig | None = None, gates: GateSet | None = None
    ) -> None:
        """``gates``: train these (made for the loop's model) instead of identity gates built in ``setup``."""
        self.config = settings if isinstance(settings, GatesConfig) else GatesConfig.from_dict(settings)
        self.settings = self.config
        self.gates: GateSet | None = gates
        self.lm: Any = None
        self._handle: GateHandle | None = None
        self._inputs: dict[str, Tensor | None] = {}

    def setup(self, ctx: Any) -> None:
        """Identity gates for the loop's model (``ctx.lm``, LoRA attached or not), seeded by ``ctx.seed`` (or the
        gates given to the constructor)."""
        self.lm = ctx.lm
        c = self.config
        if self.gates is not None:
            self.gates.train()
            return
        self.gates = GateSet.create(
            self.lm,
            kind=c.kind,
            sites=c.sites,
            layers=c.layers,
            rank=c.rank,
            seed=int(getattr(ctx, "seed", 0) or 0),
        )
        self.gates.train()

    def parameters(self) -> list[Any]:
        """One parameter group: the gates at ``gates.lr``, without weight decay."""
        return [
            {"params": list(self._require().parameters()), "lr": float(self.config.lr), "weight_decay": 0.0}
        ]

    @contextlib.contextmanager
    def forward_context(self, ctx: Any, batch: Any = None) -> Iterator[None]:
        self._inputs = {}
        self._handle = self._attach(ctx)
        try:
            yield
        finally:
            handle, self._handle = self._handle, None
            if handle is not None:
                self._inputs.update(handle.inputs)
                handle.detach()

    @contextlib.contextmanager
    def reference_context(self, ctx: Any) -> Iterator[None]:
        """Gates off: they are only attached inside ``forward_context``; if one is open, lift it meanwhile."""
        handle = self._handle
        if handle is None or not handle.attached:
            yield
            return
        self._inputs.update(handle.inputs)
        handle.detach()
        self._handle = None
        try:
            yield
        finally:
            self._handle = self._attach(ctx)

    def _attach(self, ctx: Any) -> GateHandle:
        lm = getattr(ctx, "lm", None) or self.lm
        return self._require().attach(lm, alpha=1.0, track_inputs=self.config.l1 > 0)

    def extra_loss(self, ctx: Any, batch: Any, outputs: Any = None) -> dict[str, Tensor]:
        """``{"gates_l1": l1 * mean |g - 1|}`` over channels and non-padding tokens (when ``l1 > 0``)."""
        if self.config.l1 <= 0:
            return {}
        mask = (
            batch.get("attention_mask")
            if isinstance(batch, Mapping)
            else getattr(batch, "attention_mask", None)
        )
        penalty = self._require().sparsity(self._inputs, mask)
        self._inputs = {}
        return {"gates_l1": self.config.l1 * penalty}

    def save(self, run_dir: str | Path) -> Path:  # type: ignore[override]  # (the loop ignores the path)
        """Write ``run_dir/gates.safetensors`` (with the training settings in its metadata)."""
        return self._require().save(Path(run_dir) / GATES_FILE, metadata={"training": self.config.as_dict()})

    def _require(self) -> GateSet:
        if self.gates is None:
            raise WorkbenchError("the gates plugin was used before setup()")
        return self.gates


register_component("gates", GatesConfig, GatesPlugin, kind="plugin")
