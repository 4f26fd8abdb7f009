"""The contract every registered training component keeps (as peft's one test file over every method).

Parametrised over ``registered_components()`` (the built-in defenses and whatever the installed packages'
``workbench.training`` entry points register: gates, monitor, preventive steering): its settings round-trip
through YAML, an unknown key is refused naming it, a step that raises leaves no hook on the model, and a run
cut in half and resumed ends with the same weights and the same metrics rows as one run straight through.
A component without an example below fails ``test_every_registered_component_has_an_example``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from workbench import WorkbenchError, load_model
from workbench._hooks import count_hooks
from workbench.settings import from_mapping, to_mapping
from workbench.training import TrainConfig, Trainer, registered_components, train

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = "random:tiny-llama"
REGISTRY = registered_components()
VOLATILE = {"seconds", "monitor_seconds", "train_seconds"}  # wall-clock times differ between any two runs


def _rows(n: int, tag: str) -> list[dict[str, Any]]:
    words = ["amber", "slate", "olive", "coral", "ivory", "umber"]
    return [
        {
            "messages": [
                {"role": "user", "content": f"Name colour {tag}{i}."},
                {"role": "assistant", "content": f"That one is {words[i % len(words)]} {i}."},
            ]
        }
        for i in range(n)
    ]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _base(data: Path, **over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "model": MODEL,
        "device": "cpu",
        "data": [{"path": str(data)}],
        "lora": {"r": 4, "alpha": 8},
        "optim": {
            "lr": 1e-2,
            "batch_size": 2,
            "grad_accum": 1,
            "warmup_steps": 0,
            "max_steps": 2,
            "max_length": 96,
        },
        "checkpoint_every": 0,
        "plots": False,
    }
    d.update(over)
    return d


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, str]:
    """What some components need: a trained side adapter (alignment LoRA, 'misaligned' adapter) and a
    persona-vector file made for the tiny model."""
    from probes import PersonaVector

    tmp = tmp_path_factory.mktemp("assets")
    data = _write(tmp / "side.jsonl", _rows(6, "s"))
    side = train(TrainConfig.from_dict(_base(data)), tmp / "side", progress=False) / "adapter"
    lm = load_model(MODEL, device="cpu")
    g = torch.Generator().manual_seed(0)
    vec = PersonaVector(torch.randn(lm.n_layers, lm.d_model, generator=g), "evil", fingerprint=lm.fingerprint)
    return {"adapter": str(side), "vector": str(vec.save(tmp / "evil.safetensors"))}


#: settings of each registered component for these tests (small data, short generations)
EXAMPLES: dict[str, Any] = {
    "dpo": lambda a: {"n": 4, "beta": 0.2},
    "gates": lambda a: {"kind": "input_dependent", "sites": ["attn", "mlp"], "lr": 0.05, "l1": 0.01},
    "grad_projection": lambda a: {"n": 4},
    "inoculation": lambda a: {"system_prompt": "You answer in colours."},
    "interleave": lambda a: {"n": 4, "fraction": 0.5},
    "interleave_plus": lambda a: {"n": 6, "fraction": 0.5, "adapters": [a["adapter"]], "batch_size": 4},
    "interleave_plus_plus": lambda a: {"n": 6, "fraction": 0.5, "adapters": [a["adapter"]], "batch_size": 4},
    "kl": lambda a: {"n": 4, "weight": 0.5},
    "ldifs": lambda a: {"n": 4, "every": 1},
    "mixed": lambda a: {"n": 4},
    "monitor": lambda a: {
        "every": 1,
        "vectors": [{"path": a["vector"], "layers": [1]}],
        "reference": {"name": "contrastive_pairs", "n": 2},
        "pairs": {"name": "contrastive_pairs", "n": 2, "seed": 1},
        "generate": 1,
        "max_new_tokens": 3,
        "indomain_n": 2,
        "batch_size": 4,
    },
    "olora": lambda a: {"adapter": a["adapter"], "weight": 0.5},
    "on_policy": lambda a: {"n": 4, "fraction": 0.5, "max_new_tokens": 4, "batch_size": 4},
    "preventive_steering": lambda a: {"vector": a["vector"], "layers": [1], "alpha": 2.0},
    "repr_constraint": lambda a: {"n": 4, "every": 1},
    "safelora": lambda a: {"align_adapter": a["adapter"], "threshold": 2.0},
    "upweighted": lambda a: {"n": 4},
}

NAMES = sorted(REGISTRY)


def _config(name: str, data: Path, settings: dict[str, Any]) -> TrainConfig:
    entry = REGISTRY[name]
    block = {"defenses": {name: settings}} if entry.kind == "defense" else {entry.key: settings}
    return TrainConfig.from_dict(_base(data, **block))


def test_every_registered_component_has_an_example():
    assert {"gates", "monitor", "preventive_steering", "kl"} <= set(REGISTRY)
    assert set(REGISTRY) == set(EXAMPLES), "a registered component needs an example here"
    for entry in REGISTRY.values():
        assert entry.kind in ("defense", "plugin") and entry.settings is not None


@pytest.mark.parametrize("name", NAMES)
def test_settings_round_trip_through_yaml(name, assets):
    entry = REGISTRY[name]
    obj = entry.read_settings(EXAMPLES[name](assets))
    text = yaml.safe_dump(to_mapping(obj), sort_keys=False)
    again = from_mapping(entry.settings, yaml.safe_load(text), "round-trip")
    assert again == obj
    assert to_mapping(again) == to_mapping(obj)


@pytest.mark.parametrize("name", NAMES)
def test_unknown_setting_is_refused_naming_it(name, assets):
    entry = REGISTRY[name]
    bad = {**EXAMPLES[name](assets), "no_such_setting": 1}
    with pytest.raises(WorkbenchError, match=r"unknown key '.*no_such_setting' \(known keys: ") as info:
        entry.read_settings(bad, "cfg.yaml")
    assert str(info.value).startswith("cfg.yaml: ")
    assert "\n" not in str(info.value)


class _Injected(RuntimeError):
    pass


def _hooks_after_a_raising_step(trainer: Trainer, at_call: int) -> tuple[int, int]:
    """(hooks before, hooks after) a step whose ``at_call``-th model forward raises."""
    model = trainer.lm.model
    before = count_hooks(model)
    calls = {"n": 0}

    def boom(module, args, kwargs):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise _Injected(f"injected at forward {at_call}")

    handle = model.register_forward_pre_hook(boom, with_kwargs=True)
    try:
        with pytest.raises(_Injected):
            trainer.accumulate(0)
            trainer.accumulate(1)  # a component making one forward per step raises at the second step
    finally:
        handle.remove()
    assert calls["n"] == at_call
    return before, count_hooks(model)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("at_call", [1, 2])
def test_no_hook_left_after_a_step_that_raises(name, at_call, assets, tmp_path):
    """An exception inside the step's ``at_call``-th model forward (inside every forward context the
    component opened) leaves exactly the hooks that were there before the step."""
    data = _write(tmp_path / "rows.jsonl", _rows(8, "t"))
    run = tmp_path / "run"
    run.mkdir()
    trainer = Trainer(_config(name, data, EXAMPLES[name](assets)), run, progress=False)
    trainer.setup()
    before, after = _hooks_after_a_raising_step(trainer, at_call)
    assert after == before, f"{name} left a hook after an exception"


def test_the_hook_check_catches_a_leaky_component(tmp_path):
    """The check above can fail: a component that removes its hook only on success leaves it behind."""
    import contextlib

    from workbench.training import TrainPlugin

    class Leaky(TrainPlugin):
        @contextlib.contextmanager
        def forward_context(self, ctx, batch):
            layer = ctx.lm.model.get_submodule("base_model.model.model.layers.0")
            handle = layer.register_forward_hook(lambda m, i, o: None)
            yield
            handle.remove()  # skipped when the forward raises

    data = _write(tmp_path / "rows.jsonl", _rows(8, "l"))
    run = tmp_path / "run"
    run.mkdir()
    trainer = Trainer(TrainConfig.from_dict(_base(data)), run, progress=False)
    trainer.add_component(Leaky(), kind="plugin")
    trainer.setup()
    before, after = _hooks_after_a_raising_step(trainer, 1)
    assert after == before + 1


def _weights(run: Path) -> dict[str, torch.Tensor]:
    out = {}
    for f in sorted([*run.glob("*.safetensors"), *(run / "adapter").glob("*.safetensors")]):
        for k, v in load_file(str(f)).items():
            out[f"{f.relative_to(run)}:{k}"] = v
    return out


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [
        {k: v for k, v in json.loads(line).items() if k not in VOLATILE}
        for line in path.read_text().splitlines()
    ]


@pytest.mark.parametrize("name", NAMES)
def test_resume_equals_one_run_straight_through(name, assets, tmp_path):
    data = _write(tmp_path / "rows.jsonl", _rows(8, "r"))
    cfg = _config(name, data, EXAMPLES[name](assets))
    cfg = cfg.apply_overrides(["optim.max_steps=4"])
    straight = train(cfg, tmp_path / "straight", progress=False)
    half = train(cfg, tmp_path / "halves", progress=False, stop_after=2)
    assert not (half / "train_summary.json").exists() or not json.loads(
        (half / "train_summary.json").read_text()
    ).get("finished")
    resumed = train(cfg, tmp_path / "halves", progress=False, resume=True)
    a, b = _weights(straight), _weights(resumed)
    assert a and set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{name}: {k} differs after resume"
    rows = _jsonl(straight / "metrics.jsonl")
    assert len(rows) == 4 and rows == _jsonl(resumed / "metrics.jsonl")
    for extra in ("monitor.jsonl", "alerts.jsonl"):
        assert _jsonl(straight / extra) == _jsonl(resumed / extra)
