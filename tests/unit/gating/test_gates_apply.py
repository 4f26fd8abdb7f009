"""Gates applied to tiny random models: identity at start, alpha control, per-row alpha, no leaked hooks."""

from __future__ import annotations

import pytest
import torch

from gating import GATE_KINDS, Gate, GateSet, register_gate_kind
from tests.helpers import enable_checkpointing
from workbench import WorkbenchError, intervene
from workbench._hooks import count_hooks

KINDS = sorted(GATE_KINDS)


def _sites(kind: str) -> tuple[str, ...]:
    return ("attn",) if kind == "per_head" else ("attn", "mlp")


def _ids(lm, batch: int = 2, pos: int = 7, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, 250, (batch, pos), generator=g)


def _perturb(gates: GateSet, seed: int = 1, scale: float = 1.0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gates.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)


@torch.no_grad()
def _logits(lm, ids: torch.Tensor) -> torch.Tensor:
    return lm.model(input_ids=ids).logits


@pytest.mark.parametrize("kind", KINDS)
def test_identity_gate_matches_base_logits(tiny, kind):
    ids = _ids(tiny)
    base = _logits(tiny, ids)
    gates = GateSet.create(tiny, kind=kind, sites=_sites(kind))
    for alpha in (1.0, -1.0, 3.0):
        with gates.attached(tiny, alpha=alpha):
            out = _logits(tiny, ids)
        assert torch.equal(out, base), (kind, alpha)
    assert count_hooks(tiny.model) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_alpha_zero_matches_base_logits_for_trained_gates(tiny, kind):
    ids = _ids(tiny)
    base = _logits(tiny, ids)
    gates = GateSet.create(tiny, kind=kind, sites=_sites(kind))
    _perturb(gates)
    with gates.attached(tiny, alpha=1.0):
        on = _logits(tiny, ids)
    assert not torch.allclose(on, base, atol=1e-4), "perturbed gates must change the logits"
    with gates.attached(tiny, alpha=0.0):
        off = _logits(tiny, ids)
    assert torch.equal(off, base)
    # per-row zeros go through the formula (not skipped) and are exact as well
    with gates.attached(tiny, alpha=torch.zeros(ids.shape[0])):
        off_rows = _logits(tiny, ids)
    assert torch.equal(off_rows, base)


@pytest.mark.parametrize("shape", ["tiny-llama", "tiny-gpt2", "tiny-gemma2", "tiny-gpt-neox"])
def test_suppression_equals_manual_two_minus_g(shape):
    from tests.helpers import load_tiny

    lm = load_tiny(shape)
    ids = _ids(lm, batch=2, pos=6)
    gates = GateSet.create(lm, kind="input_dependent", sites=("attn",), layers=[1])
    _perturb(gates, scale=0.3)
    with gates.attached(lm, alpha=-1.0):
        gated = _logits(lm, ids)

    # independent computation: capture the attention module's input, compute g by hand, edit hook_z
    sm = lm.sites
    gate = gates.gate("attn", 1)
    W, b = gate.proj.weight.detach(), gate.proj.bias.detach()
    seen = {}
    attn = sm.module(1, sm.adapter.attn)

    def grab(mod, args, kwargs):
        seen["x"] = args[0] if args else kwargs["hidden_states"]

    def edit(z):  # [batch, pos, n_heads, d_head]
        g = 2 * torch.sigmoid(seen["x"] @ W.T + b)  # [batch, pos, channels]
        return z * (2 - g).reshape(z.shape)

    h = attn.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with intervene(lm, {"blocks.1.attn.hook_z": edit}):
            manual = _logits(lm, ids)
    finally:
        h.remove()
    assert not torch.allclose(manual, _logits(lm, ids), atol=1e-4)
    torch.testing.assert_close(gated, manual, rtol=1e-5, atol=1e-5)


