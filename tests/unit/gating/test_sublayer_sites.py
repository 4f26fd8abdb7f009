"""Sublayer-input sites (``ln1/ln2.hook_normalized``), ``intervene(..., with_input=True)``, and gates built on them.

The normalised inputs are checked against the norm modules' outputs read by plain forward hooks, with module
names written here per family (not taken from the workbench's table). The gates' old hooks (a pre-hook on the
attention / MLP module keeping ``x``, a hook on the output projection / MLP output multiplying by ``g_alpha``)
are rebuilt here by hand, and the gates attached through the site vocabulary must give the same logits and
gradients bit for bit.
"""

from __future__ import annotations

import pytest
import torch

from gating import GATE_KINDS, GATE_PLACEMENTS, GATE_SITES, Gate, GateSet, register_gate_kind
from tests.helpers import TINY_FAMILIES, load_tiny
from workbench import (
    ALL_SITE_KINDS,
    SITE_KINDS,
    ArchAdapter,
    ArchSpec,
    WorkbenchError,
    intervene,
    read_sites,
    register_adapter,
    register_arch,
    save_artifact,
)
from workbench._hooks import count_hooks

pytestmark = pytest.mark.usefixtures("one_thread")

# model_type -> (layers, attention, output projection, MLP, module whose output is added to the residual after
# the MLP, norm before the attention, norm before the MLP): written from the HF modelling files, by hand
FAMILY = {
    "llama": ("model.layers", "self_attn", "self_attn.o_proj", "mlp", "mlp", "input_layernorm", "post_attention_layernorm"),
    "mistral": ("model.layers", "self_attn", "self_attn.o_proj", "mlp", "mlp", "input_layernorm", "post_attention_layernorm"),
    "qwen2": ("model.layers", "self_attn", "self_attn.o_proj", "mlp", "mlp", "input_layernorm", "post_attention_layernorm"),
    "qwen3": ("model.layers", "self_attn", "self_attn.o_proj", "mlp", "mlp", "input_layernorm", "post_attention_layernorm"),
    "gemma2": ("model.layers", "self_attn", "self_attn.o_proj", "mlp", "post_feedforward_layernorm", "input_layernorm", "pre_feedforward_layernorm"),
    "gemma3_text": ("model.layers", "self_attn", "self_attn.o_proj", "mlp", "post_feedforward_layernorm", "input_layernorm", "pre_feedforward_layernorm"),
    "gpt2": ("transformer.h", "attn", "attn.c_proj", "mlp", "mlp", "ln_1", "ln_2"),
    "gpt_neox": ("gpt_neox.layers", "attention", "attention.dense", "mlp", "mlp", "input_layernorm", "post_attention_layernorm"),
}  # fmt: skip
BUILTIN_FAMILIES = {*FAMILY, "olmo2"}  # olmo2 has no norm before its sublayers: tested on its own below


def _ids(batch: int = 2, pos: int = 7, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 250, (batch, pos), generator=torch.Generator().manual_seed(seed))


def _layers(lm) -> list[torch.nn.Module]:
    return list(lm.model.get_submodule(FAMILY[lm.sites.model_type][0]))


def _perturb(gates: GateSet, seed: int = 1, scale: float = 0.5) -> GateSet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gates.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return gates


@pytest.fixture(params=TINY_FAMILIES)
def fam(request):
    return load_tiny(request.param)


# ---------------------------------------------------------------------------------------------- the sites


def test_every_table_family_is_covered_here():
    from workbench._sites import ARCH_SPECS

    assert {k for k in ARCH_SPECS if k in BUILTIN_FAMILIES} == BUILTIN_FAMILIES
    assert {load_tiny(f).sites.model_type for f in TINY_FAMILIES} == set(FAMILY)


