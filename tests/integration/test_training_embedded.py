"""Integration: the training loop on the embedded SmolLM2-135M model, plain LoRA and every defense at once."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.training import TrainConfig, registered_defenses, train

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_thread")]


BASE = {
    "model": "smollm2-135m",
    "device": "cpu",
    "data": [{"name": "advice_medical", "n": 8}],
    "lora": {"r": 8, "alpha": 16},
    "optim": {"lr": 1e-4, "batch_size": 1, "grad_accum": 1, "warmup_steps": 0, "max_length": 112},
    "checkpoint_every": 0,
    "plots": False,
}


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    cfg = TrainConfig.from_dict({**BASE, "optim": {**BASE["optim"], "max_steps": 3}})
    return train(cfg, tmp_path_factory.mktemp("plain") / "run", progress=False)


def test_plain_lora_on_bad_medical_advice(plain_run):
    rows = _rows(plain_run)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["tokens"] > 0 and r["task_loss"] > 0 for r in rows)
    cfg = json.loads((plain_run / "adapter" / "adapter_config.json").read_text())
    assert set(cfg["target_modules"]) == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    }


def test_every_defense_combined_in_one_run(tmp_path, plain_run, smollm):
    from probes import PersonaVector

    vec = PersonaVector(
        0.01 * torch.randn(smollm.n_layers, smollm.d_model, generator=torch.Generator().manual_seed(0)),
        trait="test",
        fingerprint=smollm.fingerprint,
    ).save(tmp_path / "vec.safetensors")
    adapter = str(plain_run / "adapter")
    pool = {"source": "benign_safety", "n": 6}
    defenses = {  # cheap settings: one step with batch size 1; kl and ldifs share the task reference pass
        "kl": {},
        "ldifs": {"every": 10},
        "repr_constraint": {"every": 10, **pool},
        "interleave": {"fraction": 0.1, **pool},
        "interleave_plus_plus": {"fraction": 0.1, "adapters": [adapter], **pool},
        "on_policy": {"fraction": 0.1, "max_new_tokens": 6, **pool},
        "inoculation": {},
        "mixed": {"source": "benign_safety", "n": 2},
        "upweighted": {"weight": 0.5, **pool},
        "grad_projection": {"batch_size": 1, **pool},
        "dpo": {"n": 4},
        "olora": {"adapter": adapter, "weight": 0.1},
        "safelora": {"align_adapter": adapter, "threshold": 0.5},
        "preventive_steering": {"vector": str(vec), "layers": [10], "alpha": 1.0},
    }
    shipped = {
        name for name in registered_defenses() if not name.startswith("test_")
    }  # unit tests register probes
    assert set(defenses) | {"interleave_plus"} == shipped
    cfg = TrainConfig.from_dict({**BASE, "optim": {**BASE["optim"], "max_steps": 1}, "defenses": defenses})
    run = train(cfg, tmp_path / "run", progress=False)
    (row,) = _rows(run)
    for term in ("kl", "ldifs", "repr_constraint", "upweighted", "dpo", "olora"):
        assert term in row and row[term] == row[term]  # present and not NaN
    assert "grad_projection_cos_before" in row
    assert (run / "adapter" / "adapter_model.safetensors").exists()
    assert (run / "adapter_unprojected" / "adapter_model.safetensors").exists()
    assert json.loads((run / "safelora.json").read_text())["total"] == 210
