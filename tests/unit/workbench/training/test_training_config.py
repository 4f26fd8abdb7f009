"""Training config: YAML round-trip, --set overrides with type conversion, errors that name key and file."""

from __future__ import annotations

import pytest

from workbench import WorkbenchError
from workbench.training import TrainConfig
from workbench.training._config import describe_config

BASE = """
model: random:tiny-llama
data:
  - name: advice_medical
    n: 8
  - rows.jsonl
lora:
  r: 8
optim:
  lr: 1e-5
  max_steps: 3
defenses:
  kl: {weight: 0.5}
"""


def _write(tmp_path, text, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_yaml_round_trip_keeps_every_setting(tmp_path):
    cfg = TrainConfig.from_yaml(_write(tmp_path, BASE))
    assert cfg.optim.lr == 1e-5  # YAML 1.1 reads "1e-5" as a string; it must become a float
    assert cfg.data[0].name == "advice_medical" and cfg.data[1].path == "rows.jsonl"
    assert cfg.lora.r == 8 and cfg.lora.alpha == 64 and cfg.lora.use_rslora
    assert cfg.defenses["kl"]["weight"] == 0.5 and cfg.defenses["kl"]["direction"] == "forward"
    again = TrainConfig.from_yaml(_write(tmp_path, cfg.to_yaml(), "again.yaml"))
    assert again.to_dict() == cfg.to_dict()


def test_overrides_convert_types_and_create_defense_entries(tmp_path):
    cfg = TrainConfig.from_yaml(_write(tmp_path, BASE))
    new = cfg.apply_overrides(
        [
            "lora.r=16",
            "optim.lr=3e-4",
            "defenses.kl.weight=2",
            "defenses.dpo.beta=0.2",
            "data.0.n=5",
            "optim.shuffle=false",
        ]
    )
    assert new.lora.r == 16 and isinstance(new.lora.r, int)
    assert new.optim.lr == pytest.approx(3e-4)
    assert new.defenses["kl"]["weight"] == 2.0 and isinstance(new.defenses["kl"]["weight"], float)
    assert new.defenses["dpo"]["beta"] == 0.2 and new.defenses["dpo"]["source"] == "contrastive_pairs"
    assert new.data[0].n == 5 and new.optim.shuffle is False
    assert cfg.lora.r == 8  # the original is unchanged
    gates_only = cfg.apply_overrides(["lora=null", "gates.kind=per_head"])
    assert gates_only.lora is None and gates_only.gates == {"kind": "per_head"}


def test_unknown_key_names_the_key_and_the_file(tmp_path):
    p = _write(tmp_path, BASE.replace("  r: 8", "  r: 8\n  rank: 4"))
    with pytest.raises(WorkbenchError, match=r"cfg\.yaml.*unknown key 'lora\.rank'"):
        TrainConfig.from_yaml(p)
    with pytest.raises(WorkbenchError, match=r"unknown key 'optim\.learning_rate'"):
        TrainConfig.from_yaml(_write(tmp_path, BASE)).apply_overrides(["optim.learning_rate=1"])
    with pytest.raises(WorkbenchError, match=r"cfg2\.yaml.*defenses\.kl\.wieght"):
        TrainConfig.from_yaml(_write(tmp_path, BASE.replace("weight: 0.5", "wieght: 0.5"), "cfg2.yaml"))


def test_bad_values_are_refused_with_the_key():
    with pytest.raises(WorkbenchError, match=r"'optim\.batch_size' must be an integer"):
        TrainConfig.from_dict({"data": ["x.jsonl"], "optim": {"batch_size": "four"}})
    with pytest.raises(WorkbenchError, match=r"loss_reduction.*token_mean, sequence_mean"):
        TrainConfig.from_dict({"data": ["x.jsonl"], "optim": {"loss_reduction": "sum"}})
    with pytest.raises(WorkbenchError, match=r"direction.*forward, reverse"):
        TrainConfig.from_dict({"data": ["x.jsonl"], "defenses": {"kl": {"direction": "sideways"}}})
    with pytest.raises(WorkbenchError, match="nothing to train"):
        TrainConfig.from_dict({"data": ["x.jsonl"], "lora": None})
    with pytest.raises(WorkbenchError, match="'data' is empty"):
        TrainConfig.from_dict({})
    with pytest.raises(WorkbenchError, match="key=value"):
        TrainConfig.from_dict({"data": ["x.jsonl"]}).apply_overrides(["lora.r"])


def test_unknown_defense_lists_the_registered_ones(tmp_path):
    p = _write(tmp_path, BASE.replace("kl: {weight: 0.5}", "klx: {}"))
    with pytest.raises(
        WorkbenchError, match=r"unknown defense 'klx'.*registered defenses: .*interleave_plus.*kl"
    ):
        TrainConfig.from_yaml(p)


def test_every_field_has_help_text():
    rows = describe_config()
    assert {"optim.lr", "lora.r", "defenses", "gates"} <= {k for k, _, _ in rows}
    assert all(h for _, _, h in rows)