def test_normalized_inputs_equal_the_norm_outputs(fam):
    """ln1/ln2.hook_normalized read through the sites == the norm modules' outputs (plain forward hooks)."""
    ids = _ids()
    *_, ln1, ln2 = FAMILY[fam.sites.model_type]
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for l, layer in enumerate(_layers(fam)):
        for name, rel in (("ln1", ln1), ("ln2", ln2)):
            hook = lambda m, a, out, key=f"{name}.{l}": seen.__setitem__(key, out.detach())  # noqa: E731
            handles.append(layer.get_submodule(rel).register_forward_hook(hook))
    sites = fam.sites.names(["ln1.hook_normalized", "ln2.hook_normalized"])
    try:
        with torch.no_grad(), read_sites(fam, sites) as cache:
            fam.model(input_ids=ids)
    finally:
        for h in handles:
            h.remove()
    assert len(seen) == 2 * fam.n_layers
    for l in range(fam.n_layers):
        for name in ("ln1", "ln2"):
            got = cache[f"blocks.{l}.{name}.hook_normalized"]
            assert got.shape == (*ids.shape, fam.d_model)
            assert torch.equal(got, seen[f"{name}.{l}"]), (fam.sites.model_type, l, name)
    # the normalised input differs from the raw residual (so the test compares different things)
    with torch.no_grad(), read_sites(fam, ["blocks.1.hook_resid_pre"]) as raw:
        fam.model(input_ids=ids)
    assert not torch.allclose(raw["blocks.1.hook_resid_pre"], cache["blocks.1.ln1.hook_normalized"])
    assert count_hooks(fam.model) == 0


def _tiny_olmo2():
    from transformers import AutoModelForCausalLM, Olmo2Config

    from workbench._sites import SiteMap

    cfg = Olmo2Config(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        eos_token_id=1,
        pad_token_id=0,
        bos_token_id=2,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    return model, SiteMap.for_model(model)


def test_olmo2_post_norm_sites_add_up_and_its_inputs_are_the_raw_residual():
    """OLMo 2 normalises after each sublayer: what is added to the residual is the post-norm output."""
    model, sm = _tiny_olmo2()
    ids = _ids()
    with torch.no_grad(), read_sites(sm, sm.names(list(ALL_SITE_KINDS))) as c:
        model(input_ids=ids)
    for l in range(sm.n_layers):
        pre, post = c[f"blocks.{l}.hook_resid_pre"], c[f"blocks.{l}.hook_resid_post"]
        mid = pre + c[f"blocks.{l}.hook_attn_out"]
        torch.testing.assert_close(mid + c[f"blocks.{l}.hook_mlp_out"], post, rtol=1e-5, atol=1e-5)
        assert torch.equal(c[f"blocks.{l}.ln1.hook_normalized"], pre)
        torch.testing.assert_close(c[f"blocks.{l}.ln2.hook_normalized"], mid, rtol=0, atol=0)


def test_site_table_lists_and_resolves_the_input_sites(tiny_llama):
    sm = tiny_llama.sites
    assert SITE_KINDS == ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "attn.hook_z", "hook_mlp_out")
    assert ALL_SITE_KINDS == (*SITE_KINDS, "ln1.hook_normalized", "ln2.hook_normalized")
    assert sm.names() == sm.names(SITE_KINDS)  # the default listing is unchanged
    assert sm.describe()["sites"]["ln1.hook_normalized"] == "model.layers[l].self_attn (input)"
    assert sm.describe()["sites"]["ln2.hook_normalized"] == "model.layers[l].mlp (input)"
    assert sm.input_site("blocks.2.attn.hook_z") == "blocks.2.ln1.hook_normalized"
    assert sm.input_site("blocks.2.hook_attn_out") == "blocks.2.ln1.hook_normalized"
    assert sm.input_site("blocks.0.hook_mlp_out") == "blocks.0.ln2.hook_normalized"
    assert sm.input_site("blocks.1.hook_resid_post") == "blocks.1.hook_resid_pre"
    for site in ("blocks.0.hook_resid_pre", "blocks.0.ln1.hook_normalized"):
        with pytest.raises(WorkbenchError, match=f"'{site}' is itself an input"):
            sm.input_site(site)
    with pytest.raises(WorkbenchError, match=r"unknown hook site 'blocks.0.ln3.hook_normalized'.*ln2"):
        sm.parse("blocks.0.ln3.hook_normalized")
    assert sm.hook_target("blocks.1.ln2.hook_normalized") == (tiny_llama.model.model.layers[1].mlp, "pre")


# -------------------------------------------------------------------------- intervene(with_input=True)