def test_alpha_formula_amplify_and_clamp(tiny_llama):
    lm = tiny_llama
    ids = _ids(lm)
    gates = GateSet.create(lm, kind="per_channel", sites=("mlp",), layers=[0])
    with torch.no_grad():
        gates.gate("mlp", 0).bias.copy_(torch.linspace(-4, 4, lm.d_model))
    g = gates.gate("mlp", 0)().detach()
    out = {}
    for alpha in (2.0, -3.0):
        with gates.attached(lm, alpha=alpha):
            out[alpha] = _logits(lm, ids)
        expected = torch.clamp(1 + alpha * (g - 1), min=0)
        assert expected.min() >= 0
        with intervene(lm, {"blocks.0.hook_mlp_out": lambda y, e=expected: y * e}):
            manual = _logits(lm, ids)
        torch.testing.assert_close(out[alpha], manual, rtol=1e-5, atol=1e-5)
    # alpha=-3 clamps some channels at 0: the clamp must be active for this test to mean something
    assert (1 - 3 * (g - 1) < 0).any()


def test_mixed_alpha_batch_rows_equal_single_runs(tiny_llama):
    lm = tiny_llama
    ids = _ids(lm, batch=3, pos=8, seed=3)
    gates = GateSet.create(lm, kind="input_dependent", sites=("attn", "mlp"))
    _perturb(gates, scale=0.2)
    alphas = torch.tensor([1.0, -1.0, 2.5])
    with gates.attached(lm, alpha=alphas):
        mixed = _logits(lm, ids)
    for i, a in enumerate(alphas.tolist()):
        with gates.attached(lm, alpha=a):
            single = _logits(lm, ids[i : i + 1])
        torch.testing.assert_close(mixed[i : i + 1], single, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(mixed[0], mixed[1])


def test_per_layer_alpha_forms_agree(tiny_llama):
    lm = tiny_llama
    ids = _ids(lm)
    gates = GateSet.create(lm, kind="per_head", sites=("attn",))
    _perturb(gates)
    with gates.attached(lm, alpha={0: -1.0, 2: 2.0}):
        from_dict = _logits(lm, ids)
    with gates.attached(lm, alpha=[-1.0, 0.0, 2.0]):
        from_list = _logits(lm, ids)
    with gates.attached(lm, alpha=torch.tensor([[-1.0], [0.0], [2.0]])):
        from_tensor = _logits(lm, ids)
    assert torch.equal(from_dict, from_list)
    torch.testing.assert_close(from_tensor, from_dict)
    with pytest.raises(WorkbenchError, match="per-layer alpha list"):
        gates.attach(lm, alpha=[1.0, 2.0])
    with pytest.raises(WorkbenchError, match="batch has 2 rows"):
        with gates.attached(lm, alpha=torch.ones(3)):
            _logits(lm, ids)
    assert count_hooks(lm.model) == 0


def test_no_hooks_left_after_detach_or_exception(tiny):
    gates = GateSet.create(tiny, kind="input_dependent", sites=("attn", "mlp"))
    before = count_hooks(tiny.model)
    handle = gates.attach(tiny)
    assert count_hooks(tiny.model) > before
    handle.detach()
    handle.detach()  # idempotent
    assert count_hooks(tiny.model) == before
    with pytest.raises(RuntimeError, match="boom"):
        with gates.attached(tiny, alpha=-1.0):
            assert count_hooks(tiny.model) > before
            raise RuntimeError("boom")
    assert count_hooks(tiny.model) == before


def test_foreign_hooks_are_kept(tiny_llama):
    lm = tiny_llama
    layer = lm.sites.layers[0]
    foreign = layer.register_forward_hook(lambda m, a, o: None)
    try:
        gates = GateSet.create(lm, kind="per_channel", sites=("attn", "mlp"))
        with gates.attached(lm):
            pass
        assert count_hooks(lm.model) == 1
    finally:
        foreign.remove()


def test_registry_rejects_duplicates_and_accepts_new_kinds():
    with pytest.raises(WorkbenchError, match="already registered"):

        @register_gate_kind("per_channel")
        class Again(Gate):
            pass

    with pytest.raises(WorkbenchError, match="unknown gate kind"):
        GateSet("nope", ("attn",), [0], d_in=4, channels={"attn": 4}, n_heads=2)


def test_bad_sites_and_kinds_are_refused(tiny_llama):
    with pytest.raises(WorkbenchError, match="unknown gate site"):
        GateSet.create(tiny_llama, sites=("resid",))
    with pytest.raises(WorkbenchError, match="cannot sit at 'mlp'"):
        GateSet.create(tiny_llama, kind="per_head", sites=("mlp",))
    with pytest.raises(WorkbenchError, match="out of range"):
        GateSet.create(tiny_llama, layers=[7])


def test_gates_under_peft_lora_wrap_the_replaced_o_proj():
    from peft import LoraConfig, get_peft_model

    from workbench import load_model

    lm = load_model("random:tiny-qwen2", device="cpu")
    ids = _ids(lm)
    gates = GateSet.create(lm, kind="per_head", sites=("attn",))  # made before the wrap
    _perturb(gates)
    with gates.attached(lm, alpha=-1.0):
        plain = _logits(lm, ids)
    lm.model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["o_proj", "down_proj"]))
    o_proj = lm.sites.module(0, lm.sites.adapter.o_proj)
    assert type(o_proj).__name__ == "Linear" and hasattr(o_proj, "base_layer")
    with gates.attached(lm, alpha=-1.0):
        wrapped = _logits(lm, ids)
        assert len(o_proj._forward_pre_hooks) == 1
    torch.testing.assert_close(wrapped, plain)  # lora_B = 0: the LoRA model equals the base
    assert count_hooks(lm.model) == 0


