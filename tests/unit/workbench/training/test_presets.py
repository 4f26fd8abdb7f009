"""Paper presets: ``preset: NAME`` fills values not given explicitly; explicit values win; runs rerun alike."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.helpers import REPO_ROOT
from workbench import WorkbenchError
from workbench.training import TrainConfig, train
from workbench.training._config import describe_config
from workbench.training._presets import (
    PRESETS,
    AtDepth,
    Preset,
    Value,
    list_presets,
    model_layer_count,
    preset_names,
    validate_preset,
)

ROOT = REPO_ROOT


def base(**over) -> dict:
    d = {"model": "random:tiny-llama", "data": ["rows.jsonl"]}
    d.update(over)
    return d


def write_yaml(tmp_path: Path, d: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d, sort_keys=False))
    return p


# ------------------------------------------------------------------------------------------ filling
def test_preset_fills_the_enabled_defenses_and_training_settings():
    cfg = TrainConfig.from_dict(
        base(preset="kaczer2025", defenses={"kl": {}, "ldifs": None, "interleave": {"source": "x.jsonl"}})
    )
    assert cfg.preset == "kaczer2025"
    assert cfg.defenses["kl"]["weight"] == 0.1
    assert cfg.defenses["ldifs"]["weight"] == 1.0 and cfg.defenses["ldifs"]["every"] == 5
    assert cfg.defenses["interleave"]["fraction"] == 0.05
    assert cfg.defenses["interleave"]["source"] == "x.jsonl"  # given, untouched
    assert cfg.lora.r == 32 and cfg.lora.alpha == 64 and cfg.lora.use_rslora
    assert cfg.optim.lr == 1e-4
    # a preset never enables a defense
    assert set(cfg.defenses) == {"kl", "ldifs", "interleave"}
    # without the preset the same config has the plain defaults
    plain = TrainConfig.from_dict(base(defenses={"kl": {}}))
    assert plain.defenses["kl"]["weight"] == 1.0 and plain.optim.lr == 1e-5 and plain.preset is None


def test_explicit_yaml_values_win_even_when_equal_to_the_default(tmp_path):
    p = write_yaml(
        tmp_path,
        base(preset="kaczer2025", optim={"lr": 1e-5}, lora={"r": 8}, defenses={"kl": {"weight": 0.5}}),
    )
    cfg = TrainConfig.from_yaml(p)
    assert cfg.optim.lr == 1e-5  # the default value, but written explicitly: kept
    assert cfg.lora.r == 8 and cfg.lora.alpha == 64  # alpha not given: from the preset
    assert cfg.defenses["kl"]["weight"] == 0.5
    off = TrainConfig.from_dict(base(preset="kaczer2025", lora=None, gates={"kind": "x"}))
    assert off.lora is None  # a section set to null stays null


def test_set_preset_applies_to_the_yaml_and_set_values_win_in_any_order(tmp_path):
    p = write_yaml(tmp_path, base(defenses={"kl": {}, "dpo": {"beta": 0.2}}, optim={"epochs": 3}))
    cfg = TrainConfig.from_yaml(p)
    assert cfg.defenses["kl"]["weight"] == 1.0
    for items in (
        ["preset=kaczer2025", "defenses.kl.weight=0.3", "optim.lr=2e-5"],
        ["defenses.kl.weight=0.3", "optim.lr=2e-5", "preset=kaczer2025"],
    ):
        new = cfg.apply_overrides(items)
        assert new.preset == "kaczer2025"
        assert new.defenses["kl"]["weight"] == 0.3 and new.optim.lr == 2e-5
        assert new.lora.r == 32 and new.optim.epochs == 3  # preset value / YAML value
    # a defense enabled by --set after the preset gets the preset's settings
    plus = cfg.apply_overrides(["preset=kaczer2025", "defenses.interleave={}"])
    assert plus.defenses["interleave"]["fraction"] == 0.05
    # --set after --set keeps what was given: the second call still knows kl.weight was explicit
    again = cfg.apply_overrides(["defenses.kl.weight=0.3"]).apply_overrides(["preset=kaczer2025"])
    assert again.defenses["kl"]["weight"] == 0.3 and again.optim.lr == 1e-4


def test_switching_or_removing_the_preset_restores_what_it_had_filled():
    cfg = TrainConfig.from_dict(base(preset="kaczer2025", defenses={"kl": {}}, optim={"epochs": 2}))
    chen = cfg.apply_overrides(["preset=chen2025"])
    assert chen.defenses["kl"]["weight"] == 1.0  # chen2025 has no KL setting: back to the default
    assert chen.optim.lr == 1e-5 and chen.optim.grad_accum == 8 and chen.optim.epochs == 2
    none = cfg.apply_overrides(["preset=null"])
    assert none.preset is None and none.defenses["kl"]["weight"] == 1.0 and none.optim.lr == 1e-5


def test_unknown_preset_is_one_line_naming_the_known_ones(tmp_path):
    known = "known presets: azarbal2025, betley2025, chen2025, kaczer2025"
    p = write_yaml(tmp_path, base(preset="kaczer"))
    with pytest.raises(WorkbenchError) as info:
        TrainConfig.from_yaml(p)
    msg = str(info.value)
    assert msg == f"{p}: unknown preset 'kaczer' ({known})" and "\n" not in msg
    with pytest.raises(WorkbenchError, match=rf"^--set 'preset=nope': unknown preset 'nope' \({known}\)$"):
        TrainConfig.from_dict(base()).apply_overrides(["preset=nope"])
    with pytest.raises(WorkbenchError, match=r"unknown preset 5 \(known presets"):
        TrainConfig.from_dict(base(preset=5))


def test_resolved_config_round_trips_and_records_the_preset():
    cfg = TrainConfig.from_dict(
        base(preset="chen2025", defenses={"preventive_steering": {"vector": "v.safetensors"}, "kl": {}})
    )
    again = TrainConfig.from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict() == cfg.to_dict()
    d = yaml.safe_load(cfg.to_yaml())
    assert d["preset"] == "chen2025" and d["defenses"]["preventive_steering"]["layers"] == [1]
    d.pop("preset")
    without = TrainConfig.from_dict(d)
    assert without.preset is None and {**without.to_dict(), "preset": "chen2025"} == cfg.to_dict()


def _rows(path: Path, n: int = 12) -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            msgs = [
                {"role": "user", "content": f"Number {i}?"},
                {"role": "assistant", "content": f"It is {i}."},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return path


def test_a_run_config_yaml_reruns_identically_without_the_preset(tmp_path):
    torch.set_num_threads(1)
    rows = _rows(tmp_path / "rows.jsonl")
    cfg_path = write_yaml(
        tmp_path,
        {
            "preset": "kaczer2025",
            "model": "random:tiny-llama",
            "device": "cpu",
            "data": [{"path": str(rows)}],
            "lora": {"r": 4},
            "optim": {"batch_size": 2, "grad_accum": 1, "max_steps": 2, "max_length": 48},
            "defenses": {"kl": {}},
            "checkpoint_every": 0,
            "plots": False,
        },
    )
    run1 = train(cfg_path, tmp_path / "run1", overrides=["optim.warmup_steps=0"], progress=False)
    saved = yaml.safe_load((run1 / "config.yaml").read_text())
    assert saved["preset"] == "kaczer2025"
    assert saved["defenses"]["kl"]["weight"] == 0.1 and saved["optim"]["lr"] == 1e-4
    assert saved["lora"]["r"] == 4 and saved["lora"]["alpha"] == 64 and saved["optim"]["warmup_steps"] == 0
    saved.pop("preset")
    rerun_cfg = write_yaml(tmp_path, saved, "rerun.yaml")
    run2 = train(rerun_cfg, tmp_path / "run2", progress=False)
    again = yaml.safe_load((run2 / "config.yaml").read_text())
    assert again.pop("preset") is None and again == saved
    a = load_file(str(run1 / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run2 / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    m1 = [json.loads(x) for x in (run1 / "metrics.jsonl").read_text().splitlines()]
    m2 = [json.loads(x) for x in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in m1] == [r["loss"] for r in m2] and "kl" in m1[-1]


# ------------------------------------------------------------------------------------ relative depth
def test_relative_depth_maps_the_papers_layer_onto_any_model(tmp_path):
    depth = AtDepth(20, 28)
    assert depth.index(28) == 19  # the paper's layer 20 (1-based) of Qwen2.5-7B-Instruct
    assert depth.index(30) == 20 and depth.index(3) == 1 and depth.index(1) == 0
    assert model_layer_count("random:tiny-gpt2") == 3 and model_layer_count("smollm2-135m") == 30
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text(json.dumps({"text_config": {"num_hidden_layers": 42}}))
    assert model_layer_count(str(tmp_path / "m")) == 42
    ps = {"preventive_steering": {"vector": "v.safetensors"}}
    cfg = TrainConfig.from_dict(base(model=str(tmp_path / "m"), preset="chen2025", defenses=ps))
    assert cfg.defenses["preventive_steering"]["layers"] == [round(20 / 28 * 42) - 1]
    # a changed model re-resolves the layer; explicit layers win
    moved = cfg.apply_overrides(["model=smollm2-135m"])
    assert moved.defenses["preventive_steering"]["layers"] == [20]
    fixed = cfg.apply_overrides(["defenses.preventive_steering.layers=[3]", "model=smollm2-135m"])
    assert fixed.defenses["preventive_steering"]["layers"] == [3]
    # --set preset=... is applied first, so an item enabling the defense already sees the preset's layers
    late = TrainConfig.from_dict(base()).apply_overrides(
        ["defenses.preventive_steering.vector=v.safetensors", "preset=chen2025"]
    )
    assert late.defenses["preventive_steering"]["layers"] == [1]
    with pytest.raises(WorkbenchError, match=r"preset 'chen2025' .*layers explicitly"):
        TrainConfig.from_dict(base(model=str(tmp_path / "nowhere"), preset="chen2025", defenses=ps))


# ---------------------------------------------------------------------------------------- validation
def _enable_all(preset_name: str) -> dict:
    """A config enabling every defense the preset names (with the settings they require)."""
    required = {"preventive_steering": {"vector": "v.safetensors"}, "interleave_plus": {"adapters": ["a"]}}
    required["interleave_plus_plus"] = required["interleave_plus"]
    keys = PRESETS[preset_name].values
    if "defenses.preventive_steering.layers" not in keys:
        required["preventive_steering"]["layers"] = [0]
    names = {k.split(".")[1] for k in keys if k.startswith("defenses.")}
    return {n: dict(required.get(n, {})) for n in names}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_validates_against_the_registered_settings(name):
    preset = PRESETS[name]
    validate_preset(preset)
    cfg = TrainConfig.from_dict(base(preset=name, defenses=_enable_all(name)))
    d = cfg.to_dict()
    for key, val in preset.values.items():
        node = d
        for part in key.split("."):
            node = node[part]
        want = val.value.resolve(3) if isinstance(val.value, AtDepth) else val.value
        assert node == want, key


def test_validate_preset_rejects_unregistered_defenses_and_bad_settings():
    def bad(key, value, source="x"):
        return Preset("bad", "paper", "desc", {key: Value(value, source)})

    with pytest.raises(WorkbenchError, match=r"preset 'bad': unknown defense 'nope'; registered defenses"):
        validate_preset(bad("defenses.nope.weight", 1.0))
    with pytest.raises(WorkbenchError, match=r"preset 'bad': unknown key 'defenses\.kl\.wieght'"):
        validate_preset(bad("defenses.kl.wieght", 1.0))
    with pytest.raises(WorkbenchError, match=r"'defenses\.kl\.direction' must be one of forward, reverse"):
        validate_preset(bad("defenses.kl.direction", "sideways"))
    with pytest.raises(WorkbenchError, match=r"'optim\.lr' must be a number"):
        validate_preset(bad("optim.lr", "fast"))
    with pytest.raises(WorkbenchError, match=r"unknown key 'optim\.learning_rate'"):
        validate_preset(bad("optim.learning_rate", 1e-4))
    with pytest.raises(WorkbenchError, match="has no source"):
        validate_preset(bad("optim.lr", 1e-4, source=" "))


def test_presets_are_listed_with_sources_and_in_the_help():
    listed = list_presets()
    assert list(listed) == preset_names() == ["azarbal2025", "betley2025", "chen2025", "kaczer2025"]
    for info in listed.values():
        assert info["paper"] and info["description"] and info["values"]
        assert info["values"].keys() == info["sources"].keys() and all(info["sources"].values())
    assert listed["kaczer2025"]["values"]["defenses.kl.weight"] == 0.1
    assert "defenses.kl.weight" in listed["azarbal2025"]["not_set"]  # swept, so left out
    helps = {k: h for k, _, h in describe_config()}
    assert all(n in helps["preset"] for n in preset_names())


def test_docs_table_lists_every_preset_value():
    text = (ROOT / "docs" / "training.md").read_text(encoding="utf-8")
    section = text.split("\n## Presets\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\|\s*`(\w+)`\s*\|\s*`([\w.]+)`\s*\|\s*([^|]+?)\s*\|", line)
        if m:
            rows[(m.group(1), m.group(2))] = m.group(3).strip("`")
    for name, preset in PRESETS.items():
        for key, val in preset.values.items():
            assert (name, key) in rows, f"docs/training.md Presets table lacks {name} {key}"
            cell = rows[(name, key)]
            if isinstance(val.value, AtDepth):
                assert f"{val.value.layer}/{val.value.of}" in cell
            elif isinstance(val.value, bool | str):
                assert yaml.safe_load(cell) == val.value, (name, key, cell)
            else:
                assert float(cell) == float(val.value), (name, key, cell)
    assert len(rows) == sum(len(p.values) for p in PRESETS.values())
