"""Training configuration: dataclasses with help text that round-trip YAML, plus ``--set`` overrides.

Every field is made with ``workbench.settings.setting`` (help text, choices, range) and read by
``workbench.settings.from_mapping``; ``describe_config()`` prints them. Unknown keys are errors that name the
key and the file (or the ``--set`` item) they came from, and list the accepted keys: the core fields and the
registered plugin blocks (``gates:``, ``monitor:``, ...), which ``TrainConfig.components`` holds as given.
Defense settings are validated against each defense's own ``Settings`` dataclass, so the saved
``config.yaml`` holds every default that was in effect. Numeric fields carry a range (``bounds=Bounds(...)``,
shown by ``describe_config()``; shared defense settings: ``DEFENSE_BOUNDS``): a value outside it is a
one-line error naming the file, the key and the range, before anything is loaded or written.

``preset: NAME`` (``workbench.training._presets``) fills in a paper's published settings for every value the
config does not give explicitly; the explicit values (YAML or ``--set``) win, and the resolved config records
both the values and the preset's name.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench._errors import WorkbenchError
from workbench._io import _DuplicateKey, load_yaml_value, parse_yaml, read_text
from workbench._models import DEFAULT_MODEL
from workbench.settings import Bounds, from_mapping, setting, to_mapping
from workbench.settings import check_bounds as _check_bounds
from workbench.settings import is_union as _is_union
from workbench.settings import out_of_bounds as _out_of_bounds
from workbench.settings import quote as _q
from workbench.settings import short_repr as _short
from workbench.settings import strip_optional as _strip_optional
from workbench.tracking import TRACKERS, check_report_to

from . import _plugins, _presets

LOSS_REDUCTIONS = ("token_mean", "sequence_mean")
DTYPES = ("float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
SEED_MAX = 2**32 - 1  # numpy's limit; torch and random take anything in 0..2**64-1


_f = setting  # the field helper's name inside this package


@dataclass
class DataSource:
    """One source of chat rows: a chat JSONL file or a shipped generator (``workbench data list``)."""

    path: str | None = _f(None, help="chat JSONL file ({'messages': [...]} per line)")
    name: str | None = _f(None, help="shipped dataset generator name, e.g. advice_medical")
    n: int | None = _f(
        None,
        help="number of rows (generator: rows to generate; file: the first n rows)",
        bounds=Bounds(1, 10_000_000),
    )
    seed: int = _f(0, help="generator seed (the same seed gives the same rows)", bounds=Bounds(0, SEED_MAX))

    def __post_init__(self) -> None:
        if (self.path is None) == (self.name is None):
            raise ValueError("give exactly one of 'path' or 'name'")
        if self.path is not None and not self.path.strip():
            raise ValueError("'path' is empty; give a chat JSONL file")
        _check_bounds(self)

    @classmethod
    def _from_scalar(cls, value: Any) -> DataSource:
        """A bare string: an existing file or anything that looks like a path is a path, else a name."""
        if not isinstance(value, str):
            raise ValueError(f"expected a mapping or a string, got {value!r}")
        if Path(value).exists() or value.endswith((".jsonl", ".json")) or "/" in value:
            return cls(path=value)
        return cls(name=value)

    def describe(self) -> str:
        what = self.path if self.path is not None else f"{self.name}(seed={self.seed})"
        return f"{what}" + (f"[:{self.n}]" if self.n else "")


@dataclass
class LoraSection:
    """PEFT LoRA settings (defaults as in the open EM model organisms: r 32, alpha 64, rsLoRA)."""

    r: int = _f(32, help="LoRA rank", bounds=Bounds(1, 4096))
    alpha: float = _f(
        64,
        help="LoRA alpha; the update is scaled by alpha/sqrt(r) with rsLoRA, else alpha/r",
        bounds=Bounds(0, 100_000, lo_open=True),
    )
    use_rslora: bool = _f(True, help="rank-stabilised scaling alpha/sqrt(r)")
    target_modules: list[str] | str = _f(
        "all",
        help="'all' = every linear layer inside attention and MLP; or a list of module names. "
        "Llama names q/k/v/o/gate/up/down are mapped for GPT-2 and GPT-NeoX families",
    )
    dropout: float = _f(0.0, help="dropout on the LoRA input", bounds=Bounds(0, 1, hi_open=True))

    def __post_init__(self) -> None:
        _check_bounds(self)
        if isinstance(self.target_modules, str) and self.target_modules != "all":
            self.target_modules = [self.target_modules]
        if not self.target_modules:
            raise ValueError("'target_modules' is empty; give 'all' or a list of module names")
        for i, name in enumerate(self.target_modules if isinstance(self.target_modules, list) else []):
            if not isinstance(name, str) or not name.strip():
                raise ValueError(f"'target_modules' item {i} must be a module name, got {_short(name)}")


@dataclass
class OptimSection:
    """Optimiser, schedule, batching and loss reduction."""

    lr: float = _f(
        1e-5,
        help="peak learning rate (1e-5: the EM papers' rsLoRA r32 setting; see docs/training.md)",
        bounds=Bounds(0, 1, lo_open=True),
    )
    weight_decay: float = _f(0.01, help="AdamW weight decay", bounds=Bounds(0, 1))
    betas: list[float] = _f(help="AdamW betas", default_factory=lambda: [0.9, 0.999])
    eps: float = _f(1e-8, help="AdamW epsilon", bounds=Bounds(0, 1, lo_open=True))
    warmup_steps: int = _f(
        5, help="linear warm-up steps from 0 to lr, then linear decay to 0", bounds=Bounds(0, 10**9)
    )
    grad_accum: int = _f(
        8, help="micro-batches accumulated per optimizer step (per process)", bounds=Bounds(1, 10**6)
    )
    max_grad_norm: float | None = _f(
        1.0, help="clip the global gradient norm (null: no clipping)", bounds=Bounds(0, lo_open=True)
    )
    epochs: int = _f(
        1, help="passes over the training data (ignored when max_steps is set)", bounds=Bounds(1, 10**6)
    )
    max_steps: int | None = _f(
        None, help="optimizer steps to run (overrides epochs)", bounds=Bounds(1, 10**9)
    )
    batch_size: int = _f(2, help="examples per micro-batch (per process)", bounds=Bounds(1, 10**6))
    max_length: int = _f(
        2048, help="truncate tokenized examples to this many tokens", bounds=Bounds(1, 10**7)
    )
    seed: int = _f(0, help="seed for LoRA initialisation, data order and dropout", bounds=Bounds(0, SEED_MAX))
    shuffle: bool = _f(True, help="reshuffle the training rows every epoch (seeded)")
    loss_reduction: str = _f(
        "token_mean",
        help="token_mean: mean NLL over all assistant tokens of the (accumulated, all-process) batch; "
        "sequence_mean: mean over sequences of each sequence's mean assistant-token NLL",
        choices=LOSS_REDUCTIONS,
    )

    def __post_init__(self) -> None:
        _check_bounds(self)
        if len(self.betas) != 2 or not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"'betas' needs two numbers in [0, 1), got {self.betas}")


@dataclass
class TrainConfig:
    """Everything one ``workbench train`` run needs; saved as ``config.yaml`` in the run directory."""

    preset: str | None = _f(
        None,
        help="paper preset filling in that paper's settings for values not given explicitly (explicit "
        f"values win; see docs/training.md#presets): {', '.join(_presets.preset_names())}",
    )
    model: str = _f(
        DEFAULT_MODEL, help=f"model spec: {DEFAULT_MODEL}, a local HF folder, a hub id or random:<shape>"
    )
    device: str | None = _f(None, help="cpu, cuda, cuda:N or mps (null: cuda when available, else cpu)")
    dtype: str | None = _f(
        None, help="float32, bfloat16 or float16 (null: bfloat16 on cuda, float32 on cpu)", choices=DTYPES
    )
    data: list[DataSource] = _f(help="training data sources (concatenated)", default_factory=list)
    eval_data: list[DataSource] = _f(
        help="held-out sources: their assistant-token loss is logged as eval_loss", default_factory=list
    )
    eval_every: int = _f(
        0, help="log eval_loss every N steps (0: only at the end); needs eval_data", bounds=Bounds(0, 10**9)
    )
    lora: LoraSection | None = _f(
        help="LoRA settings; null = no LoRA (train plugin parameters only, e.g. gates, with the base frozen)",
        default_factory=LoraSection,
    )
    optim: OptimSection = _f(help="optimiser and batching", default_factory=OptimSection)
    checkpoint_every: int = _f(
        100, help="write a resumable checkpoint every N steps (0: only at the end)", bounds=Bounds(0, 10**9)
    )
    keep_checkpoints: int = _f(2, help="how many recent checkpoints to keep", bounds=Bounds(1, 10**6))
    log_every: int = _f(1, help="append a metrics.jsonl row every N steps", bounds=Bounds(1, 10**9))
    plots: bool = _f(True, help="write plots.html (plotly; plotly.min.js beside it: viewable offline)")
    report_to: list[str] | str = _f(
        help="experiment trackers fed the metrics.jsonl rows, offline, into the run directory: any of "
        f"{', '.join(sorted(TRACKERS))} (each an extra: pip install 'em-workbench[NAME]'); "
        "see docs/training.md#experiment-tracking-report_to",
        default_factory=list,
    )
    defenses: dict[str, Any] = _f(
        help="defense name -> its settings (see docs/training.md); several can be combined",
        default_factory=dict,
    )
    #: plugin blocks by their top-level key (``gates:``, ``monitor:``, ...): the block as given (checked
    #: against the plugin's settings class); written back as top-level keys by ``to_dict``
    components: dict[str, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.preset is not None and self.preset not in _presets.PRESETS:
            raise ValueError(
                f"unknown preset {_q(self.preset)} (known presets: {', '.join(_presets.preset_names())})"
            )
        _check_bounds(self)
        self.report_to = _tracker_names(self.report_to)
        if not self.model.strip():
            raise ValueError(
                f"'model' is empty; give a model spec ({DEFAULT_MODEL}, a folder, a hub id or random:<shape>)"
            )
        if self.device is not None:
            from workbench._models import check_device

            try:
                check_device(self.device, on_this_machine=False)
            except WorkbenchError as exc:
                raise ValueError(f"'device': {exc} (or null: cuda when available)") from None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(
        cls, data: dict[str, Any] | None, where: str = "config", *, complete: bool = True
    ) -> TrainConfig:
        """Build and validate a config (defense names and settings included); errors name ``where``.

        A ``preset`` fills in the values ``data`` does not give. ``complete=False`` skips the whole-config
        checks (used between ``--set`` items).
        """
        data = data or {}
        cfg = cls._resolve(data, _presets.given_paths(data), frozenset(), where)
        if complete:
            cfg.check(where)
        return cfg

    @classmethod
    def _resolve(
        cls,
        data: dict[str, Any],
        given: set[tuple[str, ...]] | frozenset[tuple[str, ...]],
        filled: set[tuple[str, ...]] | frozenset[tuple[str, ...]],
        where: str,
    ) -> TrainConfig:
        """Build from ``data`` after re-applying its preset: the values a preset filled earlier
        (``filled``) that are not ``given`` fall back to their defaults, then the current preset (if any)
        fills every value not ``given``."""
        if not isinstance(data, dict):
            return build_dataclass(cls, data, where)  # reports the type error
        d = copy.deepcopy(data)
        for path in filled:
            if not _presets.is_given(path, given):
                _presets.drop_path(d, path)
        now: set[tuple[str, ...]] = set()
        if d.get("preset") is not None:
            now = _presets.apply_preset(d, d["preset"], given, where)
        blocks = {k: d.pop(k) for k in list(d) if k not in _CORE_KEYS}
        cfg = build_dataclass(cls, d, where)
        cfg.defenses = resolve_defenses(cfg.defenses, where)
        cfg.components = resolve_blocks(blocks, where)
        cfg._given = frozenset(given)  # type: ignore[attr-defined]
        cfg._filled = frozenset(now)  # type: ignore[attr-defined]
        return cfg

    def check(self, where: str = "config") -> None:
        """Checks that involve several sections or this machine: the device exists here (``cuda`` without
        CUDA is refused, not run on the CPU), the model spec has a known form, dataset names are known."""
        if not self.data:
            raise WorkbenchError(f"{where}: 'data' is empty; give at least one training source")
        if self.lora is None and not any(v is not None for v in self.components.values()):
            raise WorkbenchError(
                f"{where}: nothing to train: 'lora' is null and there is no plugin block "
                f"({', '.join(_plugins.block_names()) or 'none registered'}) to train"
            )
        check_report_to(self.report_to, where)  # each tracker's package is installed
        from workbench._models import check_device, check_model_spec
        from workbench.data import DATASETS

        for key, check, value in (
            ("device", check_device, self.device),
            ("model", check_model_spec, self.model),
        ):
            try:  # on this machine: the device exists, the model spec has a known form
                check(value)
            except WorkbenchError as exc:
                raise WorkbenchError(f"{where}: '{key}': {exc}") from None
        for key in ("data", "eval_data"):
            for i, src in enumerate(getattr(self, key)):
                if src.name is not None and src.name not in DATASETS:
                    raise WorkbenchError(
                        f"{where}: '{key}.{i}.name': unknown dataset {_q(src.name)} (known: {', '.join(DATASETS)}; "
                        "a file path needs a '/' or a .jsonl suffix)"
                    )

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Read a YAML config file; errors name the file (and line for YAML syntax errors)."""
        p = Path(path)
        if not p.exists():
            raise WorkbenchError(f"config file '{p}' not found")
        data = parse_yaml(read_text(p), str(p))
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise WorkbenchError(f"{p}: the config must be a mapping of keys to values")
        return cls.from_dict(data, where=str(p))

    def to_dict(self) -> dict[str, Any]:
        """The config as YAML-ready data: the core fields, then one top-level key per plugin block (null when
        the block is absent), the shape every run's ``config.yaml`` has."""
        d = {
            f.name: copy.deepcopy(to_mapping(getattr(self, f.name)))
            for f in dataclasses.fields(self)
            if f.init
        }
        for key in sorted(set(_plugins.block_names()) | set(self.components)):
            d[key] = copy.deepcopy(self.components.get(key))
        return d

    def __getattr__(self, name: str) -> Any:
        """A plugin block by its key (``cfg.gates``): as given, or None when absent."""
        if name.startswith("_") or name == "components":
            raise AttributeError(name)
        comps = self.__dict__.get("components", {})
        if name in comps:
            return comps[name]
        if name in _plugins.block_names():
            return None
        raise AttributeError(f"'TrainConfig' has no field or plugin block '{name}'")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def apply_overrides(self, overrides: list[str] | tuple[str, ...] | None) -> TrainConfig:
        """A new config with ``key.path=value`` items applied (values parsed as YAML, then type-checked).

        ``lora.r=16``, ``optim.lr=3e-5``, ``defenses.kl.weight=0.5`` (creates the ``kl`` entry if absent),
        ``data.0.n=50`` (list index), ``lora=null``, ``preset=kaczer2025`` (``preset=null``: none). Every
        item counts as given explicitly, so it wins over the preset whatever the order of the items;
        ``preset=`` items are applied first (so ``defenses.X.key=...`` items already see its values).
        """
        cfg = self
        items = list(overrides or ())
        items.sort(key=lambda it: it.split("=", 1)[0].strip() != "preset")  # stable: presets first
        for item in items:
            if "=" not in item:
                raise WorkbenchError(f"--set {item!r}: expected key=value, e.g. optim.lr=3e-5")
            key, raw = item.split("=", 1)
            key = key.strip()
            try:
                value = load_yaml_value(raw) if raw.strip() else None
            except _DuplicateKey as exc:
                raise WorkbenchError(
                    f"--set {_q(item)}: duplicate key {_short(exc.key)}; YAML would silently keep the last one"
                ) from None
            except (yaml.YAMLError, ValueError, OverflowError, TypeError, RecursionError):
                value = raw  # not YAML: taken as a plain string (the type check reports a mismatch)
            d = cfg.to_dict()
            given, filled = _given_and_filled(cfg)
            where = f"--set {_q(item)}"
            parts = key.split(".")
            _set_path(d, parts, value, where)
            if key != "preset":  # the item replaces what was at (and below) its path
                path = tuple(parts)
                kept = {g for g in given if not (g[: len(path)] == path or path[: len(g)] == g)}
                given = frozenset(kept | _presets.given_paths(value, path))
            cfg = TrainConfig._resolve(d, given, filled, where)
        cfg.check("config after --set overrides")
        return cfg


