"""``olora``: O-LoRA (Wang et al. 2023) against a frozen alignment LoRA.

The frozen alignment adapter stays in the model and the task LoRA is learned beside it: every forward pass
(task, eval, generation, and the reference passes of other defenses) computes
``(W + dW_align + dW_task) x``, and the loss adds the orthogonality penalty
``weight * sum over modules ||A_task A_align^T||_F^2``.

``dW_align = s_align B_align A_align`` is applied by a forward hook on each targeted base layer (the
frozen tensors are not parameters, so nothing trains them and PEFT's adapter switching never touches
them); ``disable_adapter()`` removes only the task LoRA, so the reference model is ``W + dW_align``, the
model this run starts from. At the end ``adapter/`` holds one ordinary PEFT LoRA equal to
``dW_align + dW_task`` (``A = [A_align; A_task]``, ``B = [s_align B_align, s_task B_task]``, scaling 1),
so ``workbench eval --adapter RUN/adapter`` loads the trained model as it was trained; the task LoRA alone
is kept in ``adapter_task/`` and the layout in ``olora.json``.

``apply_alignment: false`` is the penalty-only variant (the alignment adapter never enters the forward
pass and ``adapter/`` is the task LoRA alone).
"""

from __future__ import annotations

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from workbench._errors import WorkbenchError
from workbench._io import atomic_write_json
from workbench.settings import setting

from .._plugins import Defense, register_defense

_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(.*)\.lora_(A|B)(?:\.[^.]+)?\.weight$")


def _lora_by_module(names_tensors: Any, which: str) -> dict[str, Any]:
    out = {}
    for name, t in names_tensors:
        m = _LORA_KEY.match(name)
        if m and m.group(2) == which:
            out[m.group(1)] = t
    return out


def lora_a_by_module(names_tensors: Any) -> dict[str, Any]:
    """``{module path: A}`` from LoRA parameter names (with or without the adapter name)."""
    return _lora_by_module(names_tensors, "A")


def lora_b_by_module(names_tensors: Any) -> dict[str, Any]:
    """``{module path: B}`` from LoRA parameter names (with or without the adapter name)."""
    return _lora_by_module(names_tensors, "B")


