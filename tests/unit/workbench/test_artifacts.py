"""Artifacts: safetensors with metadata and a fingerprint; a model of another shape is refused."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import load_tiny
from workbench import WorkbenchError, load_artifact, save_artifact


def test_round_trip(tmp_path):
    lm = load_tiny("tiny-llama")
    t = {"vec": torch.randn(lm.n_layers, lm.d_model)}
    path = save_artifact(
        tmp_path / "a.safetensors", t, kind="test", fingerprint=lm.fingerprint, metadata={"x": 1}
    )
    art = load_artifact(path, expect_kind="test", fingerprint=lm.fingerprint)
    torch.testing.assert_close(art.tensors["vec"], t["vec"])
    assert art.metadata == {"x": 1}
    assert art.fingerprint == lm.fingerprint
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_other_model_refused_naming_both(tmp_path):
    a, b = load_tiny("tiny-llama"), load_tiny("tiny-gpt2")
    path = save_artifact(
        tmp_path / "a.safetensors", {"v": torch.zeros(2)}, kind="test", fingerprint=a.fingerprint
    )
    with pytest.raises(WorkbenchError) as err:
        load_artifact(path, fingerprint=b.fingerprint)
    msg = str(err.value)
    assert "another model" in msg and "llama" in msg and "gpt2" in msg and "\n" not in msg


def test_same_shape_other_source_accepted(tmp_path):
    from dataclasses import replace

    a = load_tiny("tiny-llama")
    path = save_artifact(
        tmp_path / "a.safetensors", {"v": torch.zeros(2)}, kind="t", fingerprint=a.fingerprint
    )
    load_artifact(path, fingerprint=replace(a.fingerprint, source="a fine-tune of the same base"))


def test_truncated_file_gives_clear_error(tmp_path):
    a = load_tiny("tiny-llama")
    path = save_artifact(
        tmp_path / "a.safetensors", {"v": torch.randn(100)}, kind="t", fingerprint=a.fingerprint
    )
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WorkbenchError, match="not a readable safetensors file"):
        load_artifact(path)


def test_wrong_kind_and_missing_file(tmp_path):
    a = load_tiny("tiny-llama")
    path = save_artifact(
        tmp_path / "a.safetensors", {"v": torch.randn(3)}, kind="gates", fingerprint=a.fingerprint
    )
    with pytest.raises(WorkbenchError, match="'gates' artifact, expected 'persona_vector'"):
        load_artifact(path, expect_kind="persona_vector")
    with pytest.raises(WorkbenchError, match="does not exist"):
        load_artifact(tmp_path / "missing.safetensors")


def test_failed_write_keeps_old_file(tmp_path):
    a = load_tiny("tiny-llama")
    path = save_artifact(
        tmp_path / "a.safetensors", {"v": torch.ones(3)}, kind="t", fingerprint=a.fingerprint
    )

    class Weird:
        def detach(self):
            raise RuntimeError("fails mid-way")

    with pytest.raises(RuntimeError):
        save_artifact(path, {"v": torch.zeros(3), "w": Weird()}, kind="t", fingerprint=a.fingerprint)  # type: ignore[dict-item]
    torch.testing.assert_close(load_artifact(path).tensors["v"], torch.ones(3))