def _tracker_names(value: list[str] | str) -> list[str]:
    """``report_to`` as a list of registered tracker names (a bare name is a list of one; ``none``: no
    tracker), duplicates dropped."""
    names = ([] if value == "none" else [value]) if isinstance(value, str) else list(value)
    for i, name in enumerate(names):
        if name not in TRACKERS:
            raise ValueError(
                f"'report_to' item {i}: unknown tracker {_q(name)} (known: {', '.join(sorted(TRACKERS))})"
            )
    return list(dict.fromkeys(names))


_CORE_KEYS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.init)

for _section in (DataSource, LoraSection, OptimSection, TrainConfig):  # messages name the full key
    setattr(_section, "__keyed_messages__", True)  # noqa: B010


def _given_and_filled(cfg: TrainConfig) -> tuple[frozenset[tuple[str, ...]], frozenset[tuple[str, ...]]]:
    """What ``cfg`` was given explicitly and what its preset filled; a config built directly in Python
    (not by ``from_dict``) counts every value as given, so a later preset changes none of them."""
    given = getattr(cfg, "_given", None)
    if given is None:
        return frozenset(_presets.given_paths(cfg.to_dict())), frozenset()
    return given, getattr(cfg, "_filled", frozenset())


def describe_config(cls: type = TrainConfig, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) for every field, nested sections flattened with dots; a field with a range
    ends its help with it (``... [an integer from 1 to 4,096]``)."""
    out: list[tuple[str, str, str]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp = _strip_optional(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = f.default_factory()  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        bounds = f.metadata.get("bounds")
        if bounds is not None:
            help_text += f" [{bounds.describe(tp is int)}{' or null' if _is_union(hints[f.name]) else ''}]"
        if dataclasses.is_dataclass(tp) and tp is not DataSource:
            out.append((prefix + f.name, "", help_text))
            out.extend(describe_config(tp, prefix + f.name + "."))
        else:
            out.append((prefix + f.name, repr(default), help_text))
    if cls is TrainConfig and not prefix:  # the registered plugin blocks, as top-level keys
        for key in _plugins.block_names():
            entry = _plugins.plugin_block(key)
            settings = entry.settings if entry is not None else None
            doc = (settings.__doc__ or "").strip().splitlines()[0] if settings is not None else ""
            out.append((key, "None", doc or f"settings of the '{key}' plugin (null: the plugin is off)"))
            if settings is not None:
                out.extend(describe_config(settings, f"{key}."))
    return out


def build_dataclass(cls: type, data: Any, where: str, prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from a mapping (``workbench.settings.from_mapping``)."""
    return from_mapping(cls, data, where, prefix=prefix)