def test_with_input_hands_each_edit_its_sublayer_input(fam):
    ids = _ids()
    sites = [
        "blocks.1.attn.hook_z",
        "blocks.1.hook_attn_out",
        "blocks.0.hook_mlp_out",
        "blocks.2.hook_resid_post",
    ]
    inputs = [fam.sites.input_site(s) for s in sites]
    with torch.no_grad():
        base = fam.model(input_ids=ids).logits
        with read_sites(fam, sites + inputs) as want:
            fam.model(input_ids=ids)
    got: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def keep(site):
        def edit(y, x):
            got[site] = (y.clone(), x.clone())
            return y.clone()

        return edit

    with torch.no_grad(), intervene(fam, {s: keep(s) for s in sites}, with_input=True):
        out = fam.model(input_ids=ids).logits
    assert torch.equal(out, base)  # identity edits change nothing
    for site, source in zip(sites, inputs, strict=True):
        y, x = got[site]
        assert torch.equal(y, want[site]), site  # in the site's own shape (hook_z: per head)
        assert torch.equal(x, want[source]), site
    assert got["blocks.1.attn.hook_z"][0].dim() == 4
    assert count_hooks(fam.model) == 0


def test_with_input_edit_changes_the_output_as_computed_by_hand(tiny_llama):
    """hook_resid_post -> resid_pre + 2 * (resid_post - resid_pre): the layer's update doubled."""
    lm, ids = tiny_llama, _ids()
    with (
        torch.no_grad(),
        intervene(lm, {"blocks.1.hook_resid_post": lambda y, x: y + (y - x)}, with_input=True),
    ):
        with read_sites(lm, ["blocks.1.hook_resid_pre", "blocks.2.hook_resid_pre"]) as c:
            lm.model(input_ids=ids)
    with torch.no_grad(), read_sites(lm, ["blocks.1.hook_resid_post"]) as plain:
        lm.model(input_ids=ids)
    x = c["blocks.1.hook_resid_pre"]
    torch.testing.assert_close(c["blocks.2.hook_resid_pre"], plain["blocks.1.hook_resid_post"] * 2 - x)


def test_with_input_leaves_no_hook_after_an_exception(tiny_llama):
    lm, ids = tiny_llama, _ids()
    before = count_hooks(lm.model)

    def boom(y, x):
        raise RuntimeError("boom in the edit")

    with pytest.raises(RuntimeError, match="boom in the edit"):
        with intervene(lm, {"blocks.0.attn.hook_z": boom}, with_input=True):
            assert count_hooks(lm.model) == before + 2  # the input catcher and the edit
            lm.model(input_ids=ids)
    assert count_hooks(lm.model) == before
    with pytest.raises(RuntimeError, match="raised in the block"):
        with intervene(lm, {"blocks.1.hook_mlp_out": lambda y, x: y}, with_input=True):
            raise RuntimeError("raised in the block")
    assert count_hooks(lm.model) == before
    # a bad second site: the first site's hooks (already installed) are removed again
    for bad, needle in (
        ("blocks.0.hook_resid_pre", "is itself an input"),
        ("blocks.9.hook_mlp_out", "out of range"),
    ):
        with pytest.raises(WorkbenchError, match=needle):
            with intervene(
                lm, {"blocks.0.hook_mlp_out": lambda y, x: y, bad: lambda y, x: y}, with_input=True
            ):
                pass
        assert count_hooks(lm.model) == before


def test_with_input_refuses_an_output_whose_input_was_not_seen(tiny_llama):
    lm = tiny_llama
    o_proj = lm.model.model.layers[0].self_attn.o_proj
    with intervene(lm, {"blocks.0.attn.hook_z": lambda y, x: y}, with_input=True):
        with pytest.raises(
            WorkbenchError, match=r"input of 'blocks.0.attn.hook_z' \(blocks.0.ln1.hook_normalized\)"
        ):
            o_proj(torch.zeros(1, 2, o_proj.in_features))  # called alone, without its attention module
    assert count_hooks(lm.model) == 0


# ----------------------------------------------------------------------------- gates, the old way by hand


