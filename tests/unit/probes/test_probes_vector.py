"""PersonaVector: arithmetic, layer access, save/load with fingerprints, .pt import and GGUF export."""

from __future__ import annotations

import pickle

import pytest
import torch

from probes import PersonaVector, export_gguf, import_pt, load_vectors, save_vectors
from workbench import ModelFingerprint, WorkbenchError

FP = ModelFingerprint("llama", n_layers=3, d_model=8, n_heads=2, vocab_size=260, source="random:x")
OTHER = ModelFingerprint("llama", n_layers=4, d_model=8, n_heads=2, vocab_size=260, source="random:y")


def vec(seed: int = 0, trait: str = "evil", statistic: str = "response_avg", fp=FP) -> PersonaVector:
    g = torch.Generator().manual_seed(seed)
    return PersonaVector(torch.randn(3, 8, generator=g), trait=trait, statistic=statistic, fingerprint=fp)


def test_arithmetic_returns_new_vectors():
    a, b = vec(0), vec(1)
    before = a.vectors.clone()
    assert torch.allclose((a + b).vectors, before + b.vectors)
    assert torch.allclose((a - b).vectors, before - b.vectors)
    assert torch.allclose((a * 2.5).vectors, before * 2.5)
    assert torch.allclose((0.5 * a).vectors, before * 0.5)
    assert torch.allclose((-a).vectors, -before)
    assert torch.equal(a.vectors, before)  # operands untouched
    assert (a * 2).fingerprint == FP and (a * 2).statistic == "response_avg"
    assert (a * 2).metadata["derived"] == ["scale 2"]


def test_arithmetic_refuses_mismatches():
    a = vec(0)
    with pytest.raises(WorkbenchError, match="shapes"):
        a + PersonaVector(torch.zeros(4, 8), "evil")
    with pytest.raises(WorkbenchError, match="different models"):
        a + PersonaVector(torch.zeros(3, 8), "evil", fingerprint=ModelFingerprint("qwen2", 3, 8, 2, 260))
    with pytest.raises(TypeError):
        a * a  # noqa: B018
    with pytest.raises(TypeError):
        a + 1.0  # noqa: B018


def test_normalized_norms_and_layer():
    a = vec(3)
    a.vectors[1] = 0.0
    n = a.normalized()
    assert torch.allclose(n.norms(), torch.tensor([1.0, 0.0, 1.0]), atol=1e-6)
    assert a.norms().shape == (3,)
    assert torch.equal(a.layer(2), a.vectors[2])
    for bad in (3, -1, 10):
        with pytest.raises(WorkbenchError, match=r"layer .* out of range .* 3 layers"):
            a.layer(bad)


def test_shape_must_fit_fingerprint():
    with pytest.raises(WorkbenchError, match="does not fit"):
        PersonaVector(torch.zeros(3, 9), "evil", fingerprint=FP)
    with pytest.raises(WorkbenchError, match=r"\[n_layers, d_model\]"):
        PersonaVector(torch.zeros(8), "evil")
    with pytest.raises(WorkbenchError, match="unknown statistic"):
        PersonaVector(torch.zeros(3, 8), "evil", statistic="mean")


def test_check_model_width_and_layers():
    a = PersonaVector(torch.zeros(3, 8), "evil")
    a.check_model(FP)
    with pytest.raises(WorkbenchError, match="width 8 .* d_model is 16"):
        a.check_model(d_model=16)
    with pytest.raises(WorkbenchError, match="3 layers but the model has 4"):
        a.check_model(OTHER)


def test_save_load_all_statistics_in_one_file(tmp_path):
    vs = {s: vec(i, statistic=s) for i, s in enumerate(("response_avg", "prompt_avg", "prompt_last"))}
    for v in vs.values():
        v.metadata.update({"method": "mean_diff", "n_positive": 4, "data_hash": "abc"})
    vs["prompt_last"].metadata["n_positive"] = 5
    path = save_vectors(tmp_path / "v.safetensors", vs)
    back = load_vectors(path, fingerprint=FP)
    assert set(back) == set(vs)
    for s in vs:
        assert torch.equal(back[s].vectors, vs[s].vectors)
        assert back[s].trait == "evil" and back[s].site == "hook_resid_post"
        assert back[s].fingerprint == FP
    assert back["prompt_last"].metadata["n_positive"] == 5
    assert back["response_avg"].metadata["n_positive"] == 4
    meta = back["response_avg"].metadata
    assert meta["method"] == "mean_diff" and meta["data_hash"] == "abc"
    assert meta["fingerprint"]["d_model"] == 8 and meta["library_version"]
    one = PersonaVector.load(path, statistic="prompt_avg", fingerprint=FP)
    assert torch.equal(one.vectors, vs["prompt_avg"].vectors)


