"""``safelora``: project LoRA updates onto an alignment matrix, post hoc (SafeLoRA, Hsu et al. 2024).

For each adapted module, ``V = W_aligned - W_base`` (two model specs) or the delta of an alignment LoRA,
and ``C = V V^T / ||V||_F`` (the paper's form). The update ``dW = B A`` is projected to ``C dW`` (i.e.
``B <- C B``) when the cosine similarity of ``C dW`` and ``dW`` is below ``threshold``. ``C`` is never
formed: ``C B = V (V^T B) / ||V||_F``.

As a defense it runs when training ends: ``adapter/`` gets the projected weights, the original is kept
in ``adapter_unprojected/``, and ``safelora.json`` lists every module's similarity. ``safelora_project``
does the same on any adapter folder.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench._errors import WorkbenchError
from workbench._io import atomic_write_json
from workbench.settings import setting

from .._plugins import Defense, register_defense

_KEY = re.compile(r"^(?:base_model\.model\.)?(.*)\.lora_([AB])(?:\.[^.]+)?\.weight$")


@dataclass
class SafeLoRASettings:
    aligned: str | None = setting(None, help="model spec of the aligned (e.g. chat) model; with 'base'")
    base: str | None = setting(None, help="model spec of the unaligned base model; with 'aligned'")
    align_adapter: str | None = setting(None, help="or: an alignment LoRA folder whose delta is V")
    threshold: float = setting(0.5, help="project modules whose similarity is below this")

    def __post_init__(self) -> None:
        pair = self.aligned is not None and self.base is not None
        if pair == (self.align_adapter is not None) or (self.aligned is None) != (self.base is None):
            raise ValueError("give either both 'aligned' and 'base', or 'align_adapter'")


def read_adapter(path: str | Path) -> tuple[dict[str, Any], dict[str, tuple[Tensor, Tensor]]]:
    """``(adapter_config, {module path: (A [r, in], B [out, r])})`` of a PEFT LoRA folder."""
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file, w_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    if not cfg_file.exists() or not w_file.exists():
        raise WorkbenchError(
            f"'{path}' is not a PEFT adapter folder (adapter_config.json + adapter_model.safetensors)"
        )
    cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    parts: dict[str, dict[str, Tensor]] = {}
    for k, v in load_file(str(w_file)).items():
        m = _KEY.match(k)
        if m:
            parts.setdefault(m.group(1), {})[m.group(2)] = v
    return cfg, {m: (p["A"], p["B"]) for m, p in parts.items() if "A" in p and "B" in p}


def lora_scale(cfg: dict[str, Any]) -> float:
    r, alpha = cfg.get("r", 8), cfg.get("lora_alpha", 8)
    return alpha / (r**0.5) if cfg.get("use_rslora") else alpha / r


def alignment_from_adapter(path: str | Path) -> dict[str, Tensor]:
    """``{module: V = scale * B A}`` (``[out, in]``) of an alignment LoRA."""
    cfg, mods = read_adapter(path)
    s = lora_scale(cfg)
    return {m: s * (b.double() @ a.double()) for m, (a, b) in mods.items()}


def alignment_from_models(aligned: Any, base: Any, modules: list[str]) -> dict[str, Tensor]:
    """``{module: W_aligned - W_base}`` (``[out, in]``) for the named modules of two loaded models."""
    from workbench._sites import unwrap_model

    ma, mb = unwrap_model(aligned.model), unwrap_model(base.model)
    out = {}
    for m in modules:
        try:
            wa, wb = ma.get_submodule(m), mb.get_submodule(m)
        except AttributeError:
            continue
        v = wa.weight.detach().double() - wb.weight.detach().double()
        out[m] = v.T if type(wa).__name__ == "Conv1D" else v  # Conv1D stores [in, out]
    return out


def project_module(a: Tensor, b: Tensor, v: Tensor, threshold: float) -> tuple[Tensor, float, bool]:
    """``(new B, similarity, projected?)`` for one module (``a`` ``[r, in]``, ``b`` ``[out, r]``, ``v`` ``[out, in]``)."""
    a64, b64, v64 = a.double(), b.double(), v.double()
    vn = torch.linalg.matrix_norm(v64)
    if vn == 0:
        return b, 1.0, False
    cb = v64 @ (v64.T @ b64) / vn  # C B, [out, r]
    g = a64 @ a64.T  # [r, r]
    inner = ((cb.T @ b64) * g).sum()
    n1 = ((cb.T @ cb) * g).sum().clamp_min(0).sqrt()
    n2 = ((b64.T @ b64) * g).sum().clamp_min(0).sqrt()
    sim = float(inner / (n1 * n2)) if n1 > 0 and n2 > 0 else 1.0
    if sim < threshold:
        return cb.to(b.dtype), sim, True
    return b, sim, False


def safelora_project(
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    aligned: Any = None,
    base: Any = None,
    align_adapter: str | Path | None = None,
    threshold: float = 0.5,
) -> dict[str, Any]:
    """Write a SafeLoRA-projected copy of ``adapter_dir`` to ``out_dir``; returns the per-module report.

    ``aligned`` / ``base``: model specs or ``LoadedModel`` objects; or ``align_adapter``: a LoRA folder.
    """
    from safetensors.torch import load_file, save_file

    adapter_dir, out_dir = Path(adapter_dir), Path(out_dir)
    _, mods = read_adapter(adapter_dir)
    if align_adapter is not None:
        vs = alignment_from_adapter(align_adapter)
    elif aligned is not None and base is not None:
        from workbench import load_model

        la = load_model(aligned, device="cpu") if isinstance(aligned, str) else aligned
        lb = load_model(base, device="cpu") if isinstance(base, str) else base
        vs = alignment_from_models(la, lb, list(mods))
    else:
        raise WorkbenchError("safelora needs 'aligned' and 'base' model specs, or 'align_adapter'")
    raw = load_file(str(adapter_dir / "adapter_model.safetensors"))
    report: dict[str, Any] = {"threshold": threshold, "modules": {}}
    new = dict(raw)
    for key in raw:
        m = _KEY.match(key)
        if not m or m.group(2) != "B" or m.group(1) not in mods:
            continue
        module = m.group(1)
        if module not in vs:
            report["modules"][module] = {"similarity": None, "projected": False}
            continue
        a, b = mods[module]
        nb, sim, done = project_module(a, b, vs[module], threshold)
        new[key] = nb.contiguous()
        report["modules"][module] = {"similarity": sim, "projected": done}
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in adapter_dir.iterdir():
        if f.is_file() and f.name != "adapter_model.safetensors":
            shutil.copy2(f, out_dir / f.name)
    save_file(new, str(out_dir / "adapter_model.safetensors"), metadata={"format": "pt"})
    report["projected"] = sum(1 for r in report["modules"].values() if r["projected"])
    report["total"] = len(report["modules"])
    return report


@register_defense("safelora")
class SafeLoRADefense(Defense):
    Settings = SafeLoRASettings

    def finalize(self, ctx: Any, run_dir: Path) -> None:
        s = self.settings
        adapter = run_dir / "adapter"
        if not adapter.exists():
            raise WorkbenchError("safelora needs a LoRA adapter (lora is null in this run)")
        keep = run_dir / "adapter_unprojected"
        if keep.exists():
            shutil.rmtree(keep)
        adapter.rename(keep)
        report = safelora_project(
            keep,
            adapter,
            aligned=s.aligned,
            base=s.base,
            align_adapter=s.align_adapter,
            threshold=s.threshold,
        )
        atomic_write_json(run_dir / "safelora.json", report)
