"""GGUF control vectors numbered as llama.cpp reads them (direction.N = output of block N), and ``.pt`` rows.

The readers and writers of the other programs are re-implemented here from their published rules, in our
own words, so the workbench's files are checked against them rather than against themselves:

* llama.cpp (``common_control_vector_load_one`` + ``llama_adapter_cvec::apply``): ``direction.N`` with
  N >= 1 goes to offset ``n_embd * (N - 1)`` of a flat buffer (zeros where a direction is missing; several
  files summed, each times its strength); layer ``il`` (1..n_layer-1) takes offset ``n_embd * (il - 1)``
  and the graph adds it to the output of layer ``il`` (0-based).
* repeng: layer key ``L`` is read from ``hidden_states[L + 1]`` and written as ``direction.L``.
* persona_vectors ``.pt``: ``[n_layers + 1, d_model]`` over ``hidden_states`` (row 0 = embeddings).
"""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from probes import PersonaVector, export_gguf, import_gguf, import_pt
from tests.helpers import load_tiny
from workbench import ModelFingerprint, WorkbenchError, read_sites

pytestmark = pytest.mark.usefixtures("one_thread")

FP = ModelFingerprint("llama", n_layers=4, d_model=8, n_heads=2, vocab_size=260, source="random:x")


def vec(seed: int = 0, fp: ModelFingerprint = FP, trait: str = "evil", statistic: str = "response_avg"):
    g = torch.Generator().manual_seed(seed)
    rows = torch.randn(fp.n_layers, fp.d_model, generator=g)
    return PersonaVector(rows, trait=trait, statistic=statistic, fingerprint=fp)


def tensors_of(path) -> dict[str, np.ndarray]:
    return {
        t.name: np.array(t.data, dtype=np.float32).reshape(-1) for t in gguf.GGUFReader(str(path)).tensors
    }


# -- independent re-implementations of the other programs ------------------------------------------------


def llamacpp_load(files: list[tuple[str, float]]) -> tuple[int, np.ndarray]:
    """llama.cpp's loader: (n_embd, flat buffer) for ``[(path, strength), ...]``; raises like it refuses."""
    n_embd, total = -1, np.zeros(0, dtype=np.float32)
    for path, strength in files:
        reader = gguf.GGUFReader(path)
        max_layer, one_embd = 0, -1
        for t in reader.tensors:
            prefix, _, suffix = t.name.partition(".")
            try:
                idx = int(suffix) if prefix == "direction" else -1
            except ValueError:
                idx = -1
            if idx < 0:
                raise ValueError("invalid/unparsable direction tensor layer index")
            if idx == 0:
                raise ValueError("invalid (zero) direction tensor layer index")
            if t.tensor_type != gguf.GGMLQuantizationType.F32:
                raise ValueError("invalid (non-F32) direction tensor type")
            if one_embd == -1:
                one_embd = int(t.n_elements)
            elif int(t.n_elements) != one_embd:
                raise ValueError("direction tensor does not match previous dimensions")
            max_layer = max(max_layer, idx)
        by_name = {t.name: np.array(t.data, dtype=np.float32).reshape(-1) for t in reader.tensors}
        data = np.zeros(one_embd * max_layer, dtype=np.float32)
        for il in range(1, max_layer + 1):  # layer 0 has no slot in the buffer
            src = by_name.get(f"direction.{il}")
            if src is not None:
                data[one_embd * (il - 1) : one_embd * il] = src * strength
        if n_embd != -1 and one_embd != n_embd:
            raise ValueError("control vectors in different files have different dimensions")
        n_embd = one_embd
        if len(data) > len(total):
            total = np.concatenate([total, np.zeros(len(data) - len(total), dtype=np.float32)])
        total[: len(data)] += data
    return n_embd, total


def llamacpp_layer_tensors(n_embd: int, buf: np.ndarray, n_layer: int) -> dict[int, torch.Tensor]:
    """``llama_adapter_cvec::apply``: the tensor added after layer ``il`` for il = 1..n_layer-1."""
    out = {}
    for il in range(1, n_layer):
        off = n_embd * (il - 1)
        row = np.zeros(n_embd, dtype=np.float32)
        if off + n_embd <= len(buf):
            row = buf[off : off + n_embd]
        out[il] = torch.from_numpy(row.copy())
    return out