def test_load_refuses_another_model(tmp_path):
    path = vec().save(tmp_path / "v.safetensors")
    with pytest.raises(WorkbenchError, match="another model"):
        PersonaVector.load(path, fingerprint=OTHER)
    with pytest.raises(WorkbenchError, match="no 'prompt_last' vector"):
        PersonaVector.load(path, statistic="prompt_last")


def test_import_pt_shifts_the_embedding_row(tmp_path):
    n_layers, d = FP.n_layers, FP.d_model
    rows = torch.arange(n_layers + 1, dtype=torch.float32)[:, None].expand(n_layers + 1, d).clone()
    path = tmp_path / "evil_response_avg_diff.pt"
    torch.save(rows, path)
    v = import_pt(path, FP, trait="evil")
    assert isinstance(v, PersonaVector)
    assert v.vectors.shape == (n_layers, d)
    for layer in range(n_layers):  # our layer l = their row l + 1 (row 0 = embeddings)
        assert torch.all(v.layer(layer) == layer + 1)
    assert v.fingerprint == FP and v.trait == "evil"


def test_import_pt_dict_and_errors(tmp_path):
    t = torch.randn(FP.n_layers + 1, FP.d_model)
    path = tmp_path / "both.pt"
    torch.save({"response_avg": t, "prompt_avg": 2 * t}, path)
    got = import_pt(path, FP)
    assert set(got) == {"response_avg", "prompt_avg"}
    assert got["prompt_avg"].statistic == "prompt_avg"
    assert torch.equal(got["prompt_avg"].vectors, 2 * t[1:])

    wrong = tmp_path / "wrong.pt"
    torch.save(torch.randn(FP.n_layers, FP.d_model), wrong)  # forgot the embedding row
    with pytest.raises(WorkbenchError, match=r"wrong\.pt.*\(3, 8\).*expected \[4, 8\]"):
        import_pt(wrong, FP)

    unsafe = tmp_path / "unsafe.pt"
    unsafe.write_bytes(pickle.dumps(ModelFingerprint("x", 1, 1, 1, 1), protocol=2))
    with pytest.raises(WorkbenchError, match="unsafe.pt"):
        import_pt(unsafe)
    with pytest.raises(WorkbenchError, match="does not exist"):
        import_pt(tmp_path / "missing.pt")


def test_export_gguf_round_trip(tmp_path):
    import gguf

    v = vec(7)
    path = export_gguf(v, tmp_path / "evil.gguf", scale=2.0)
    reader = gguf.GGUFReader(str(path))
    fields = reader.fields
    assert fields["general.architecture"].contents() == "controlvector"
    assert fields["controlvector.model_hint"].contents() == "llama"
    assert fields["controlvector.layer_count"].contents() == 2  # block 0 has no llama.cpp direction
    got = {t.name: torch.tensor(t.data.copy()) for t in reader.tensors}
    assert sorted(got) == ["direction.1", "direction.2"]
    for layer in (1, 2):  # direction.N = output of block N, as llama.cpp and repeng read it
        assert torch.allclose(got[f"direction.{layer}"], 2.0 * v.layer(layer))

    some = export_gguf(v, tmp_path / "some.gguf", layers=[1])
    reader = gguf.GGUFReader(str(some))
    assert [t.name for t in reader.tensors] == ["direction.1"]
    with pytest.raises(WorkbenchError, match="out of range"):
        export_gguf(v, tmp_path / "bad.gguf", layers=[3])
    with pytest.raises(WorkbenchError, match="block 0 cannot be exported"):
        export_gguf(v, tmp_path / "zero.gguf", layers=[0])
