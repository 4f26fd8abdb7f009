"""The alignment-gating reference checkpoint (``gating_params.pth``): import, export, inversion, refusals, CLI.

The reference gate is recomputed here by hand, independently of ``gating``: the normalised layer input is read
from ``input_layernorm``'s output, and a forward pre-hook on ``o_proj`` replaces its input ``z`` by
``z * 2 * sigmoid(x_norm @ W.T + b)`` (or by ``z * (2 - g)`` for the reference's "inversion" model). The
checkpoints are written in the test with ``torch.save`` / safetensors, in the reference's key layout.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from gating import GateSet, export_reference_gates, gate_intervention, load_reference_gates
from gating._cli import gate as gate_cmd
from workbench import WorkbenchError
from workbench._hooks import count_hooks

pytestmark = pytest.mark.usefixtures("one_thread")

IDS = torch.tensor([[5, 80, 120, 33, 200, 7, 64], [9, 9, 44, 101, 250, 61, 3]])
KEY = "model.layers.{}.self_attn.gate_proj_myself.{}"


def _wide_qwen3():
    """A tiny Qwen3 whose attention width (4 heads x 24 = 96) differs from d_model (64), as in real Qwen3
    models: a transposed weight or a d_model-wide gate cannot pass for the right one here."""
    from transformers import AutoModelForCausalLM

    from workbench import LoadedModel
    from workbench._models import _fingerprint
    from workbench._shapes import make_config
    from workbench._sites import SiteMap
    from workbench._tokenizer import byte_tokenizer

    cfg = make_config("tiny-qwen3")
    cfg.head_dim = 24
    torch.manual_seed(3)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    sites = SiteMap.for_model(model)
    fp = _fingerprint(model, sites, "test:wide-qwen3")
    return LoadedModel(model=model, tokenizer=byte_tokenizer(), sites=sites, fingerprint=fp, spec="test")


_MODELS: dict[str, object] = {}


def _model(name: str):
    from tests.helpers import load_tiny

    if name == "wide-qwen3":
        if name not in _MODELS:
            _MODELS[name] = _wide_qwen3()
        return _MODELS[name]
    return load_tiny(name)


def _width(lm) -> int:
    return lm.model.model.layers[0].self_attn.o_proj.in_features


def _state(lm, layers=None, seed: int = 0, scale: float = 0.4, prefix: str = "model.", dtype=torch.float32):
    """A reference-layout state dict with random gates at ``layers`` (default: all)."""
    g = torch.Generator().manual_seed(seed)
    ch, d = _width(lm), lm.model.config.hidden_size
    out = {}
    for i in range(lm.n_layers) if layers is None else layers:
        out[f"{prefix}layers.{i}.self_attn.gate_proj_myself.weight"] = (
            torch.randn(ch, d, generator=g) * scale
        ).to(dtype)
        out[f"{prefix}layers.{i}.self_attn.gate_proj_myself.bias"] = (
            torch.randn(ch, generator=g) * scale
        ).to(dtype)
    return out


@contextlib.contextmanager
def _reference(lm, state, *, invert: bool = False, prefix: str = "model."):
    """The reference model's forward, by hand: ``o_proj(z * g)``, ``g = 2 * sigmoid(x_norm @ W.T + b)``."""
    seen: dict[int, torch.Tensor] = {}
    handles = []
    for i, layer in enumerate(lm.model.model.layers):
        wk = f"{prefix}layers.{i}.self_attn.gate_proj_myself.weight"
        if wk not in state:
            continue
        W, b = state[wk].float(), state[wk[: -len("weight")] + "bias"].float()

        def keep(mod, args, out, i=i):
            seen[i] = out  # [batch, pos, d_model], the normalised layer input

        def gate(mod, args, i=i, W=W, b=b):
            z = args[0]  # [batch, pos, n_heads * d_head], the per-head attention output, heads concatenated
            g = 2.0 * torch.sigmoid(seen.pop(i) @ W.T + b)
            return (z * ((2.0 - g) if invert else g), *args[1:])

        handles.append(layer.input_layernorm.register_forward_hook(keep))
        handles.append(layer.self_attn.o_proj.register_forward_pre_hook(gate))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def _logits(lm, ids=IDS):
    return lm.model(input_ids=ids).logits


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-qwen3", "wide-qwen3"])
def test_loaded_reference_gates_match_the_reference_computation(tmp_path, name):
    lm = _model(name)
    state = _state(lm)
    torch.save(state, tmp_path / "gating_params.pth")
    gates = load_reference_gates(tmp_path / "gating_params.pth", lm)
    assert (gates.kind, gates.sites, gates.layers) == ("input_dependent", ("attn",), list(range(lm.n_layers)))
    assert gates.channels == {"attn": _width(lm)} and gates.fingerprint == lm.fingerprint
    base = _logits(lm)
    with _reference(lm, state):
        want = _logits(lm)
    with gates.attached(lm, alpha=1.0):
        got = _logits(lm)
    assert (want - base).abs().max() > 1e-2, "the gates must change the logits for this test to mean anything"
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert count_hooks(lm.model) == 0