def _old_hooks(lm, gates: GateSet, alpha):
    """The hooks GateSet installed before it went through the site vocabulary, rebuilt by hand."""
    layers_path, attn, o_proj, mlp, mlp_out, *_ = FAMILY[lm.sites.model_type]
    layers = list(lm.model.get_submodule(layers_path))
    stash: dict[str, torch.Tensor] = {}
    handles = []
    for placement, l, gate in gates.items():
        a = alpha[l] if isinstance(alpha, dict) else alpha
        if isinstance(a, float) and a == 0.0:
            continue  # no hook at a layer whose alpha is exactly 0
        key = f"{placement}_{l}"
        source = layers[l].get_submodule(attn if placement == "attn" else mlp)
        target = layers[l].get_submodule(o_proj if placement == "attn" else mlp_out)
        if gate.input_dependent:

            def keep(mod, args, kwargs, key=key):
                stash[key] = args[0] if args else kwargs["hidden_states"]

            handles.append(source.register_forward_pre_hook(keep, with_kwargs=True))

        def gated(y, key=key, gate=gate, a=a):
            g = gate(stash.pop(key) if gate.input_dependent else None)
            if isinstance(a, float):
                f = g if a == 1.0 else torch.clamp(1.0 + a * (g - 1.0), min=0.0)
            else:
                f = torch.clamp(1.0 + a.to(g.dtype).reshape(-1, 1, 1) * (g - 1.0), min=0.0)
            return y * f.to(y.dtype)

        if placement == "attn":

            def on_pre(mod, args, kwargs, gated=gated):
                if args:
                    return (gated(args[0]), *args[1:]), kwargs
                return args, {**kwargs, "hidden_states": gated(kwargs["hidden_states"])}

            handles.append(target.register_forward_pre_hook(on_pre, with_kwargs=True))
        else:

            def on_out(mod, args, out, gated=gated):
                return (gated(out[0]), *out[1:]) if isinstance(out, tuple) else gated(out)

            handles.append(target.register_forward_hook(on_out))
    return handles


def _placements(kind: str) -> tuple[str, ...]:
    return ("attn",) if kind == "per_head" else ("attn", "mlp")


@pytest.mark.parametrize("kind", ["input_dependent", "low_rank", "per_channel", "per_head"])
def test_gates_reproduce_the_old_hooks_bit_for_bit(fam, kind):
    ids = _ids(batch=3)
    gates = _perturb(GateSet.create(fam, kind=kind, placements=_placements(kind), rank=3), scale=0.4)
    with torch.no_grad():
        base = fam.model(input_ids=ids).logits
    for alpha in (1.0, -1.0, 2.5, {0: -1.0, 2: 3.0}, torch.tensor([1.0, -1.0, 0.0])):
        per_layer = {l: 0.0 for l in gates.layers} | alpha if isinstance(alpha, dict) else alpha
        handles = _old_hooks(fam, gates, per_layer)
        try:
            with torch.no_grad():
                old = fam.model(input_ids=ids).logits
        finally:
            for h in handles:
                h.remove()
        with torch.no_grad(), gates.attached(fam, alpha=alpha):
            new = fam.model(input_ids=ids).logits
        assert not torch.equal(old, base), (kind, alpha)
        assert torch.equal(new, old), (fam.sites.model_type, kind, alpha)
    assert count_hooks(fam.model) == 0


def test_gate_gradients_reproduce_the_old_hooks_bit_for_bit():
    lm = load_tiny("tiny-qwen3")
    ids = _ids(batch=2, pos=6)
    gates = _perturb(GateSet.create(lm, kind="input_dependent", placements=("attn", "mlp")), scale=0.2)

    def grads(attach):
        gates.zero_grad()
        with attach():
            lm.model(input_ids=ids).logits.logsumexp(-1).mean().backward()
        return [p.grad.clone() for p in gates.parameters()]

    class old:
        def __enter__(self):
            self.h = _old_hooks(lm, gates, 1.0)

        def __exit__(self, *exc):
            for h in self.h:
                h.remove()

    want = grads(old)
    got = grads(lambda: gates.attached(lm))
    lm.model.zero_grad(set_to_none=True)
    assert any(g.abs().sum() > 0 for g in want)
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)


def test_gate_handle_inputs_are_the_normalised_inputs(tiny_llama):
    lm, ids = tiny_llama, _ids()
    gates = GateSet.create(lm, kind="input_dependent", placements=("attn", "mlp"), layers=[1])
    with (
        torch.no_grad(),
        read_sites(lm, ["blocks.1.ln1.hook_normalized", "blocks.1.ln2.hook_normalized"]) as c,
    ):
        with gates.attached(lm, track_inputs=True) as handle:
            lm.model(input_ids=ids)
            assert torch.equal(handle.inputs["attn_1"], c["blocks.1.ln1.hook_normalized"])
            assert torch.equal(handle.inputs["mlp_1"], c["blocks.1.ln2.hook_normalized"])
            assert handle.attached
        assert not handle.attached and handle.inputs == {}
    with gates.attached(lm, alpha=0.0) as off:  # every gated layer off: no hook, nothing attached
        assert not off.attached and count_hooks(lm.model) == 0


