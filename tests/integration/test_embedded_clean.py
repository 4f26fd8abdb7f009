"""Integration tier: the converted embedded model is a plain float model (no GGUF ``quantization_config``),
a cache written by an older version is repaired on use, and a fresh conversion writes a clean folder."""

from __future__ import annotations

import filecmp
import json
import os

import pytest
import torch

from workbench import load_model
from workbench._models import EMBEDDED, embedded_folder

pytestmark = pytest.mark.integration

TEXT = "The committee met on Tuesday to discuss the new library budget."


def _is_plain(model) -> bool:
    return (
        getattr(model, "is_quantized", False) is False
        and getattr(model, "hf_quantizer", None) is None
        and not hasattr(model.config, "quantization_config")
    )


def test_embedded_model_is_a_plain_float_model():
    folder = embedded_folder()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    lm = load_model("smollm2-135m", device="cpu")  # its own copy: .half() below must not touch the shared one
    assert _is_plain(lm.model) and lm.dtype == torch.float32
    ids = lm.tokenizer([TEXT], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        full = lm.model(ids).logits
        assert lm.model.half().dtype == torch.float16  # raised "not supported for quantized model" before
        assert lm.model.float().dtype == torch.float32
        back = lm.model(ids).logits
    assert back.dtype == torch.float32 and torch.isfinite(back).all()
    # the weights went through float16 and back: close to, not equal to, the float32 logits
    assert (back - full).abs().max().item() < 0.05 * full.abs().max().item()


def _copy_with_stale_config(src, dst) -> None:
    """The real cached folder with its config as older versions wrote it (the weights are linked, not copied:
    the repair only rewrites config.json)."""
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name == "model.safetensors":
            os.symlink(p, dst / p.name)
        elif p.is_file():
            (dst / p.name).write_bytes(p.read_bytes())
    cfg = json.loads((dst / "config.json").read_text())
    cfg["quantization_config"] = {
        "dequantize": False,
        "gguf_file": EMBEDDED["smollm2-135m"]["gguf"],
        "quant_method": "gguf",
    }
    (dst / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def test_an_old_cache_is_repaired_on_load(monkeypatch, tmp_path):
    from transformers import AutoModelForCausalLM

    real = embedded_folder()
    copy = tmp_path / "models" / EMBEDDED["smollm2-135m"]["folder"]
    _copy_with_stale_config(real, copy)
    stale = AutoModelForCausalLM.from_pretrained(str(copy), dtype=torch.float32)
    assert stale.is_quantized  # the state older caches are in

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    lm = load_model("smollm2-135m", device="cpu")
    assert _is_plain(lm.model)
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg == json.loads((real / "config.json").read_text())  # exactly what a fresh conversion writes
    assert os.path.islink(copy / "model.safetensors")  # the weights were not rewritten


def test_fresh_conversion_writes_a_clean_folder(monkeypatch, tmp_path):
    """Converts the shipped GGUF again (~25 s on a CPU) into an empty cache."""
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    folder = embedded_folder()
    assert folder.parent.parent == tmp_path
    cfg = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temp folder left
    monkeypatch.delenv("WORKBENCH_CACHE")
    assert filecmp.cmp(folder / "model.safetensors", embedded_folder() / "model.safetensors", shallow=False)
