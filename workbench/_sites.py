"""Hook sites: one vocabulary (TransformerLens names) mapped to HF modules by one table per family.

Sites (``l`` is the decoder-layer index, 0-based, same as ``model.layers[l]``)::

    blocks.{l}.hook_resid_pre    # [batch, pos, d_model]          input of layer l
    blocks.{l}.hook_resid_post   # [batch, pos, d_model]          output of layer l (= hidden_states[l+1])
    blocks.{l}.hook_attn_out     # [batch, pos, d_model]          attention's contribution to the residual
    blocks.{l}.attn.hook_z       # [batch, pos, n_heads, d_head]  per-head output before the output projection
    blocks.{l}.hook_mlp_out      # [batch, pos, d_model]          MLP's contribution to the residual

Sublayer inputs (what a sublayer reads; the gates' input ``x``)::

    blocks.{l}.ln1.hook_normalized  # [batch, pos, d_model]  the attention's input: the residual after the
                                    #                        layer's first norm (input_layernorm, GPT-2 ln_1)
    blocks.{l}.ln2.hook_normalized  # [batch, pos, d_model]  the MLP's input: the residual after the norm
                                    #                        before the MLP (post_attention_layernorm, GPT-2
                                    #                        ln_2, Gemma pre_feedforward_layernorm)

They are read at the sublayer's input (a pre-hook on the attention / MLP module), which is the norm's output
in every family of the table that normalises before its sublayers (all but OLMo 2, which normalises only
after them: there these sites hold the raw residual). ``SiteMap.input_site(site)`` names the input of the sublayer that makes a site
(``attn.hook_z`` and ``hook_attn_out`` -> ``ln1.hook_normalized``, ``hook_mlp_out`` -> ``ln2.hook_normalized``,
``hook_resid_post`` -> ``hook_resid_pre``); ``intervene(..., with_input=True)`` hands it to an edit.

Words: a *site* is one of the names above. The per-family table that maps them to modules is an
``ArchSpec`` (a row of ``ARCH_SPECS``); "adapter" is kept for PEFT adapter folders. The old names
``ArchAdapter``, ``ADAPTERS``, ``register_adapter`` and ``SiteMap.adapter`` still work as aliases.
Adding an architecture family is one ``ArchSpec`` row or, for a model of your own,
``register_arch(model_type, ArchSpec(...))`` / ``load_model(..., adapter=ArchSpec(...))``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._errors import WorkbenchError

#: the sublayer outputs and the residual stream (what ``SiteMap.names()`` lists by default)
SITE_KINDS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "attn.hook_z", "hook_mlp_out")
#: the sublayers' normalised inputs (the attention's, the MLP's)
SUBLAYER_INPUT_KINDS = ("ln1.hook_normalized", "ln2.hook_normalized")
#: every site kind of the table
ALL_SITE_KINDS = SITE_KINDS + SUBLAYER_INPUT_KINDS
_SITE_RE = re.compile(r"^blocks\.(-?\d+)\.(" + "|".join(re.escape(k) for k in ALL_SITE_KINDS) + r")$")
#: site kind -> the site kind of the input of the sublayer that makes it (in the same layer)
_INPUT_OF = {
    "hook_resid_post": "hook_resid_pre",
    "hook_attn_out": "ln1.hook_normalized",
    "attn.hook_z": "ln1.hook_normalized",
    "hook_mlp_out": "ln2.hook_normalized",
}


@dataclass(frozen=True)
class ArchSpec:
    """Where the sites live in one architecture family (paths are dotted module names): one row of the table.

    layers:   the decoder-layer ModuleList, relative to the CausalLM root.
    attn:     the attention module, relative to a layer (its output[0] is attn_out unless ``attn_out``;
              its input is ``ln1.hook_normalized``).
    o_proj:   the attention output projection, relative to a layer (its input is ``hook_z``).
    mlp:      the MLP module, relative to a layer (its output is mlp_out unless ``mlp_out``; its input is
              ``ln2.hook_normalized``).
    attn_out / mlp_out: modules whose output is what is added to the residual, where a family
              normalises after the sublayer (Gemma 2/3 post-norms).
    """

    layers: str
    attn: str
    o_proj: str
    mlp: str
    attn_out: str | None = None
    mlp_out: str | None = None
    n_heads_attr: str = "num_attention_heads"
    final_norm: str | None = "model.norm"


#: the old name of ``ArchSpec`` (kept so existing code and configs work)
ArchAdapter = ArchSpec

_LLAMA_LIKE = ArchSpec(layers="model.layers", attn="self_attn", o_proj="self_attn.o_proj", mlp="mlp")
_GEMMA_LIKE = ArchSpec(
    layers="model.layers",
    attn="self_attn",
    o_proj="self_attn.o_proj",
    mlp="mlp",
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
)

#: model_type -> ArchSpec: the family table
ARCH_SPECS: dict[str, ArchSpec] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    # OLMo 2 normalises after each sublayer (Gemma's post-norm names) and not before it: its sublayer inputs
    # (the ln*.hook_normalized sites) are the raw residual, equal to hook_resid_pre / the residual mid-layer.
    "olmo2": _GEMMA_LIKE,
    "gemma2": _GEMMA_LIKE,
    "gemma3_text": _GEMMA_LIKE,
    "gpt2": ArchSpec(
        layers="transformer.h",
        attn="attn",
        o_proj="attn.c_proj",
        mlp="mlp",
        n_heads_attr="n_head",
        final_norm="transformer.ln_f",
    ),
    "gpt_neox": ArchSpec(
        layers="gpt_neox.layers",
        attn="attention",
        o_proj="attention.dense",
        mlp="mlp",
        final_norm="gpt_neox.final_layer_norm",
    ),
}


#: the old name of ``ARCH_SPECS`` (the same dict)
ADAPTERS = ARCH_SPECS


def register_arch(model_type: str, spec: ArchSpec, *, overwrite: bool = False) -> None:
    """Teach the workbench a new architecture family (keyed by ``config.model_type``)."""
    if not isinstance(spec, ArchSpec):
        raise WorkbenchError(
            f"register_arch('{model_type}', ...) needs a workbench.ArchSpec, got {type(spec).__name__}"
        )
    if model_type in ARCH_SPECS and not overwrite:
        raise WorkbenchError(
            f"an architecture spec for model_type '{model_type}' is already registered (pass overwrite=True)"
        )
    ARCH_SPECS[model_type] = spec


def register_adapter(model_type: str, adapter: ArchSpec, *, overwrite: bool = False) -> None:
    """The old name of ``register_arch`` (kept as an alias)."""
    register_arch(model_type, adapter, overwrite=overwrite)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The HF CausalLM beneath a PEFT wrapper (or the model itself)."""
    inner: Any = model
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


