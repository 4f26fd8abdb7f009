"""Apply a PEFT adapter folder to a loaded model (safetensors only)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._errors import WorkbenchError


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
    lm.model = PeftModel.from_pretrained(lm.model, str(path), is_trainable=is_trainable)
    if not is_trainable:
        lm.model.eval()
    lm.fingerprint = type(lm.fingerprint)(
        **{**lm.fingerprint.as_dict(), "source": f"{lm.fingerprint.source} + {path}"}
    )
    return lm
