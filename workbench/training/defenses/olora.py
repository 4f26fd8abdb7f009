"""``olora``: O-LoRA's orthogonality penalty between the task LoRA's A matrices and those of a frozen
alignment LoRA: ``weight * sum over modules ||A_task A_align^T||_F^2``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench._errors import WorkbenchError

from .._config import _f
from .._plugins import Defense, register_defense

_A_KEY = re.compile(r"^(?:base_model\.model\.)?(.*)\.lora_A(?:\.[^.]+)?\.weight$")


def lora_a_by_module(names_tensors: Any) -> dict[str, Any]:
    """``{module path: A}`` from LoRA parameter names (with or without the adapter name)."""
    out = {}
    for name, t in names_tensors:
        m = _A_KEY.match(name)
        if m:
            out[m.group(1)] = t
    return out


def orthogonality_penalty(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """``sum ||A_task @ A_align^T||_F^2`` over (A_task ``[r, in]``, A_align ``[r', in]``) pairs."""
    return torch.stack([(a @ b.T).pow(2).sum() for a, b in pairs]).sum()


@dataclass
class OLoRASettings:
    adapter: str = _f("", help="folder of the frozen alignment LoRA adapter (PEFT, safetensors)")
    weight: float = _f(0.5, help="lambda: multiplier of the orthogonality penalty")

    def __post_init__(self) -> None:
        if not self.adapter:
            raise ValueError("'adapter' (the alignment LoRA folder) is required")


@register_defense("olora")
class OLoRADefense(Defense):
    Settings = OLoRASettings

    def setup(self, ctx: Any) -> None:
        from safetensors.torch import load_file

        if not ctx.has_lora:
            raise WorkbenchError("defenses.olora needs LoRA training (lora is null)")
        path = Path(self.settings.adapter) / "adapter_model.safetensors"
        if not path.exists():
            raise WorkbenchError(f"defenses.olora.adapter: {path} not found")
        frozen = lora_a_by_module(load_file(str(path)).items())
        task = lora_a_by_module(ctx.trainable_parameters())
        self.pairs = [(task[m], frozen[m].to(ctx.device, task[m].dtype)) for m in task if m in frozen]
        if not self.pairs:
            raise WorkbenchError(
                f"defenses.olora: no module of {self.settings.adapter} matches a module of the task LoRA"
            )
        for a, b in self.pairs:
            if a.shape[1] != b.shape[1]:
                raise WorkbenchError(f"defenses.olora: input widths differ ({a.shape} vs {b.shape})")

    def extra_loss(self, ctx: Any, batch: Any, outputs: Any) -> dict[str, Tensor]:
        return {"olora": self.settings.weight * orthogonality_penalty(self.pairs)}