@pytest.mark.parametrize("name", ["tiny-llama", "wide-qwen3"])
def test_reference_inversion_model_equals_alpha_minus_one(tmp_path, name):
    lm = _model(name)
    state = _state(lm, seed=1, scale=0.6)
    torch.save(state, tmp_path / "g.pth")
    gates = load_reference_gates(tmp_path / "g.pth", lm)
    with _reference(lm, state, invert=True):
        want = _logits(lm)
    with _reference(lm, state):
        not_inverted = _logits(lm)
    with gates.attached(lm, alpha=-1.0):
        got = _logits(lm)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert (want - not_inverted).abs().max() > 1e-2


def test_zero_reference_gates_are_the_identity(tmp_path, tiny_llama):
    lm = tiny_llama
    state = {k: torch.zeros_like(v) for k, v in _state(lm).items()}
    torch.save(state, tmp_path / "zero.pth")
    gates = load_reference_gates(tmp_path / "zero.pth", lm)
    base = _logits(lm)
    for alpha in (1.0, -1.0):
        with gates.attached(lm, alpha=alpha):
            assert torch.equal(_logits(lm), base)


@pytest.mark.parametrize("prefix", ["", "base_model.model.model.", "module.model."])
def test_prefixed_keys_safetensors_and_bfloat16_load_the_same(tmp_path, tiny_llama, prefix):
    from safetensors.torch import save_file

    lm = tiny_llama
    plain = _state(lm, seed=2)
    torch.save(plain, tmp_path / "plain.pth")
    save_file(_state(lm, seed=2, prefix=prefix), str(tmp_path / "prefixed.safetensors"))
    a = load_reference_gates(tmp_path / "plain.pth", lm)
    b = load_reference_gates(tmp_path / "prefixed.safetensors", lm)
    for (_, la, ga), (_, lb, gb) in zip(a.items(), b.items(), strict=True):
        assert (
            la == lb
            and torch.equal(ga.proj.weight, gb.proj.weight)
            and torch.equal(ga.proj.bias, gb.proj.bias)
        )
    # a bf16 checkpoint (the reference trains with --bf16) is read as float32, values unchanged
    bf = _state(lm, seed=2, dtype=torch.bfloat16)
    torch.save(bf, tmp_path / "bf16.pth")
    c = load_reference_gates(tmp_path / "bf16.pth", lm)
    w = c.gate("attn", 0).proj.weight
    assert w.dtype == torch.float32 and torch.equal(w, bf[KEY.format(0, "weight")].float())


def test_layers_absent_from_the_file_get_no_gate(tmp_path, tiny_llama):
    lm = tiny_llama
    state = _state(lm, layers=[1], seed=4, scale=0.8)
    torch.save(state, tmp_path / "one.pth")
    gates = load_reference_gates(tmp_path / "one.pth", lm)
    assert gates.layers == [1]
    with _reference(lm, state):
        want = _logits(lm)
    with gates.attached(lm):
        got = _logits(lm)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth", ".pt"])
def test_export_round_trip_reproduces_the_logits(tmp_path, suffix):
    lm = _model("wide-qwen3")
    gates = load_reference_gates(_save(tmp_path / "in.pth", _state(lm, seed=5)), lm)
    out = export_reference_gates(gates, tmp_path / f"out{suffix}")
    again = load_reference_gates(out, lm)
    with gates.attached(lm, alpha=-1.0):
        a = _logits(lm)
    with again.attached(lm, alpha=-1.0):
        b = _logits(lm)
    assert torch.equal(a, b)
    if suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(out), framework="pt") as fh:
            keys = set(fh.keys())
    else:  # a plain dict of tensors: what the reference's torch.load + load_state_dict(strict=False) takes
        state = torch.load(str(out), map_location="cpu", weights_only=True)
        assert type(state) is dict and all(type(v) is torch.Tensor for v in state.values())
        keys = set(state)
    assert keys == {KEY.format(l, n) for l in range(lm.n_layers) for n in ("weight", "bias")}