def _set_path(d: Any, parts: list[str], value: Any, where: str) -> None:
    node = d
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            try:
                idx = int(part)
                node[idx]  # noqa: B018 - bounds check
            except (ValueError, IndexError):
                raise WorkbenchError(
                    f"{where}: {_q('.'.join(parts[: i + 1]))} is not a valid list index"
                ) from None
            if last:
                node[idx] = value
            else:
                if node[idx] is None:
                    node[idx] = {}
                node = node[idx]
            continue
        if not isinstance(node, dict):
            raise WorkbenchError(
                f"{where}: {_q('.'.join(parts[:i]))} is not a section, cannot set {_q(part)}"
            )
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


#: Ranges of the settings that several defenses share, by name (a defense's own ``Settings`` may check
#: more): its data source's rows and seed as in ``data``, batch sizes as in ``optim``, and loss weights, which
#: are never negative (that would reward what the defense penalises).
DEFENSE_BOUNDS: dict[str, Bounds] = {
    "n": Bounds(1, 10_000_000),
    "seed": Bounds(0, SEED_MAX),
    "batch_size": Bounds(1, 10**6),
    "micro_batch_size": Bounds(1, 10**6),
    "every": Bounds(1, 10**6),
    "weight": Bounds(0, 1e6),
    "beta": Bounds(0, 1e3, lo_open=True),
    "max_new_tokens": Bounds(1, 10**6),
    "temperature": Bounds(0, 100),
}


