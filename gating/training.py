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
(``workbench.training`` imports it by itself when a config has a ``gates:`` block).

Gates are attached (alpha 1) around every policy forward pass and absent from reference passes (KL to the
reference model and the like compare against the base model without LoRA and without gates).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from workbench import WorkbenchError
from workbench.training import TrainPlugin, register_plugin

from ._gate import GATE_SITES, gate_class
from ._gateset import GateHandle, GateSet

GATES_FILE = "gates.safetensors"


@dataclass
class GatesConfig:
    """The ``gates:`` block of a training config."""

    kind: str = field(default="input_dependent", metadata={"help": "gate kind (see gating.GATE_KINDS)"})
    sites: tuple[str, ...] = field(default=("attn",), metadata={"help": "attn and/or mlp"})
    layers: list[int] | None = field(default=None, metadata={"help": "gated layers; null = all"})
    lr: float = field(default=1e-2, metadata={"help": "learning rate of the gates"})
    l1: float = field(default=0.0, metadata={"help": "weight of the sparsity penalty mean |g - 1|"})
    rank: int = field(default=8, metadata={"help": "rank of low_rank gates"})

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None) -> GatesConfig:
        raw = dict(raw or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise WorkbenchError(f"gates: unknown key(s) {unknown}; known keys: {sorted(known)}")
        cfg = cls(**raw)
        if isinstance(cfg.sites, str):
            cfg.sites = (cfg.sites,)
        cfg.sites = tuple(cfg.sites)
        for s in cfg.sites:
            if s not in GATE_SITES:
                raise WorkbenchError(f"gates.sites: unknown site '{s}' (choose from {list(GATE_SITES)})")
        gate_class(cfg.kind)  # unknown kind -> clear error
        for key in ("lr", "l1"):
            value = getattr(cfg, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise WorkbenchError(f"gates.{key} must be a non-negative number, got {value!r}")
        if cfg.layers is not None:
            cfg.layers = [int(l) for l in cfg.layers]
        return cfg

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sites"] = list(self.sites)
        return d


class GatesPlugin(TrainPlugin):
    """Trains a ``GateSet`` inside the loop: the gates are attached at alpha 1 around every policy pass."""

    name = "gates"

    def __init__(self, settings: Mapping[str, Any] | GatesConfig | None = None) -> None:
        self.config = settings if isinstance(settings, GatesConfig) else GatesConfig.from_dict(settings)
        self.settings = self.config
        self.gates: GateSet | None = None
        self.lm: Any = None
        self._handle: GateHandle | None = None
        self._inputs: dict[str, Tensor | None] = {}

    def setup(self, ctx: Any) -> None:
        """Identity gates for the loop's model (``ctx.lm``, LoRA attached or not), seeded by ``ctx.seed``."""
        self.lm = ctx.lm
        c = self.config
        self.gates = GateSet.create(
            self.lm,
            kind=c.kind,
            sites=c.sites,
            layers=c.layers,
            rank=c.rank,
            seed=int(getattr(ctx, "seed", 0) or 0),
        )
        self.gates.train()

    def parameters(self) -> list[dict[str, Any]]:
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

    def save(self, run_dir: str | Path) -> Path:
        """Write ``run_dir/gates.safetensors`` (with the training settings in its metadata)."""
        return self._require().save(Path(run_dir) / GATES_FILE, metadata={"training": self.config.as_dict()})

    def _require(self) -> GateSet:
        if self.gates is None:
            raise WorkbenchError("the gates plugin was used before setup()")
        return self.gates


register_plugin("gates", GatesPlugin)