def test_exported_pth_loads_into_a_model_with_gate_proj_myself(tmp_path, tiny_llama):
    """The reference code's own loading step, on a copy of the model given ``gate_proj_myself`` modules."""
    import copy

    from torch import nn

    lm = tiny_llama
    gates = load_reference_gates(_save(tmp_path / "in.pth", _state(lm, seed=6)), lm)
    path = export_reference_gates(gates, tmp_path / "gating_params.pth")
    twin = copy.deepcopy(lm.model)
    for layer in twin.model.layers:
        layer.self_attn.gate_proj_myself = nn.Linear(lm.d_model, _width(lm), bias=True)
    missing, unexpected = twin.load_state_dict(torch.load(str(path), weights_only=True), strict=False)
    assert unexpected == [] and not any("gate_proj_myself" in k for k in missing)
    for i, layer in enumerate(twin.model.layers):
        assert torch.equal(layer.self_attn.gate_proj_myself.weight, gates.gate("attn", i).proj.weight)
        assert torch.equal(layer.self_attn.gate_proj_myself.bias, gates.gate("attn", i).proj.bias)


def test_export_refuses_other_kinds_sites_prefixes_and_suffixes(tmp_path, tiny_llama):
    lm = tiny_llama
    with pytest.raises(WorkbenchError, match="only input_dependent gates at site 'attn'.*'per_channel'"):
        export_reference_gates(GateSet.create(lm, kind="per_channel"), tmp_path / "a.pth")
    with pytest.raises(WorkbenchError, match=r"\['attn', 'mlp'\].*own GateSet"):
        export_reference_gates(GateSet.create(lm, sites=("attn", "mlp")), tmp_path / "b.pth")
    with pytest.raises(WorkbenchError, match="prefix 'decoder.'"):
        export_reference_gates(GateSet.create(lm), tmp_path / "c.pth", prefix="decoder.")
    with pytest.raises(WorkbenchError, match=r"choose the format by suffix"):
        export_reference_gates(GateSet.create(lm), tmp_path / "d.bin.json")
    assert not list(tmp_path.iterdir())


def _save(path, state):
    torch.save(state, path)
    return path


RAN: list[str] = []


def _mark() -> str:
    RAN.append("ran")
    return "payload"


class _Payload:
    def __reduce__(self):
        return (_mark, ())