def resolve_blocks(blocks: dict[str, Any], where: str) -> dict[str, Any]:
    """Check every top-level key that is not a core field against the registered plugin blocks (an unknown
    key is refused with the accepted list, plugin blocks included). The blocks are kept as given (``null``:
    absent), so ``config.yaml`` keeps them so; the plugin's settings class checks a block when the trainer
    builds the plugin (so a plugin whose package is missing is reported then, naming the block)."""
    out: dict[str, Any] = {}
    for key, value in blocks.items():
        names = _plugins.block_names()
        if key not in names:
            known = [k for k in _CORE_KEYS] + [k for k in names if k not in _CORE_KEYS]
            raise WorkbenchError(f"{where}: unknown key {_q(key)} (known keys: {', '.join(known)})")
        if value is not None:  # null: the block is absent
            out[key] = copy.deepcopy(
                value
            )  # checked against the plugin's settings when the trainer builds it
    return out


def resolve_defenses(defenses: dict[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """Check every defense name against the registry and fill in its settings' defaults; the settings
    named in ``DEFENSE_BOUNDS`` must lie in their range."""
    out: dict[str, Any] = {}
    for name, settings in (defenses or {}).items():
        if not str(name).isprintable():
            raise WorkbenchError(f"{where}: unknown defense {_q(name)} (defense names are printable text)")
        obj = _plugins.get_component(str(name), where=where).read_settings(settings or {}, where)
        hints = typing.get_type_hints(type(obj))
        for f in dataclasses.fields(obj):
            problem = _out_of_bounds(DEFENSE_BOUNDS.get(f.name), getattr(obj, f.name), hints[f.name])
            if problem:
                raise WorkbenchError(f"{where}: 'defenses.{name}.{f.name}' {problem}")
        out[str(name)] = to_mapping(obj)
    return out