# ------------------------------------------------------------------------------------------- old names


def test_old_names_are_aliases(tiny_llama, tmp_path):
    from workbench._sites import ADAPTERS, ARCH_SPECS

    assert ArchAdapter is ArchSpec and ADAPTERS is ARCH_SPECS and GATE_SITES is GATE_PLACEMENTS
    assert tiny_llama.sites.adapter is tiny_llama.sites.arch is ARCH_SPECS["llama"]
    spec = ArchSpec(layers="model.layers", attn="self_attn", o_proj="self_attn.o_proj", mlp="mlp")
    try:
        register_adapter("test-family-old-name", spec)
        assert ARCH_SPECS["test-family-old-name"] is spec
        with pytest.raises(WorkbenchError, match="'test-family-old-name' is already registered"):
            register_arch("test-family-old-name", spec)
        register_arch("test-family-old-name", spec, overwrite=True)
        with pytest.raises(WorkbenchError, match="needs a workbench.ArchSpec, got dict"):
            register_arch("test-family-other", {"layers": "model.layers"})
    finally:
        ARCH_SPECS.pop("test-family-old-name", None)

    by_old = GateSet.create(tiny_llama, kind="per_channel", sites=("mlp", "attn"), layers=[0])
    by_new = GateSet.create(tiny_llama, kind="per_channel", placements=("mlp", "attn"), layers=[0])
    assert by_old.placements == by_old.sites == by_new.placements == ("mlp", "attn")
    assert GateSet.create(tiny_llama).placements == ("attn",)
    with pytest.raises(WorkbenchError, match="disagree"):
        GateSet.create(tiny_llama, placements=("attn",), sites=("mlp",))


def test_gate_files_with_only_the_old_sites_key_load(tiny_llama, tmp_path):
    lm, ids = tiny_llama, _ids()
    gates = _perturb(GateSet.create(lm, kind="input_dependent", placements=("attn", "mlp"), layers=[0, 2]))
    meta = gates.describe()
    assert (
        meta["placements"] == meta["sites"] == ["attn", "mlp"]
    )  # new files keep the old key for old readers
    old_meta = {k: v for k, v in meta.items() if k != "placements"}
    path = save_artifact(
        tmp_path / "old.safetensors",
        gates.tensors(),
        kind="gates",
        fingerprint=lm.fingerprint,
        metadata=old_meta,
    )
    again = GateSet.load(path, lm)
    assert again.placements == ("attn", "mlp") and again.layers == [0, 2]
    with torch.no_grad():
        with gates.attached(lm, alpha=-1.0):
            want = lm.model(input_ids=ids).logits
        with again.attached(lm, alpha=-1.0):
            got = lm.model(input_ids=ids).logits
    assert torch.equal(got, want)
    bad = save_artifact(
        tmp_path / "bad.safetensors",
        gates.tensors(),
        kind="gates",
        fingerprint=lm.fingerprint,
        metadata={**meta, "sites": ["attn"]},
    )
    with pytest.raises(
        WorkbenchError,
        match=r"bad.safetensors.*'placements' \['attn', 'mlp'\] and 'sites' \['attn'\] disagree",
    ):
        GateSet.load(bad, lm)


def test_a_kind_written_with_the_old_sites_attribute_registers_its_placements(tiny_llama):
    try:

        @register_gate_kind("test_attn_only_old_name")
        class AttnOnly(Gate):
            sites = ("attn",)

            def __init__(self, d_in, channels, n_heads, rank=8):
                super().__init__(d_in, channels, n_heads, rank)
                self.bias = torch.nn.Parameter(torch.zeros(channels))

            def logits(self, x):
                return self.bias

        assert AttnOnly.placements == ("attn",)
        with pytest.raises(WorkbenchError, match="cannot sit at 'mlp'"):
            GateSet.create(tiny_llama, kind="test_attn_only_old_name", placements=("mlp",))
        with pytest.raises(WorkbenchError, match=r"unknown placements \['resid'\]"):

            @register_gate_kind("test_bad_placement")
            class Bad(Gate):
                placements = ("resid",)
    finally:
        GATE_KINDS.pop("test_attn_only_old_name", None)
        GATE_KINDS.pop("test_bad_placement", None)