def test_bad_checkpoints_are_refused_with_one_line(tmp_path, tiny_llama):
    lm = tiny_llama
    good = _state(lm)
    w0, b0 = KEY.format(0, "weight"), KEY.format(0, "bias")
    cases = {
        "unknown": (
            {**good, "model.layers.0.mlp.gate_proj.weight": good[w0]},
            "unknown key 'model.layers.0.mlp",
        ),
        "peft-extra": (
            {**good, "model.layers.0.self_attn.gate_proj_myself.modules_to_save.default.weight": good[w0]},
            "unknown key",
        ),
        "no-bias": ({k: v for k, v in good.items() if k != b0}, f"key '{w0}' has no matching bias"),
        "no-weight": ({k: v for k, v in good.items() if k != w0}, f"key '{b0}' has no matching weight"),
        "wrong-shape": (
            {**good, w0: torch.zeros(lm.d_model + 1, _width(lm))},
            rf"key '{w0}' has shape \[65, 64\], expected \[64, 64\]",
        ),
        "bias-shape": ({**good, b0: torch.zeros(3)}, rf"key '{b0}' has shape \[3\], expected \[64\]"),
        "layer": (
            {**good, KEY.format(7, "weight"): good[w0], KEY.format(7, "bias"): good[b0]},
            r"layer\(s\) \[7\], but the model has 3 layers \(0..2\)",
        ),
        "twice": (
            {**good, "base_model.model.model.layers.0.self_attn.gate_proj_myself.bias": good[b0]},
            "twice",
        ),
        "nan": ({**good, b0: torch.full_like(good[b0], float("nan"))}, "NaN or infinite"),
        "int": ({**good, b0: torch.zeros(64, dtype=torch.int64)}, "int64 tensor, expected floating point"),
        "not-tensor": ({**good, b0: [0.0] * 64}, "holds a list, expected a tensor"),
        "empty": ({}, "holds no tensors"),
    }
    for name, (state, message) in cases.items():
        path = _save(tmp_path / f"{name}.pth", state)
        with pytest.raises(WorkbenchError, match=message) as err:
            load_reference_gates(path, lm)
        assert "\n" not in str(err.value) and f"{name}.pth" in str(err.value), name

    wide = _model("wide-qwen3")  # attention width 96, d_model 64: a transposed weight is caught
    flipped = {**_state(wide), w0: _state(wide)[w0].T.contiguous()}
    with pytest.raises(WorkbenchError, match=rf"key '{w0}' has shape \[64, 96\], expected \[96, 64\]"):
        load_reference_gates(_save(tmp_path / "flipped.pth", flipped), wide)

    # a pickle that would run code is refused by torch's weights_only loader; nothing in it runs
    torch.save({w0: _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(
        WorkbenchError, match=r"evil.pth' is not a plain tensor checkpoint.*weights_only"
    ) as err:
        load_reference_gates(tmp_path / "evil.pth", lm)
    assert "\n" not in str(err.value) and RAN == []
    torch.save([good[w0]], tmp_path / "list.pth")
    with pytest.raises(WorkbenchError, match="holds a list, expected a state dict"):
        load_reference_gates(tmp_path / "list.pth", lm)
    (tmp_path / "junk.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(WorkbenchError, match="not a readable safetensors file"):
        load_reference_gates(tmp_path / "junk.safetensors", lm)
    with pytest.raises(WorkbenchError, match="unknown checkpoint suffix '.npz'"):
        load_reference_gates(_save(tmp_path / "g.npz", good), lm)
    with pytest.raises(WorkbenchError, match="file not found"):
        load_reference_gates(tmp_path / "absent.pth", lm)


def test_gateset_load_and_gate_intervention_detect_a_reference_checkpoint(tmp_path, tiny_llama):
    from safetensors.torch import save_file

    lm = tiny_llama
    state = _state(lm, seed=7)
    pth = _save(tmp_path / "gating_params.pth", state)
    st = tmp_path / "ref.safetensors"
    save_file(state, str(st))
    with _reference(lm, state, invert=True):
        want = _logits(lm)
    for path in (pth, st):
        with GateSet.load(path, lm).attached(lm, alpha=-1.0):
            torch.testing.assert_close(_logits(lm), want, atol=1e-5, rtol=1e-5)
        with gate_intervention(lm, path, -1.0)():
            torch.testing.assert_close(_logits(lm), want, atol=1e-5, rtol=1e-5)
        with pytest.raises(WorkbenchError, match="reference checkpoint.*GateSet.load\\(path, lm\\)"):
            GateSet.load(path)
    # a workbench artifact is still read as one (its keys are blocks.{l}.attn.hook_z.proj.*)
    ours = load_reference_gates(pth, lm).save(tmp_path / "gates.safetensors")
    assert GateSet.load(ours, lm).metadata["gate_kind"] == "input_dependent"
    assert count_hooks(lm.model) == 0


def test_cli_gate_accepts_a_reference_checkpoint(tmp_path, capsys, tiny_llama):
    """``workbench gate --gates gating_params.pth --suppress``: the answer is the reference inversion model's."""
    from workbench.generation import generate

    lm = tiny_llama
    state = _state(lm, seed=8, scale=1.0)
    path = _save(tmp_path / "gating_params.pth", state)
    gate_cmd(
        gates=path,
        model="random:tiny-llama",
        suppress=True,
        prompt="Hi",
        out=tmp_path / "run",
        max_new_tokens=8,
    )
    assert "suppressed (alpha=-1)" in capsys.readouterr().out
    answers = json.loads((tmp_path / "run" / "answers.json").read_text())
    with _reference(lm, state, invert=True):
        inverted = generate(lm, ["Hi"], max_new_tokens=8)[0]
    with _reference(lm, state):
        as_trained = generate(lm, ["Hi"], max_new_tokens=8)[0]
    assert answers["gated"] == inverted and answers["as_trained"] == as_trained
    assert inverted != as_trained, "the gates must change the answer for this test to mean anything"