def orthogonality_penalty(pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
    """``sum ||A_task @ A_align^T||_F^2`` over (A_task ``[r, in]``, A_align ``[r', in]``) pairs."""
    return torch.stack([(a @ b.T).pow(2).sum() for a, b in pairs]).sum()


def lora_scaling(config: dict[str, Any], rank: int) -> float:
    """PEFT's LoRA scaling: ``alpha / sqrt(r)`` with rsLoRA, else ``alpha / r``."""
    alpha = float(config.get("lora_alpha", 8))
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def combine_lora(
    parts: list[dict[str, tuple[Tensor, Tensor, float]]],
) -> dict[str, tuple[Tensor, Tensor]]:
    """One LoRA (scaling 1) whose delta is the sum of the ``parts``' deltas, module by module.

    Each part maps a module path to ``(A [r, in], B [out, r], scaling)``. The result stacks the parts'
    ``A`` rows and their scaled ``B`` columns, each part padded with zeros to its largest rank, so every
    module has the same rank and ``B_comb @ A_comb = sum_parts scaling * B @ A`` exactly.
    """
    ranks = [max((a.shape[0] for a, _, _ in p.values()), default=0) for p in parts]
    out: dict[str, tuple[Tensor, Tensor]] = {}
    modules = sorted(set().union(*(p.keys() for p in parts)))
    for m in modules:
        ref_a, ref_b, _ = next(p[m] for p in parts if m in p)
        n_in, n_out = ref_a.shape[1], ref_b.shape[0]
        a_blocks, b_blocks = [], []
        for p, r in zip(parts, ranks, strict=True):
            a_pad = torch.zeros(r, n_in, dtype=torch.float32)
            b_pad = torch.zeros(n_out, r, dtype=torch.float32)
            if m in p:
                a, b, s = p[m]
                if a.shape[1] != n_in or b.shape[0] != n_out:
                    raise WorkbenchError(
                        f"defenses.olora: module {m} has different shapes in the two adapters"
                    )
                a_pad[: a.shape[0]] = a.detach().float().cpu()
                b_pad[:, : b.shape[1]] = s * b.detach().float().cpu()
            a_blocks.append(a_pad)
            b_blocks.append(b_pad)
        out[m] = (torch.cat(a_blocks, 0), torch.cat(b_blocks, 1))
    return out


def _base_layer(module: nn.Module) -> nn.Module:
    """The layer that computes ``W x`` (inside a PEFT LoRA wrapper, its ``base_layer``)."""
    return getattr(module, "base_layer", module)


def _in_out(layer: nn.Module) -> tuple[int, int]:
    w = layer.weight
    if type(layer).__name__ == "Conv1D":  # GPT-2: weight is [in, out]
        return int(w.shape[0]), int(w.shape[1])
    return int(w.shape[1]), int(w.shape[0])


@dataclass
class OLoRASettings:
    adapter: str = setting("", help="folder of the frozen alignment LoRA adapter (PEFT, safetensors)")
    weight: float = setting(
        0.5, help="lambda_1: multiplier of the orthogonality penalty (O-LoRA scripts: 0.5)"
    )
    apply_alignment: bool = setting(
        True,
        help="keep the frozen alignment LoRA in every forward pass (W + dW_align + dW_task, as O-LoRA) and "
        "save adapter/ as their sum; false: penalty only, the alignment LoRA never enters the model "
        "(the pre-audit behaviour)",
    )

    def __post_init__(self) -> None:
        if not self.adapter:
            raise ValueError("'adapter' (the alignment LoRA folder) is required")


@register_defense("olora")
class OLoRADefense(Defense):
    Settings = OLoRASettings

    def setup(self, ctx: Any) -> None:
        from safetensors.torch import load_file

        s = self.settings
        if not ctx.has_lora:
            raise WorkbenchError("defenses.olora needs LoRA training (lora is null)")
        folder = Path(s.adapter)
        path = folder / "adapter_model.safetensors"
        if not path.exists():
            raise WorkbenchError(f"defenses.olora.adapter: {path} not found")
        tensors = load_file(str(path))
        frozen = lora_a_by_module(tensors.items())
        task = lora_a_by_module(ctx.trainable_parameters())
        self.pairs = [(task[m], frozen[m].to(ctx.device, task[m].dtype)) for m in task if m in frozen]
        if not self.pairs:
            raise WorkbenchError(
                f"defenses.olora: no module of {s.adapter} matches a module of the task LoRA"
            )
        for a, b in self.pairs:
            if a.shape[1] != b.shape[1]:
                raise WorkbenchError(f"defenses.olora: input widths differ ({a.shape} vs {b.shape})")
        self._model = ctx.model
        self.align: dict[str, tuple[Tensor, Tensor, float]] = {}
        self.handles: list[Any] = []
        if s.apply_alignment:
            self._attach_alignment(ctx, folder, tensors)

    def _attach_alignment(self, ctx: Any, folder: Path, tensors: dict[str, Tensor]) -> None:
        """Read the alignment LoRA and hook ``s B A x`` onto the output of each targeted base layer."""
        from workbench._sites import unwrap_model

        cfg_path = folder / "adapter_config.json"
        if not cfg_path.exists():
            raise WorkbenchError(f"defenses.olora.adapter: {cfg_path} not found")
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        unsupported = [
            k
            for k, bad in (
                ("use_dora", bool(cfg.get("use_dora"))),
                ("bias", cfg.get("bias", "none") != "none"),
                ("modules_to_save", bool(cfg.get("modules_to_save"))),
                ("rank_pattern", bool(cfg.get("rank_pattern"))),
                ("alpha_pattern", bool(cfg.get("alpha_pattern"))),
            )
            if bad
        ]
        if unsupported:
            raise WorkbenchError(
                f"defenses.olora.adapter: only plain LoRA adapters can be applied (this one sets "
                f"{', '.join(unsupported)}); use apply_alignment: false for the penalty alone"
            )
        a_by, b_by = lora_a_by_module(tensors.items()), lora_b_by_module(tensors.items())
        if set(a_by) != set(b_by):
            raise WorkbenchError(
                f"defenses.olora.adapter: {folder} has lora_A and lora_B for different modules"
            )
        base = unwrap_model(ctx.model)
        for m in sorted(a_by):
            try:
                layer = _base_layer(base.get_submodule(m))
            except AttributeError:
                raise WorkbenchError(f"defenses.olora.adapter: module '{m}' is not in this model") from None
            a, b = a_by[m].float(), b_by[m].float()
            if (a.shape[1], b.shape[0]) != _in_out(layer) or a.shape[0] != b.shape[1]:
                raise WorkbenchError(
                    f"defenses.olora.adapter: shapes of module '{m}' (A {tuple(a.shape)}, B {tuple(b.shape)}) "
                    f"do not fit the model's layer (in, out) = {_in_out(layer)}"
                )
            scale = lora_scaling(cfg, int(a.shape[0]))
            a, b = a.to(ctx.device), b.to(ctx.device)
            self.align[m] = (a, b, scale)
            self.handles.append(layer.register_forward_hook(_delta_hook(a, b * scale)))

    def extra_loss(self, ctx: Any, batch: Any, outputs: Any) -> dict[str, Tensor]:
        return {"olora": self.settings.weight * orthogonality_penalty(self.pairs)}

    def save(self, run_dir: Path) -> None:
        """``adapter/`` becomes alignment + task (one PEFT LoRA); the task LoRA alone goes to ``adapter_task/``."""
        if not self.settings.apply_alignment:
            return
        from safetensors.torch import save_file

        run_dir = Path(run_dir)
        adapter, task_dir = run_dir / "adapter", run_dir / "adapter_task"
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        task = self._task_modules()
        combined = combine_lora([self.align, task])
        rank = next(iter(combined.values()))[0].shape[0]
        new_cfg = {
            **cfg,
            "r": rank,
            "lora_alpha": rank,
            "use_rslora": False,
            "target_modules": sorted(combined),
            "rank_pattern": {},
            "alpha_pattern": {},
        }
        tmp = run_dir / ".adapter.olora.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        weights = {}
        for m, (a, b) in combined.items():
            weights[f"base_model.model.{m}.lora_A.weight"] = a.contiguous()
            weights[f"base_model.model.{m}.lora_B.weight"] = b.contiguous()
        save_file(weights, str(tmp / "adapter_model.safetensors"))
        (tmp / "adapter_config.json").write_text(
            json.dumps(new_cfg, indent=2, sort_keys=True), encoding="utf-8"
        )
        if task_dir.exists():
            shutil.rmtree(task_dir)
        adapter.rename(task_dir)
        tmp.rename(adapter)
        align_rank = max(a.shape[0] for a, _, _ in self.align.values())
        atomic_write_json(
            run_dir / "olora.json",
            {
                "alignment_adapter": str(Path(self.settings.adapter).resolve()),
                "apply_alignment": True,
                "adapter": "adapter/: dW_align + dW_task as one LoRA (scaling 1); A rows "
                f"[0, {align_rank}) and B columns [0, {align_rank}) are the alignment part",
                "task_adapter": "adapter_task/: the trained task LoRA alone",
                "rank": rank,
                "alignment_rank": align_rank,
                "modules": len(combined),
                "alignment_modules": len(self.align),
                "task_modules": len(task),
                "alignment_scaling": sorted({s for _, _, s in self.align.values()}),
                "task_scaling": sorted({s for _, _, s in task.values()}),
            },
        )

    def _task_modules(self) -> dict[str, tuple[Tensor, Tensor, float]]:
        """``{module path: (A, B, scaling)}`` of the trained task LoRA (PEFT adapter ``default``)."""
        out = {}
        for name, mod in self._model.named_modules():
            la, lb, sc = (
                getattr(mod, "lora_A", None),
                getattr(mod, "lora_B", None),
                getattr(mod, "scaling", None),
            )
            if la is None or lb is None or not isinstance(sc, dict) or "default" not in la:
                continue
            path = name.removeprefix("base_model.model.")
            out[path] = (la["default"].weight, lb["default"].weight, float(sc["default"]))
        return out


def _delta_hook(a: Tensor, b_scaled: Tensor) -> Any:
    """A forward hook adding ``(x A^T) (s B)^T`` to a linear layer's output."""

    def hook(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> Tensor:
        x = args[0]
        delta = (x.to(a.dtype) @ a.T) @ b_scaled.T
        return output + delta.to(output.dtype)

    return hook
