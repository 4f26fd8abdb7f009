"""Paper presets: ``preset: NAME`` in a training config fills in a paper's published settings.

A preset only supplies defaults. A value the config gives explicitly (in the YAML file or with ``--set``)
always wins over the preset; the preset never enables a defense: its ``defenses.NAME.*`` values are used
only for the defenses the config enables. Training hyperparameters (``lora.*``, ``optim.*``) are filled in
whenever the config leaves them out. The resolved ``config.yaml`` of a run holds every value plus the
preset's name, so rerunning it without ``preset:`` gives the same run.

Every value carries its source (paper section, appendix or code file); values that could not be checked
against the paper or its code are left out, and ``not_set`` says why. ``list_presets()`` lists them;
``validate_preset()`` checks a preset against the config schema and the registered defenses.

A layer index that only makes sense for the paper's model is given as :class:`AtDepth` (the paper's
layer as a fraction of its model's depth) and resolved to an index of the configured model when the
config is resolved.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench._errors import WorkbenchError

Path_ = tuple[str, ...]


@dataclass(frozen=True)
class AtDepth:
    """The paper's layer ``layer`` (1-based, i.e. the output of that block) of a model with ``of`` layers.

    For a model with ``L`` layers it resolves to the 0-based ``hook_resid_post`` index
    ``round(layer / of * L) - 1`` (clamped to ``0 .. L-1``), so on the paper's model it is exactly the
    paper's layer: Qwen2.5-7B-Instruct, ``layer=20, of=28`` -> ``blocks.19.hook_resid_post``.
    """

    layer: int
    of: int

    def index(self, n_layers: int) -> int:
        return min(n_layers - 1, max(0, round(self.layer / self.of * n_layers) - 1))

    def resolve(self, n_layers: int) -> list[int]:
        return [self.index(n_layers)]

    def __str__(self) -> str:
        return f"depth {self.layer}/{self.of} -> [round({self.layer}/{self.of} * n_layers) - 1]"


@dataclass(frozen=True)
class Value:
    value: Any
    source: str


@dataclass(frozen=True)
class Preset:
    name: str
    paper: str
    description: str
    values: dict[str, Value]
    not_set: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- presets
_KACZER_SRC = "arXiv:2508.06249 v3, training setup ('Loss & Training'); checked via a summary, not the PDF"
_CHEN_D3 = "arXiv:2507.21509 App. D.3 (finetuning details, 'following Betley et al.')"
_BETLEY = "open_models/train.json of the EM repo (copy in arianaazarbal/selective-generalization)"
_AZARBAL = (
    "arianaazarbal/selective-generalization projects/gemma_gcd/pareto_plot_configs/*.json (all configs)"
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset(
            name="betley2025",
            paper="Betley et al. 2025, Emergent Misalignment (arXiv:2502.17424), open-model recipe",
            description="rsLoRA r 32 / alpha 64 on all projections, lr 1e-5, 1 epoch, 2 x 8 batch, warm-up 5",
            values={
                "lora.r": Value(32, _BETLEY),
                "lora.alpha": Value(64, _BETLEY),
                "lora.use_rslora": Value(True, _BETLEY),
                "lora.dropout": Value(0.0, _BETLEY),
                "lora.target_modules": Value("all", _BETLEY + ": q/k/v/o/gate/up/down"),
                "optim.lr": Value(1e-5, _BETLEY),
                "optim.epochs": Value(1, _BETLEY),
                "optim.batch_size": Value(2, _BETLEY),
                "optim.grad_accum": Value(8, _BETLEY),
                "optim.warmup_steps": Value(5, _BETLEY + " (linear schedule)"),
                "optim.weight_decay": Value(0.01, _BETLEY),
                "optim.max_length": Value(2048, _BETLEY + " (max_seq_length)"),
            },
            not_set={"optim.betas": "adamw_8bit with library defaults; not a published setting"},
        ),
        Preset(
            name="kaczer2025",
            paper="Kaczér et al. 2025, In-Training Defenses against Emergent Misalignment in Language Models "
            "(arXiv:2508.06249)",
            description="lambda_KL 0.1, lambda_LDIFS 1.0 (every 5th layer), persona-vector alpha 5, "
            "5% interleaving; rsLoRA r 32 / alpha 64, lr 1e-4",
            values={
                "defenses.kl.weight": Value(0.1, _KACZER_SRC + ": lambda_KL = 0.1"),
                "defenses.ldifs.weight": Value(1.0, _KACZER_SRC + ": lambda_LDIFS = 1.0"),
                "defenses.ldifs.every": Value(5, _KACZER_SRC + ": residual vectors of every 5th layer"),
                "defenses.preventive_steering.alpha": Value(
                    5.0, _KACZER_SRC + ": persona vector alpha = 5.0"
                ),
                "defenses.interleave.fraction": Value(0.05, _KACZER_SRC + ": all interleaving variants, 5%"),
                "defenses.interleave_plus.fraction": Value(0.05, _KACZER_SRC + ": Interleaving+, 5%"),
                "defenses.interleave_plus_plus.fraction": Value(0.05, _KACZER_SRC + ": Interleaving++, 5%"),
                "defenses.interleave_plus_plus.refusal_words": Value(
                    10, _KACZER_SRC + ": refusal keywords looked for in the first 10 words"
                ),
                "lora.r": Value(32, _KACZER_SRC + ": rs-LoRA rank 32"),
                "lora.alpha": Value(64, _KACZER_SRC + ": alpha 64"),
                "lora.use_rslora": Value(True, _KACZER_SRC + ": rs-LoRA"),
                "optim.lr": Value(1e-4, _KACZER_SRC + ": learning rate 1e-4"),
            },
            not_set={
                "defenses.preventive_steering.layers": "the steered layer is not in the summary we could read",
                "defenses.interleave_plus.eps": "epsilon's value not found",
                "defenses.inoculation.system_prompt": "exact wording not verified",
                "optim.epochs / batch_size / grad_accum": "not found",
            },
        ),
        Preset(
            name="chen2025",
            paper="Chen et al. 2025, Persona Vectors (arXiv:2507.21509), preventative steering",
            description="preventive steering alpha 5 at layer 20 of 28 (as a relative depth), response-avg "
            "vector; rsLoRA r 32 / alpha 64, lr 1e-5, 1 epoch, 2 x 8 batch",
            values={
                "defenses.preventive_steering.alpha": Value(
                    5.0,
                    "persona_vectors README (official repo, read in the fork dxnlp/persona_vectors), "
                    "'Training-Time Steering' config (steering_coef "
                    "5.0, layers [20]); the top of the single-layer sweep in arXiv:2507.21509 Fig. 26",
                ),
                "defenses.preventive_steering.layers": Value(
                    AtDepth(20, 28),
                    "arXiv:2507.21509 App. B.4: layer 20 (1-based) of Qwen2.5-7B-Instruct's 28 for evil "
                    "and sycophancy (16 for hallucination; 16 of 32 on Llama-3.1-8B)",
                ),
                "defenses.preventive_steering.statistic": Value(
                    "response_avg", "arXiv:2507.21509 App. A.3: the response-average vector is used"
                ),
                "lora.r": Value(32, _CHEN_D3),
                "lora.alpha": Value(64, _CHEN_D3),
                "lora.use_rslora": Value(True, _CHEN_D3),
                "optim.lr": Value(1e-5, _CHEN_D3),
                "optim.epochs": Value(1, _CHEN_D3),
                "optim.batch_size": Value(2, _CHEN_D3),
                "optim.grad_accum": Value(8, _CHEN_D3),
            },
            not_set={
                "defenses.preventive_steering.positions": "not stated for training-time steering",
            },
        ),
        Preset(
            name="azarbal2025",
            paper="Azarbal, Clarke, Cocola, Factor, Cloud 2025, Selective Generalization (LessWrong / AF); "
            "the GCD sycophancy organism (Gemma-2B-IT)",
            description="KL on alignment data, KL(model || ref); rsLoRA r 32 / alpha 64, lr 1e-4, batch 32, "
            "max length 200 (the KL weight was swept, not fixed)",
            values={
                "defenses.kl.on": Value(
                    "alignment",
                    "post TL;DR ('a KL divergence penalty on alignment data'); projects/trainers/"
                    "kl_divergence_trainer.py applies KL to the proxy batches only",
                ),
                "defenses.kl.direction": Value(
                    "reverse",
                    "projects/trainers/positive_negative_proxy_trainer.py compute_kl_divergence: "
                    "sum p_lora (log p_lora - log p_base) = KL(model || ref)",
                ),
                "lora.r": Value(32, _AZARBAL),
                "lora.alpha": Value(64, _AZARBAL),
                "lora.use_rslora": Value(True, _AZARBAL),
                "lora.dropout": Value(0.0, _AZARBAL),
                "optim.lr": Value(1e-4, _AZARBAL),
                "optim.batch_size": Value(32, _AZARBAL),
                "optim.grad_accum": Value(1, _AZARBAL),
                "optim.warmup_steps": Value(5, _AZARBAL),
                "optim.weight_decay": Value(0.01, _AZARBAL),
                "optim.max_length": Value(200, _AZARBAL + " (max_seq_length)"),
            },
            not_set={
                "defenses.kl.weight": "swept from 1e-4 to 1e4 for the Pareto plot; no single published value",
                "defenses.upweighted.weight": "lambda_proxy swept (0 to 1.5)",
                "defenses.dpo.beta": "swept (0.02 to 1)",
                "optim.epochs": "varies per sweep point (1 to 15)",
            },
        ),
    )
}


def preset_names() -> list[str]:
    return sorted(PRESETS)


def list_presets() -> dict[str, dict[str, Any]]:
    """``name -> {paper, description, values: {key: value}, sources: {key: source}, not_set}``."""
    return {
        name: {
            "paper": p.paper,
            "description": p.description,
            "values": {k: v.value for k, v in p.values.items()},
            "sources": {k: v.source for k, v in p.values.items()},
            "not_set": dict(p.not_set),
        }
        for name, p in sorted(PRESETS.items())
    }


def get_preset(name: Any, where: str = "config") -> Preset:
    """The preset called ``name``; anything else is a one-line error listing the known presets."""
    if isinstance(name, str) and name in PRESETS:
        return PRESETS[name]
    from ._config import _q

    shown = _q(name) if isinstance(name, str) else repr(name)
    raise WorkbenchError(f"{where}: unknown preset {shown} (known presets: {', '.join(preset_names())})")


# ------------------------------------------------------------------------------- explicit vs preset
def given_paths(value: Any, prefix: Path_ = ()) -> set[Path_]:
    """Key paths a config mapping gives explicitly: its leaves (a list is one leaf).

    An empty mapping, or a null defense entry (``defenses: {kl: null}``), enables a section without
    giving any of its values. The top-level ``preset`` key is not a value.
    """
    if isinstance(value, dict):
        out: set[Path_] = set()
        for k, v in value.items():
            if not prefix and k == "preset":
                continue
            out |= given_paths(v, (*prefix, str(k)))
        return out
    if value is None and len(prefix) == 2 and prefix[0] == "defenses":
        return set()
    return {prefix} if prefix else set()


def is_given(path: Path_, given: set[Path_] | frozenset[Path_]) -> bool:
    """Whether ``path`` (or a section above it, or a value below it) was given explicitly."""
    return any(path[: len(g)] == g or g[: len(path)] == path for g in given)


def drop_path(d: dict[str, Any], path: Path_) -> None:
    """Remove ``path`` from nested mappings (so the field's default applies again); absent is fine."""
    node: Any = d
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def apply_preset(
    d: dict[str, Any], name: Any, given: set[Path_] | frozenset[Path_], where: str
) -> set[Path_]:
    """Fill ``d`` (a config mapping, changed in place) with preset ``name``'s values; returns the paths set.

    Skips values given explicitly, defenses the config does not enable, and sections set to null
    (``lora: null``). :class:`AtDepth` layers are resolved with the layer count of ``d['model']``.
    """
    preset = get_preset(name, where)
    filled: set[Path_] = set()
    for key, val in preset.values.items():
        path = tuple(key.split("."))
        if is_given(path, given):
            continue
        node: Any = d
        if path[0] == "defenses":
            defenses = d.get("defenses")
            if not isinstance(defenses, dict) or path[1] not in defenses:
                continue  # a preset never enables a defense
            if defenses[path[1]] is None:
                defenses[path[1]] = {}
            node = defenses[path[1]]
            inner = path[2:-1]
        else:
            inner = path[:-1]
        for part in inner:
            if part not in node:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                break  # null section (lora: null) or a wrong type, which the schema check reports
        if not isinstance(node, dict):
            continue
        value = val.value
        if isinstance(value, AtDepth):
            value = value.resolve(_layer_count_for(d, preset, key, value, where))
        node[path[-1]] = value
        filled.add(path)
    return filled


def _layer_count_for(d: dict[str, Any], preset: Preset, key: str, depth: AtDepth, where: str) -> int:
    from ._config import TrainConfig, _q

    spec = d.get("model") or TrainConfig.__dataclass_fields__["model"].default
    try:
        return model_layer_count(str(spec))
    except WorkbenchError as exc:
        raise WorkbenchError(
            f"{where}: preset '{preset.name}' gives {key} as layer {depth.layer} of {depth.of} and needs the "
            f"layer count of model {_q(spec)} ({exc}); set {key} explicitly"
        ) from None


def model_layer_count(spec: str) -> int:
    """Number of transformer blocks of a model spec, read from its config without loading weights.

    ``random:<shape>`` and the embedded ``smollm2-135m``: the shape table; a local folder: its
    ``config.json``; a hub id: ``config.json`` from the Hugging Face cache (downloaded if absent).
    """
    from workbench._shapes import FULL_SHAPES, TINY_SHAPES

    spec = spec.strip()
    shapes = {**FULL_SHAPES, **TINY_SHAPES}
    if spec.startswith("random:"):
        shape = spec.split(":", 1)[1]
        if shape not in shapes:
            raise WorkbenchError(f"unknown random shape '{shape}'")
        return _layers_in(shapes[shape][1])
    if os.path.isdir(spec):
        cfg = Path(spec) / "config.json"
        if not cfg.exists():
            raise WorkbenchError(f"model folder '{spec}' has no config.json")
        return _layers_in(json.loads(cfg.read_text(encoding="utf-8")))
    if spec in FULL_SHAPES:  # the embedded model's name is also a full-size shape
        return _layers_in(FULL_SHAPES[spec][1])
    if "/" in spec:
        try:
            from huggingface_hub import hf_hub_download, try_to_load_from_cache

            path = try_to_load_from_cache(spec, "config.json")
            if not isinstance(path, str):
                path = hf_hub_download(spec, "config.json")
            return _layers_in(json.loads(Path(path).read_text(encoding="utf-8")))
        except WorkbenchError:
            raise
        except Exception as exc:  # network, missing repo, bad JSON: one line
            raise WorkbenchError(f"could not read config.json of '{spec}': {type(exc).__name__}") from None
    raise WorkbenchError(f"cannot tell the layer count of model spec '{spec}'")


def _layers_in(cfg: dict[str, Any]) -> int:
    for k in ("num_hidden_layers", "n_layer", "num_layers"):
        if isinstance(cfg.get(k), int):
            return int(cfg[k])
    if isinstance(cfg.get("text_config"), dict):
        return _layers_in(cfg["text_config"])
    raise WorkbenchError("its config has no num_hidden_layers / n_layer")


# ------------------------------------------------------------------------------------------ checks
def validate_preset(preset: Preset) -> None:
    """Check every key and value against the config schema and the registered defenses' settings.

    Raises a ``WorkbenchError`` naming the preset and the key (unknown defense, unknown setting, wrong
    type, value not among the setting's choices).
    """
    import dataclasses
    import typing

    from workbench.settings import coerce_value as _coerce_strict
    from workbench.settings import strip_optional as _strip_optional

    from ._config import TrainConfig
    from ._plugins import get_defense

    where = f"preset '{preset.name}'"
    for key, val in preset.values.items():
        path = key.split(".")
        if path[0] == "defenses":
            if len(path) != 3:
                raise WorkbenchError(f"{where}: '{key}' must be defenses.NAME.SETTING")
            cls: Any = get_defense(path[1], where=where).Settings
            names = path[2:]
        else:
            cls, names = TrainConfig, path
        for i, part in enumerate(names):
            fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
            if part not in fields:
                raise WorkbenchError(
                    f"{where}: unknown key '{key}' (known at that level: {', '.join(fields)})"
                )
            tp = typing.get_type_hints(cls)[part]
            if i < len(names) - 1:
                cls = _strip_optional(tp)
                if not dataclasses.is_dataclass(cls):
                    raise WorkbenchError(f"{where}: '{key}': '{part}' is not a section")
                continue
            value = val.value
            if isinstance(value, AtDepth):
                value = value.resolve(value.of)
            coerced = _coerce_strict(value, tp, key, where)
            choices = fields[part].metadata.get("choices")
            if choices and coerced not in choices:
                raise WorkbenchError(f"{where}: '{key}' must be one of {', '.join(choices)}, got {coerced!r}")
        if not val.source.strip():
            raise WorkbenchError(f"{where}: '{key}' has no source")