@dataclass
class SiteMap:
    """Resolved sites of one model. Layer modules are kept by identity, so PEFT wrapping later still works."""

    model_type: str
    arch: ArchSpec
    layers: list[nn.Module]
    n_heads: int
    d_model: int

    @property
    def adapter(self) -> ArchSpec:
        """The old name of ``arch`` (the family table row, not a PEFT adapter)."""
        return self.arch

    @classmethod
    def for_model(cls, model: nn.Module, arch: ArchSpec | None = None) -> SiteMap:
        """Map the sites of ``model`` (a PEFT wrapper is looked through) with ``arch`` or the table's row."""
        base = unwrap_model(model)
        config: Any = base.config
        model_type = getattr(config, "model_type", type(base).__name__)
        if arch is None:
            arch = ARCH_SPECS.get(model_type)
        if arch is None:
            raise WorkbenchError(
                f"unknown architecture '{model_type}'; supported families: {', '.join(sorted(ARCH_SPECS))}. "
                "For another model pass load_model(..., adapter=ArchSpec(layers=..., attn=..., o_proj=..., "
                "mlp=...)) (the old spelling adapter=ArchAdapter(...) works too), or call workbench.register_arch"
            )
        try:
            layer_list: Any = base.get_submodule(arch.layers)
        except AttributeError as exc:
            raise WorkbenchError(
                f"the architecture spec for '{model_type}' names layers '{arch.layers}', which this model lacks"
            ) from exc
        n_heads = int(getattr(config, arch.n_heads_attr))
        d_model = int(getattr(config, "hidden_size", None) or config.n_embd)
        return cls(model_type, arch, list(layer_list), n_heads, d_model)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def names(
        self, kinds: tuple[str, ...] | list[str] = SITE_KINDS, layers: list[int] | None = None
    ) -> list[str]:
        layer_ids = range(self.n_layers) if layers is None else layers
        return [f"blocks.{l}.{k}" for l in layer_ids for k in kinds]

    def check_layer(self, layer: int) -> int:
        if not isinstance(layer, int) or not (0 <= layer < self.n_layers):
            raise WorkbenchError(
                f"layer {layer} is out of range for this model with {self.n_layers} layers (0..{self.n_layers - 1})"
            )
        return layer

    def parse(self, site: str) -> tuple[int, str]:
        """``(layer, kind)`` of a site name; a one-line error for an unknown kind or a layer out of range."""
        m = _SITE_RE.match(site) if isinstance(site, str) else None
        if m is None:
            raise WorkbenchError(
                f"unknown hook site '{site}'; sites are blocks.{{l}}.<kind> with kind one of: "
                f"{', '.join(ALL_SITE_KINDS)}"
            )
        return self.check_layer(int(m.group(1))), m.group(2)

    def input_site(self, site: str) -> str:
        """The site holding the input of the sublayer that makes ``site``, in the same layer.

        ``attn.hook_z`` / ``hook_attn_out`` -> ``ln1.hook_normalized``; ``hook_mlp_out`` ->
        ``ln2.hook_normalized``; ``hook_resid_post`` -> ``hook_resid_pre``. The others (the inputs
        themselves) have none: a one-line error.
        """
        layer, kind = self.parse(site)
        if kind not in _INPUT_OF:
            raise WorkbenchError(
                f"site '{site}' is itself an input and is made by no sublayer; sites with an input: "
                f"{', '.join(_INPUT_OF)}"
            )
        return f"blocks.{layer}.{_INPUT_OF[kind]}"

    def module(self, layer: int, rel: str) -> nn.Module:
        return self.layers[layer].get_submodule(rel)

    def hook_target(self, site: str) -> tuple[nn.Module, str]:
        """The module a site hooks and how: ``pre`` (input), ``out`` (output) or ``z`` (o_proj input).

        The one site -> module resolution: ``read_sites``, ``intervene``, steering and gates all hook here.
        Modules are looked up now, through the layer modules kept by identity, so a model wrapped by PEFT
        after the map was made is hooked at its replacement modules.
        """
        layer, kind = self.parse(site)
        a = self.arch
        if kind == "hook_resid_pre":
            return self.layers[layer], "pre"
        if kind == "hook_resid_post":
            return self.layers[layer], "out"
        if kind == "hook_attn_out":
            return self.module(layer, a.attn_out or a.attn), "out"
        if kind == "attn.hook_z":
            return self.module(layer, a.o_proj), "z"
        if kind == "ln1.hook_normalized":
            return self.module(layer, a.attn), "pre"
        if kind == "ln2.hook_normalized":
            return self.module(layer, a.mlp), "pre"
        return self.module(layer, a.mlp_out or a.mlp), "out"

    def describe(self) -> dict[str, Any]:
        a = self.arch
        return {
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "layers": a.layers,
            "sites": {
                "hook_resid_pre": f"{a.layers}[l] (input)",
                "hook_resid_post": f"{a.layers}[l] (output)",
                "hook_attn_out": f"{a.layers}[l].{a.attn_out or a.attn} (output)",
                "attn.hook_z": f"{a.layers}[l].{a.o_proj} (input, split into heads)",
                "hook_mlp_out": f"{a.layers}[l].{a.mlp_out or a.mlp} (output)",
                "ln1.hook_normalized": f"{a.layers}[l].{a.attn} (input)",
                "ln2.hook_normalized": f"{a.layers}[l].{a.mlp} (input)",
            },
        }
