"""Which modules get LoRA: every linear layer inside attention and MLP, or named ones (mapped per family)."""

from __future__ import annotations

from typing import Any

from torch import nn

from workbench._errors import WorkbenchError
from workbench._sites import unwrap_model

# Llama-style short names -> the leaf path inside a layer for families that name them differently.
_FAMILY_NAMES: dict[str, dict[str, tuple[str, ...]]] = {
    "gpt2": {
        "q": ("attn.c_attn",),
        "k": ("attn.c_attn",),
        "v": ("attn.c_attn",),
        "o": ("attn.c_proj",),
        "gate": (),
        "up": ("mlp.c_fc",),
        "down": ("mlp.c_proj",),
    },
    "gpt_neox": {
        "q": ("attention.query_key_value",),
        "k": ("attention.query_key_value",),
        "v": ("attention.query_key_value",),
        "o": ("attention.dense",),
        "gate": (),
        "up": ("mlp.dense_h_to_4h",),
        "down": ("mlp.dense_4h_to_h",),
    },
}
_LLAMA_SHORT = {
    "q": "q_proj",
    "k": "k_proj",
    "v": "v_proj",
    "o": "o_proj",
    "gate": "gate_proj",
    "up": "up_proj",
    "down": "down_proj",
}


def _is_linear(m: nn.Module) -> bool:
    return isinstance(m, nn.Linear) or type(m).__name__ == "Conv1D"


def candidate_modules(lm: Any) -> dict[str, nn.Module]:
    """``{full name: module}`` for every linear layer inside each layer's attention and MLP."""
    base = unwrap_model(lm.model)
    ad = lm.sites.adapter
    out: dict[str, nn.Module] = {}
    for l in range(lm.n_layers):
        for part in (ad.attn, ad.mlp):
            prefix = f"{ad.layers}.{l}.{part}"
            sub = base.get_submodule(prefix)
            for name, m in sub.named_modules():
                if name and _is_linear(m):
                    out[f"{prefix}.{name}"] = m
    return out


def resolve_target_modules(lm: Any, spec: list[str] | str) -> list[str]:
    """Full module names for LoRA. ``spec`` is ``"all"`` or names such as ``q_proj``, ``q`` or ``attn.c_proj``."""
    cands = candidate_modules(lm)
    if not cands:
        raise WorkbenchError(
            f"no linear layers found inside attention/MLP of this {lm.sites.model_type} model"
        )
    if spec == "all":
        return list(cands)
    family = _FAMILY_NAMES.get(lm.sites.model_type)
    ad = lm.sites.adapter
    chosen: list[str] = []
    for name in spec:
        if family is not None and name in family:
            leaves = family[name]
        elif name in _LLAMA_SHORT:
            leaves = (_LLAMA_SHORT[name],)
        else:
            leaves = (name,)
        hits = []
        for full in cands:
            rel = full.split(f"{ad.layers}.", 1)[1].split(".", 1)[1]  # path inside the layer
            if any(rel == leaf or rel.endswith("." + leaf) for leaf in leaves):
                hits.append(full)
        if not hits and leaves:
            leaf_names = sorted({f.rsplit(".", 1)[1] for f in cands})
            raise WorkbenchError(
                f"lora.target_modules: '{name}' matches no linear layer of this {lm.sites.model_type} model "
                f"(available: {', '.join(leaf_names)}, or 'all')"
            )
        chosen.extend(h for h in hits if h not in chosen)
    return [c for c in cands if c in chosen]


def compact_targets(model: nn.Module, full_names: list[str]) -> list[str]:
    """Leaf names when they select exactly ``full_names`` in the whole model (short adapter configs)."""
    leaves = sorted({n.rsplit(".", 1)[1] for n in full_names})
    wanted = set(full_names)
    matched = {n for n, m in model.named_modules() if n and n.rsplit(".", 1)[-1] in leaves and _is_linear(m)}
    return leaves if matched == wanted else list(full_names)


def attach_lora(lm: Any, section: Any) -> Any:
    """Wrap ``lm.model`` with a fresh trainable PEFT LoRA adapter (in place); returns the PEFT model."""
    from peft import LoraConfig, get_peft_model

    full = resolve_target_modules(lm, section.target_modules)
    targets = compact_targets(lm.model, full)
    conv1d = any(type(unwrap_model(lm.model).get_submodule(n)).__name__ == "Conv1D" for n in full)
    cfg = LoraConfig(
        r=section.r,
        lora_alpha=section.alpha,
        use_rslora=section.use_rslora,
        lora_dropout=section.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=conv1d,
    )
    lm.model = get_peft_model(lm.model, cfg)
    return lm.model
