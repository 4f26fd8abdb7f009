"""Hook sites: one vocabulary (TransformerLens names) mapped to HF modules by one table per family.

Sites (``l`` is the decoder-layer index, 0-based, same as ``model.layers[l]``)::

    blocks.{l}.hook_resid_pre    # [batch, pos, d_model]          input of layer l
    blocks.{l}.hook_resid_post   # [batch, pos, d_model]          output of layer l (= hidden_states[l+1])
    blocks.{l}.hook_attn_out     # [batch, pos, d_model]          attention's contribution to the residual
    blocks.{l}.attn.hook_z       # [batch, pos, n_heads, d_head]  per-head output before the output projection
    blocks.{l}.hook_mlp_out      # [batch, pos, d_model]          MLP's contribution to the residual

Adding an architecture family is one ``ArchAdapter`` row (see ``ADAPTERS``) or, for a model of
your own, ``register_adapter(model_type, ArchAdapter(...))`` / ``load_model(..., adapter=...)``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from torch import nn

from ._errors import WorkbenchError

SITE_KINDS = ("hook_resid_pre", "hook_resid_post", "hook_attn_out", "attn.hook_z", "hook_mlp_out")
_SITE_RE = re.compile(
    r"^blocks\.(-?\d+)\.(hook_resid_pre|hook_resid_post|hook_attn_out|attn\.hook_z|hook_mlp_out)$"
)


@dataclass(frozen=True)
class ArchAdapter:
    """Where the sites live in one architecture family (paths are dotted module names).

    layers:   the decoder-layer ModuleList, relative to the CausalLM root.
    attn:     the attention module, relative to a layer (its output[0] is attn_out unless ``attn_out``).
    o_proj:   the attention output projection, relative to a layer (its input is ``hook_z``).
    mlp:      the MLP module, relative to a layer (its output is mlp_out unless ``mlp_out``).
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


_LLAMA_LIKE = ArchAdapter(layers="model.layers", attn="self_attn", o_proj="self_attn.o_proj", mlp="mlp")
_GEMMA_LIKE = ArchAdapter(
    layers="model.layers",
    attn="self_attn",
    o_proj="self_attn.o_proj",
    mlp="mlp",
    attn_out="post_attention_layernorm",
    mlp_out="post_feedforward_layernorm",
)

ADAPTERS: dict[str, ArchAdapter] = {
    "llama": _LLAMA_LIKE,
    "mistral": _LLAMA_LIKE,
    "qwen2": _LLAMA_LIKE,
    "qwen3": _LLAMA_LIKE,
    "olmo2": _LLAMA_LIKE,
    "gemma2": _GEMMA_LIKE,
    "gemma3_text": _GEMMA_LIKE,
    "gpt2": ArchAdapter(
        layers="transformer.h",
        attn="attn",
        o_proj="attn.c_proj",
        mlp="mlp",
        n_heads_attr="n_head",
        final_norm="transformer.ln_f",
    ),
    "gpt_neox": ArchAdapter(
        layers="gpt_neox.layers",
        attn="attention",
        o_proj="attention.dense",
        mlp="mlp",
        final_norm="gpt_neox.final_layer_norm",
    ),
}


def register_adapter(model_type: str, adapter: ArchAdapter, *, overwrite: bool = False) -> None:
    """Teach the workbench a new architecture family (keyed by ``config.model_type``)."""
    if model_type in ADAPTERS and not overwrite:
        raise WorkbenchError(f"an adapter for model_type '{model_type}' is already registered")
    ADAPTERS[model_type] = adapter


def unwrap_model(model: nn.Module) -> nn.Module:
    """The HF CausalLM beneath a PEFT wrapper (or the model itself)."""
    inner = model
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return inner


@dataclass
class SiteMap:
    """Resolved sites of one model. Layer modules are kept by identity, so PEFT wrapping later still works."""

    model_type: str
    adapter: ArchAdapter
    layers: list[nn.Module]
    n_heads: int
    d_model: int

    @classmethod
    def for_model(cls, model: nn.Module, adapter: ArchAdapter | None = None) -> SiteMap:
        base = unwrap_model(model)
        config = base.config
        model_type = getattr(config, "model_type", type(base).__name__)
        if adapter is None:
            adapter = ADAPTERS.get(model_type)
        if adapter is None:
            raise WorkbenchError(
                f"unknown architecture '{model_type}'; supported families: {', '.join(sorted(ADAPTERS))}. "
                "For another model pass adapter=ArchAdapter(layers=..., attn=..., o_proj=..., mlp=...) "
                "to load_model, or call workbench.register_adapter"
            )
        try:
            layer_list = base.get_submodule(adapter.layers)
        except AttributeError as exc:
            raise WorkbenchError(
                f"adapter for '{model_type}' names layers '{adapter.layers}', which this model lacks"
            ) from exc
        n_heads = int(getattr(config, adapter.n_heads_attr))
        d_model = int(getattr(config, "hidden_size", None) or config.n_embd)
        return cls(model_type, adapter, list(layer_list), n_heads, d_model)

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
        m = _SITE_RE.match(site) if isinstance(site, str) else None
        if m is None:
            raise WorkbenchError(
                f"unknown hook site '{site}'; sites are blocks.{{l}}.<kind> with kind one of: {', '.join(SITE_KINDS)}"
            )
        return self.check_layer(int(m.group(1))), m.group(2)

    def module(self, layer: int, rel: str) -> nn.Module:
        return self.layers[layer].get_submodule(rel)

    def hook_target(self, site: str) -> tuple[nn.Module, str]:
        """The module a site hooks and how: ``pre`` (input), ``out`` (output) or ``z`` (o_proj input)."""
        layer, kind = self.parse(site)
        a = self.adapter
        if kind == "hook_resid_pre":
            return self.layers[layer], "pre"
        if kind == "hook_resid_post":
            return self.layers[layer], "out"
        if kind == "hook_attn_out":
            return self.module(layer, a.attn_out or a.attn), "out"
        if kind == "attn.hook_z":
            return self.module(layer, a.o_proj), "z"
        return self.module(layer, a.mlp_out or a.mlp), "out"

    def describe(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "n_layers": self.n_layers,
            "layers": self.adapter.layers,
            "sites": {
                "hook_resid_pre": f"{self.adapter.layers}[l] (input)",
                "hook_resid_post": f"{self.adapter.layers}[l] (output)",
                "hook_attn_out": f"{self.adapter.layers}[l].{self.adapter.attn_out or self.adapter.attn} (output)",
                "attn.hook_z": f"{self.adapter.layers}[l].{self.adapter.o_proj} (input, split into heads)",
                "hook_mlp_out": f"{self.adapter.layers}[l].{self.adapter.mlp_out or self.adapter.mlp} (output)",
            },
        }