@pytest.mark.parametrize("reentrant", [False, True])
def test_gate_gradients_equal_under_gradient_checkpointing(reentrant):
    from workbench import load_model

    lm = load_model("random:tiny-llama", device="cpu")
    ids = _ids(lm, batch=2, pos=8)
    gates = GateSet.create(lm, kind="low_rank", sites=("attn", "mlp"), rank=4)
    _perturb(gates, scale=0.1)

    calls = []

    def grads():
        gates.zero_grad()
        calls.clear()
        with gates.attached(lm, record=lambda s, l, g: calls.append((s, l))):
            lm.model(input_ids=ids).logits.float().logsumexp(-1).mean().backward()
        return [p.grad.clone() for p in gates.parameters()]

    lm.model.train()
    plain = grads()
    n_plain = len(calls)
    enable_checkpointing(lm.model, use_reentrant=reentrant)
    lm.model.enable_input_require_grads()
    hf_hooks = count_hooks(lm.model)  # HF's own input-grad hook
    ckpt = grads()
    assert len(calls) == 2 * n_plain  # the layers really were recomputed, gates included
    assert count_hooks(lm.model) == hf_hooks
    assert any(g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, ckpt, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_gates_apply_inside_an_nnsight_trace():
    import nnsight

    try:
        from nnsight import TransformersModel as Wrapper
    except ImportError:  # older nnsight
        from nnsight import LanguageModel as Wrapper
    from workbench import load_model

    lm = load_model("random:tiny-llama", device="cpu")
    gates = GateSet.create(lm, kind="per_channel", sites=("attn", "mlp"))
    _perturb(gates)
    ids = _ids(lm, batch=1)
    wrapped = Wrapper(lm.model, tokenizer=lm.tokenizer)
    with gates.attached(lm, alpha=-1.0):
        direct = _logits(lm, ids)
        with wrapped.trace(ids):
            traced = nnsight.save(wrapped.output.logits)
    assert not torch.allclose(direct, _logits(lm, ids), atol=1e-4)
    torch.testing.assert_close(traced.detach(), direct)
    assert count_hooks(lm.model) == 0
