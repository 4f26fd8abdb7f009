"""Apply a PEFT adapter folder to a loaded model (safetensors only).

In the workbench "adapter" means only this: a PEFT adapter folder (``adapter_config.json`` +
``adapter_model.safetensors``), what ``--adapter`` names and what training writes to ``<run>/adapter/``. The
per-family table of where the hook sites live is ``workbench.ArchSpec`` (``workbench._sites``).
``unwrap_model`` looks through a PEFT wrapper to the HF model beneath.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._errors import WorkbenchError
from ._sites import unwrap_model

__all__ = ["apply_adapter", "check_adapter", "unwrap_model"]


def apply_adapter(lm: Any, adapter_dir: str | Path, *, is_trainable: bool = False) -> Any:
    """Wrap ``lm.model`` with the PEFT adapter in ``adapter_dir`` (in place; returns ``lm``).

    ``lm.model.disable_adapter()`` (a context manager) gives the base model back temporarily;
    ``lm.model.unload()`` removes the adapter for good.
    """
    from peft import PeftModel

    path = Path(adapter_dir)
    if not (path / "adapter_config.json").exists():
        raise WorkbenchError(f"'{path}' is not a PEFT adapter folder (no adapter_config.json)")
    if not (path / "adapter_model.safetensors").exists():
        raise WorkbenchError(
            f"'{path}' has no adapter_model.safetensors (only safetensors adapters are loaded)"
        )
    check_adapter(lm, path)
    try:
        lm.model = PeftModel.from_pretrained(lm.model, str(path), is_trainable=is_trainable)
    except (ValueError, RuntimeError, KeyError, TypeError) as exc:  # PEFT's messages run over many lines
        from ._io import one_line

        raise WorkbenchError(
            f"adapter '{path}' does not fit the model ({type(exc).__name__}: {one_line(str(exc), 300)})"
        ) from exc
    if not is_trainable:
        lm.model.eval()
    lm.fingerprint = type(lm.fingerprint)(
        **{**lm.fingerprint.as_dict(), "source": f"{lm.fingerprint.source} + {path}"}
    )
    return lm


# module name suffixes of PEFT tensors -> which dimension of the base module they must match
_LORA_PARTS = {
    ".lora_A.": ("in", 1),
    ".lora_B.": ("out", 0),
    ".lora_embedding_A": ("in", 1),
    ".lora_embedding_B": ("out", 0),
    ".lora_magnitude_vector": (None, None),
    ".modules_to_save.": (None, None),
}


def _features(module: Any) -> tuple[int, int] | None:
    """``(inputs, outputs)`` of a linear, GPT-2 ``Conv1D`` or embedding module (LoRA-wrapped or not)."""
    for a, b in (("in_features", "out_features"), ("nx", "nf"), ("num_embeddings", "embedding_dim")):
        i, o = getattr(module, a, None), getattr(module, b, None)
        if isinstance(i, int) and isinstance(o, int):
            return i, o
    return None


def check_adapter(lm: Any, path: str | Path) -> None:
    """Refuse an adapter made for another model, in one line naming the adapter and the mismatch.

    Checked before PEFT touches the model: the architecture the adapter was saved from (PEFT's
    ``auto_mapping.base_model_class``), that every module it holds weights for exists (an adapter for a
    deeper model would otherwise load with its extra layers silently dropped), and the LoRA matrices'
    widths against those modules (PEFT reports those as a many-line ``RuntimeError``).
    """
    import json

    from ._sites import unwrap_model

    path = Path(path)
    where = f"adapter '{path}'"
    try:
        cfg = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkbenchError(
            f"{where}: adapter_config.json is not readable JSON ({type(exc).__name__})"
        ) from exc
    if not isinstance(cfg, dict):
        raise WorkbenchError(f"{where}: adapter_config.json must hold a JSON object")
    base = unwrap_model(lm.model)
    have = type(base).__name__
    mapping = cfg.get("auto_mapping")
    made = mapping.get("base_model_class") if isinstance(mapping, dict) else None
    if isinstance(made, str) and made and made != have:
        raise WorkbenchError(f"{where} was made for {made}, but the model is {have}")
    shapes = _tensor_shapes(path / "adapter_model.safetensors", where)
    modules = dict(base.named_modules())
    n_layers = getattr(getattr(lm, "sites", None), "n_layers", None)
    for key in sorted(shapes):
        name = key.removeprefix("base_model.model.")
        part = next((p for p in _LORA_PARTS if p in name), None)
        module_name = name.split(part)[0] if part else name.rpartition(".")[0]
        module = modules.get(module_name)
        if module is None:
            size = f" (it has {n_layers} layers)" if n_layers is not None else ""
            raise WorkbenchError(
                f"{where} has weights for {module_name}, which the model does not have{size}"
            )
        side, dim = _LORA_PARTS.get(part, (None, None)) if part else (None, None)
        feats = _features(module)
        shape = shapes[key]
        if side is None or feats is None or len(shape) != 2:
            continue
        want = feats[0] if side == "in" else feats[1]
        if shape[dim] != want:
            what = "takes" if side == "in" else "gives"
            kind = "inputs" if side == "in" else "outputs"
            tensor = part.strip(".")
            raise WorkbenchError(
                f"{where}: {module_name}: {tensor} has shape {shape}, but the model's module {what} {want} "
                f"{kind} (the adapter was made for a model of other dimensions)"
            )


def _tensor_shapes(file: Path, where: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(file), "pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises its own error types for damaged files
        from ._io import one_line

        raise WorkbenchError(
            f"{where}: {file.name} is not a readable safetensors file ({one_line(str(exc), 160)})"
        ) from exc