def repeng_write(directions: dict[int, np.ndarray], model_type: str, path) -> None:
    """repeng's ``ControlVector.export_gguf``: layer key L -> tensor ``direction.L``."""
    writer = gguf.GGUFWriter(str(path), "controlvector")
    writer.add_string("controlvector.model_hint", model_type)
    writer.add_uint32("controlvector.layer_count", len(directions))
    for layer, d in directions.items():
        writer.add_tensor(f"direction.{layer}", d.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def hand_written(path, tensors: dict[str, np.ndarray], arch: str = "controlvector") -> str:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_string(f"{arch}.model_hint", "llama")
    for name, data in tensors.items():
        writer.add_tensor(name, data)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


def hidden_states(lm, text: str = "The quick brown fox jumps over the lazy dog") -> tuple:
    ids = lm.tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        return lm.model(**ids, output_hidden_states=True).hidden_states, ids


# -- export numbering ------------------------------------------------------------------------------------


def test_exported_tensor_names_are_direction_1_to_n_minus_1(tmp_path):
    v = vec(1)
    path = export_gguf(v, tmp_path / "v.gguf", scale=2.0)
    got = tensors_of(path)
    assert sorted(got) == ["direction.1", "direction.2", "direction.3"]  # 4 blocks, block 0 left out
    for n in (1, 2, 3):  # direction.N is block N (scaled)
        assert np.allclose(got[f"direction.{n}"], 2.0 * v.layer(n).numpy())
    fields = gguf.GGUFReader(str(path)).fields
    assert fields["general.architecture"].contents() == "controlvector"
    assert fields["controlvector.model_hint"].contents() == "llama"
    assert fields["controlvector.layer_count"].contents() == 3
    assert (
        fields["workbench.direction_index"]
        .contents()
        .startswith("block output (direction.N = output of block N")
    )
    assert json.loads(fields["workbench.fingerprint"].contents())["n_layers"] == 4


def test_export_refuses_block_0_and_duplicates(tmp_path):
    v = vec(2)
    with pytest.raises(WorkbenchError, match=r"block 0 cannot be exported .*1\.\.3") as err:
        export_gguf(v, tmp_path / "a.gguf", layers=[0, 2])
    assert "\n" not in str(err.value)
    with pytest.raises(WorkbenchError, match=r"layers \[2\] given twice"):
        export_gguf(v, tmp_path / "b.gguf", layers=[2, 2])
    with pytest.raises(WorkbenchError, match="out of range"):
        export_gguf(v, tmp_path / "c.gguf", layers=[4])
    one = PersonaVector(torch.ones(1, 8), "evil")
    with pytest.raises(WorkbenchError, match="has only block 0"):
        export_gguf(one, tmp_path / "d.gguf")
    bad = vec(2)
    bad.vectors[2, 3] = float("nan")
    with pytest.raises(WorkbenchError, match="NaN or infinite values at block 2"):
        export_gguf(bad, tmp_path / "e.gguf")
    assert not list(tmp_path.iterdir())  # nothing half-written
    assert sorted(tensors_of(export_gguf(v, tmp_path / "f.gguf", layers=[3, 1]))) == [
        "direction.1",
        "direction.3",
    ]


# -- import ------------------------------------------------------------------------------------------


def test_round_trip_equals_original_for_blocks_1_to_n_minus_1(tmp_path):
    v = vec(3, statistic="prompt_last")
    path = export_gguf(v, tmp_path / "v.gguf")
    for fp in (FP, None):  # with the model's fingerprint, or the one the export wrote into the file
        back = import_gguf(path, fp)
        assert back.vectors.shape == (4, 8)
        assert torch.equal(back.vectors[1:], v.vectors[1:])
        assert torch.equal(back.vectors[0], torch.zeros(8))  # block 0 was not exportable
        assert back.metadata["blocks_present"] == [1, 2, 3]
        assert back.trait == "evil" and back.statistic == "prompt_last" and back.fingerprint == FP
    renamed = import_gguf(path, trait="mine", statistic="response_avg")
    assert renamed.trait == "mine" and renamed.statistic == "response_avg"


def test_llamacpp_loader_steers_each_row_at_the_block_it_was_read_from(tmp_path):
    v = vec(4)
    full = export_gguf(v, tmp_path / "full.gguf")
    n_embd, buf = llamacpp_load([(str(full), 1.0)])
    layers = llamacpp_layer_tensors(n_embd, buf, FP.n_layers)
    assert sorted(layers) == [1, 2, 3]  # llama.cpp has no tensor for layer 0
    for il, added in layers.items():  # added to the output of layer il = our block il
        assert torch.equal(added, v.layer(il))
    # two files summed, each times its strength; a file with only block 2 leaves blocks 1 and 3 alone
    part = export_gguf(v, tmp_path / "part.gguf", layers=[2])
    n_embd, buf = llamacpp_load([(str(full), 0.5), (str(part), 2.0)])
    layers = llamacpp_layer_tensors(n_embd, buf, FP.n_layers)
    assert torch.allclose(layers[2], 2.5 * v.layer(2))
    assert torch.allclose(layers[1], 0.5 * v.layer(1)) and torch.allclose(layers[3], 0.5 * v.layer(3))
    # the re-implementation refuses what llama.cpp refuses (so agreeing with it means something)
    zero = hand_written(tmp_path / "zero.gguf", {"direction.0": np.ones(8, np.float32)})
    with pytest.raises(ValueError, match="zero"):
        llamacpp_load([(zero, 1.0)])


def test_repeng_file_lands_at_block_L(tmp_path):
    g = np.random.default_rng(0)
    dirs = {3: g.standard_normal(8), 1: g.standard_normal(8)}  # repeng writes keys in its own order
    path = tmp_path / "repeng.gguf"
    repeng_write(dirs, "llama", path)
    v = import_gguf(path, FP)
    assert v.metadata["blocks_present"] == [1, 3]
    assert v.metadata["file_direction_index"] is None and v.metadata["source_fingerprint"] is None
    for block in (1, 3):
        assert torch.allclose(v.layer(block), torch.from_numpy(dirs[block].astype(np.float32)))
    assert torch.equal(v.vectors[0], torch.zeros(8)) and torch.equal(v.vectors[2], torch.zeros(8))
    assert v.trait == "imported" and v.statistic == "response_avg" and v.fingerprint == FP
    bare = import_gguf(path)  # no model known: as many blocks as the highest direction needs
    assert bare.vectors.shape == (4, 8) and bare.fingerprint is None


def test_repeng_key_read_from_hidden_states_matches_our_block():
    """repeng reads key L at hidden_states[L + 1]; that is our blocks.{L}.hook_resid_post."""
    lm = load_tiny("tiny-llama")
    hs, ids = hidden_states(lm)
    sites = [f"blocks.{layer}.hook_resid_post" for layer in range(lm.n_layers)]
    with torch.no_grad(), read_sites(lm, sites) as cache:
        lm.model(**ids)
    last = lm.n_layers - 1
    for layer in range(last):
        assert torch.allclose(cache[sites[layer]][0, -1], hs[layer + 1][0, -1], atol=1e-5)
    # HF's last hidden state comes after the final norm; the block's own output is before it
    assert not torch.allclose(cache[sites[last]][0, -1], hs[last + 1][0, -1], atol=1e-3)
    assert torch.allclose(lm.model.model.norm(cache[sites[last]])[0, -1], hs[last + 1][0, -1], atol=1e-5)


def test_pt_rows_are_hidden_states_so_row_l_plus_1_is_block_l(tmp_path):
    """A persona_vectors-style .pt built from HF hidden_states imports so that vectors[l] = block l's output."""
    lm = load_tiny("tiny-llama")
    hs, ids = hidden_states(lm)
    pt = torch.stack([h[0].mean(0) for h in hs])  # [n_layers + 1, d_model], row 0 = embeddings
    path = tmp_path / "evil_response_avg_diff.pt"
    torch.save(pt, path)
    v = import_pt(path, lm.fingerprint)
    sites = [f"blocks.{layer}.hook_resid_post" for layer in range(lm.n_layers)]
    with torch.no_grad(), read_sites(lm, sites) as cache:
        lm.model(**ids)
    last = lm.n_layers - 1
    for layer in range(last):
        assert torch.allclose(v.layer(layer), cache[sites[layer]][0].mean(0), atol=1e-5)
    # the file's last row is HF's last hidden state, taken after the final norm
    assert torch.allclose(v.layer(last), lm.model.model.norm(cache[sites[last]])[0].mean(0), atol=1e-5)
    assert not torch.allclose(v.layer(0), pt[0])  # the embedding row was dropped


@pytest.mark.parametrize(
    ("tensors", "arch", "message"),
    [
        ({"direction.0": np.ones(8, np.float32)}, "controlvector", r"tensor 'direction\.0' is refused"),
        (
            {"direction.x": np.ones(8, np.float32)},
            "controlvector",
            r"tensor 'direction\.x' is not direction\.N",
        ),
        ({"direction.-2": np.ones(8, np.float32)}, "controlvector", "a negative layer index"),
        ({"direction.01": np.ones(8, np.float32)}, "controlvector", r"'direction\.01' is not direction\.N"),
        ({"bias.1": np.ones(8, np.float32)}, "controlvector", r"'bias\.1' is not direction\.N"),
        (
            {"direction.1": np.ones(8, np.float32), "direction.2": np.ones(6, np.float32)},
            "controlvector",
            r"'direction\.2' has 6 values but 'direction\.1' has 8",
        ),
        ({"direction.1": np.ones(8, np.float16)}, "controlvector", "has type F16; control vectors need F32"),
        (
            {"direction.1": np.ones((2, 8), np.float32)},
            "controlvector",
            r"shape \[8, 2\]; a direction is 1-D",
        ),
        ({"direction.1": np.ones(8, np.float32)}, "llama", "general.architecture is 'llama'"),
        ({}, "controlvector", "holds no direction tensors"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, tensors, arch, message):
    path = hand_written(tmp_path / "bad.gguf", tensors, arch=arch)
    with pytest.raises(WorkbenchError, match=message) as err:
        import_gguf(path)
    assert "\n" not in str(err.value) and "bad.gguf" in str(err.value)


def test_import_checks_the_model(tmp_path):
    path = hand_written(tmp_path / "w.gguf", {"direction.2": np.ones(6, np.float32)})
    with pytest.raises(WorkbenchError, match="width 6 but the model's d_model is 8"):
        import_gguf(path, FP)
    far = hand_written(tmp_path / "far.gguf", {"direction.4": np.ones(8, np.float32)})
    with pytest.raises(
        WorkbenchError, match=r"'direction\.4' is for block 4 but the model has 4 blocks \(0\.\.3\)"
    ):
        import_gguf(far, FP)
    ours = export_gguf(vec(5), tmp_path / "ours.gguf")
    other = ModelFingerprint("qwen2", n_layers=4, d_model=8, n_heads=2, vocab_size=300)
    with pytest.raises(WorkbenchError, match="exported for another model"):
        import_gguf(ours, other)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf at all")
    with pytest.raises(WorkbenchError, match="not a readable GGUF file"):
        import_gguf(junk)
    with pytest.raises(WorkbenchError, match="does not exist"):
        import_gguf(tmp_path / "missing.gguf")


def test_files_from_the_old_workbench_are_read_one_block_later_unless_flagged(tmp_path):
    v = vec(6)
    old = hand_written(  # what the workbench wrote before the fix: block l as direction.{l + 1}, no key
        tmp_path / "old.gguf", {f"direction.{layer + 1}": v.layer(layer).numpy() for layer in range(4)}
    )
    fixed = import_gguf(old, FP, from_old_workbench=True)
    assert torch.equal(fixed.vectors, v.vectors)  # every block back where it was read, block 0 included
    assert fixed.metadata["direction_index"].startswith("old workbench")
    as_llamacpp = import_gguf(old)  # indistinguishable from a llama.cpp file: read one block later
    assert torch.equal(as_llamacpp.vectors[1:], v.vectors)
    # against the model, its last direction lies past the last block: the error points to the flag
    with pytest.raises(WorkbenchError, match=r"'direction\.4' is for block 4 .*--old-workbench-numbering"):
        import_gguf(old, FP)
    new = export_gguf(v, tmp_path / "new.gguf")
    with pytest.raises(WorkbenchError, match="exported with the current numbering"):
        import_gguf(new, from_old_workbench=True)


# -- steering --------------------------------------------------------------------------------------------


def test_imported_vector_steers_like_the_original_and_like_llamacpp(tmp_path):
    from steering import Steerer

    lm = load_tiny("tiny-llama")
    fp = lm.fingerprint
    g = torch.Generator().manual_seed(7)
    v = PersonaVector(torch.randn(fp.n_layers, fp.d_model, generator=g), "evil", fingerprint=fp)
    path = export_gguf(v, tmp_path / "v.gguf")
    back = import_gguf(path, fp)
    ids = lm.tokenizer("steer me please", return_tensors="pt")

    def logits(vector=None, layers=None, alpha=3.0):
        with torch.no_grad():
            if vector is None:
                return lm.model(**ids).logits
            with Steerer(lm, vector, layers, alpha):
                return lm.model(**ids).logits

    base = logits()
    block = 1
    ours = logits(back, [block])
    assert torch.equal(ours, logits(v, [block]))
    assert not torch.allclose(ours, base)
    assert not torch.allclose(ours, logits(v, [block + 1]))

    # llama.cpp's way: the layer tensors its loader builds, added to the output of each decoder layer
    n_embd, buf = llamacpp_load([(str(path), 3.0)])
    added = llamacpp_layer_tensors(n_embd, buf, fp.n_layers)
    layers = lm.model.model.layers

    def add_after(il):
        def hook(module, args, output):
            if isinstance(output, tuple):
                return (output[0] + added[il], *output[1:])
            return output + added[il]

        return hook

    handles = [layers[il].register_forward_hook(add_after(il)) for il in added]
    try:
        with torch.no_grad():
            cpp = lm.model(**ids).logits
    finally:
        for h in handles:
            h.remove()
    assert torch.allclose(cpp, logits(back, list(added), alpha=3.0), atol=1e-5)


def test_steering_reads_a_gguf_file_by_suffix_or_magic(tmp_path):
    from steering import load_vector

    lm = load_tiny("tiny-llama")
    fp = lm.fingerprint
    v = PersonaVector(
        torch.randn(fp.n_layers, fp.d_model, generator=torch.Generator().manual_seed(3)),
        "evil",
        fingerprint=fp,
    )
    path = export_gguf(v, tmp_path / "v.gguf")
    renamed = tmp_path / "v.bin"
    renamed.write_bytes(path.read_bytes())
    for p in (path, renamed):
        got = load_vector(p, lm=lm)
        assert torch.equal(got.vectors[1:], v.vectors[1:])
        assert torch.count_nonzero(got.vectors[0]) == 0


# -- command line ----------------------------------------------------------------------------------------


def test_cli_export_then_import(tmp_path):
    from workbench.cli import app

    v = vec(8, fp=load_tiny("tiny-llama").fingerprint)
    src = v.save(tmp_path / "v.safetensors")
    runner = CliRunner()
    res = runner.invoke(app, ["vector", "export", str(src), "--out", str(tmp_path / "v.gguf")])
    assert res.exit_code == 0, res.output
    assert "block 0 left out" in res.output
    assert sorted(tensors_of(tmp_path / "v.gguf")) == [f"direction.{n}" for n in range(1, v.n_layers)]
    res = runner.invoke(
        app,
        ["vector", "import", str(tmp_path / "v.gguf"), "--out", str(tmp_path / "b.safetensors"),
         "--model", "random:tiny-llama"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "blocks without a direction (zero rows): 0" in res.output
    back = PersonaVector.load(tmp_path / "b.safetensors", fingerprint=v.fingerprint)
    assert torch.equal(back.vectors[1:], v.vectors[1:])
    res = runner.invoke(
        app, ["vector", "export", str(src), "--out", str(tmp_path / "z.gguf"), "--layers", "0"]
    )
    assert isinstance(res.exception, WorkbenchError) and "block 0 cannot be exported" in str(res.exception)

    pt = tmp_path / "pv.pt"
    torch.save(torch.cat([torch.zeros(1, v.d_model), v.vectors]), pt)
    res = runner.invoke(app, ["vector", "import", str(pt), "--out", str(tmp_path / "p.safetensors")])
    assert res.exit_code == 0, res.output
    assert torch.equal(PersonaVector.load(tmp_path / "p.safetensors").vectors, v.vectors)
