"""``GateSet``: the gates of one model (a kind at some sites and layers), attached by scoped hooks.

Attaching registers forward hooks on the model's modules and nothing else: no module is replaced and no
weight is changed, so ``handle.detach()`` (or leaving ``with gates.attached(lm): ...``) gives back exactly
the model that was there before, even after an exception. Modules are resolved when attaching, through the
layer modules kept by identity in ``lm.sites.layers``, so a model wrapped by PEFT after the gates were
made (its ``o_proj`` replaced by a ``lora.Linear``) is gated in the same place. Edits are out-of-place, so
gates train under autograd and gradient checkpointing.

Sites::

    attn  blocks.{l}.attn.hook_z   the per-head attention output before the output projection, flattened to
                                   [batch, pos, n_heads * d_head]; x = the attention module's input (the
                                   normalised residual: input_layernorm / ln_1 output)
    mlp   blocks.{l}.hook_mlp_out  the MLP's contribution to the residual, [batch, pos, d_model];
                                   x = the MLP module's input (the normalised residual before the MLP)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from workbench import ModelFingerprint, WorkbenchError, load_artifact, save_artifact
from workbench._hooks import _first, _pre_input, _replace_first, _replace_pre_input

from ._control import AlphaSpec, apply_alpha, resolve_alpha
from ._gate import GATE_SITES, Gate, gate_class

ARTIFACT_KIND = "gates"
#: gate site -> the hook-site kind it multiplies
HOOK_KIND = {"attn": "attn.hook_z", "mlp": "hook_mlp_out"}

Recorder = Callable[[str, int, Tensor], None]


def _in_features(module: nn.Module) -> int | None:
    if hasattr(module, "in_features"):
        return int(module.in_features)
    if hasattr(module, "nx"):  # transformers' Conv1D (GPT-2)
        return int(module.nx)
    return None


def site_channels(lm: Any, site: str, layer: int) -> int:
    """Channels a gate at (site, layer) multiplies: ``n_heads * d_head`` at attn, ``d_model`` at mlp."""
    sm = lm.sites
    if site == "mlp":
        return int(sm.d_model)
    o_proj = sm.module(layer, sm.adapter.o_proj)
    n = _in_features(o_proj)
    if n is None:
        cfg = getattr(lm.model, "config", None)
        head_dim = getattr(cfg, "head_dim", None) or sm.d_model // sm.n_heads
        n = int(sm.n_heads * head_dim)
    return n


def _check_sites(sites: Sequence[str]) -> tuple[str, ...]:
    if isinstance(sites, str):
        sites = (sites,)
    out = tuple(sites)
    if not out:
        raise WorkbenchError("no gate sites given; choose from: " + ", ".join(GATE_SITES))
    for s in out:
        if s not in GATE_SITES:
            raise WorkbenchError(f"unknown gate site '{s}'; choose from: {', '.join(GATE_SITES)}")
    if len(set(out)) != len(out):
        raise WorkbenchError(f"gate sites repeated: {list(out)}")
    return out


class GateHandle:
    """Hooks of one attachment. ``detach()`` removes exactly them (idempotent); also a context manager."""

    def __init__(self, gates: GateSet, lm: Any, alpha: dict[int, Any]) -> None:
        self.gates = gates
        self.lm = lm
        self.alpha = alpha
        self._handles: list[Any] = []
        self._stash: dict[str, Tensor] = {}
        #: detached gate inputs of the last forward pass, per gate key (filled when ``track_inputs``)
        self.inputs: dict[str, Tensor | None] = {}

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def detach(self) -> None:
        """Remove this attachment's hooks. Nothing of the gates remains on the model afterwards."""
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()
        self._stash.clear()
        self.inputs.clear()

    def __enter__(self) -> GateHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


class GateSet(nn.Module):
    """Gates of one kind at some sites and layers of one model (an ``nn.Module``: train it with any optimizer).

    Make one with ``GateSet.create(lm, ...)`` or ``GateSet.load(path, lm)``; apply it with
    ``with gates.attached(lm, alpha=1.0): ...`` or ``handle = gates.attach(lm); ...; handle.detach()``.
    Nothing persists on the model after detaching.
    """

    def __init__(
        self,
        kind: str,
        sites: Sequence[str],
        layers: Sequence[int],
        *,
        d_in: int,
        channels: dict[str, int],
        n_heads: int,
        rank: int = 8,
        fingerprint: ModelFingerprint | None = None,
    ) -> None:
        super().__init__()
        cls = gate_class(kind)
        self.kind = kind
        self.sites = _check_sites(sites)
        for s in self.sites:
            if s not in cls.sites:
                raise WorkbenchError(
                    f"gate kind '{kind}' cannot sit at '{s}' (it supports: {', '.join(cls.sites)})"
                )
        self.layers = sorted({int(l) for l in layers})
        if not self.layers:
            raise WorkbenchError("no layers to gate")
        self.d_in = int(d_in)
        self.channels = {s: int(channels[s]) for s in self.sites}
        self.n_heads = int(n_heads)
        self.rank = int(rank)
        self.fingerprint = fingerprint
        self.metadata: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []
        self.gates = nn.ModuleDict(
            {
                self.key(s, l): cls(self.d_in, self.channels[s], self.n_heads, self.rank)
                for s in self.sites
                for l in self.layers
            }
        )

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        lm: Any,
        kind: str = "input_dependent",
        sites: Sequence[str] = ("attn",),
        layers: Sequence[int] | None = None,
        *,
        rank: int = 8,
        seed: int = 0,
    ) -> GateSet:
        """Fresh identity gates for ``lm`` (``layers=None``: every layer), on the model's device, float32."""
        sm = lm.sites
        layer_ids = list(range(sm.n_layers)) if layers is None else [sm.check_layer(int(l)) for l in layers]
        sites_t = _check_sites(sites)
        channels: dict[str, int] = {}
        for s in sites_t:
            per_layer = {site_channels(lm, s, l) for l in layer_ids}
            if len(per_layer) != 1:
                raise WorkbenchError(f"layers have different widths at site '{s}': {sorted(per_layer)}")
            channels[s] = per_layer.pop()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gs = cls(
                kind,
                sites_t,
                layer_ids,
                d_in=sm.d_model,
                channels=channels,
                n_heads=sm.n_heads,
                rank=rank,
                fingerprint=lm.fingerprint,
            )
        return gs.to(lm.device)

    @staticmethod
    def key(site: str, layer: int) -> str:
        return f"{site}_{layer}"

    def gate(self, site: str, layer: int) -> Gate:
        key = self.key(site, layer)
        if key not in self.gates:
            raise WorkbenchError(
                f"no gate at site '{site}' layer {layer} (sites {self.sites}, layers {self.layers})"
            )
        return self.gates[key]  # type: ignore[return-value]

    def items(self) -> Iterator[tuple[str, int, Gate]]:
        for s in self.sites:
            for l in self.layers:
                yield s, l, self.gate(s, l)

    @property
    def input_dependent(self) -> bool:
        return gate_class(self.kind).input_dependent

    def describe(self) -> dict[str, Any]:
        return {
            "gate_kind": self.kind,
            "sites": list(self.sites),
            "hook_sites": {s: f"blocks.{{l}}.{HOOK_KIND[s]}" for s in self.sites},
            "layers": list(self.layers),
            "rank": self.rank,
            "d_in": self.d_in,
            "channels": dict(self.channels),
            "n_heads": self.n_heads,
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    # ------------------------------------------------------------------ attaching
    def check_model(self, lm: Any) -> None:
        """Refuse a model these gates do not fit (another base shape or other widths)."""
        if self.fingerprint is not None and not self.fingerprint.compatible(lm.fingerprint):
            raise WorkbenchError(
                f"these gates were made for another model: gates [{self.fingerprint.short()}] vs model "
                f"[{lm.fingerprint.short()}]"
            )
        first = lm.sites.layers[self.layers[0]] if self.layers[0] < lm.n_layers else None
        if first is not None and not any(m is first for m in lm.model.modules()):
            raise WorkbenchError(
                "lm.sites no longer points into lm.model (was lm.model replaced by another model object?); "
                "wrap or merge the model held by this LoadedModel instead"
            )
        if lm.d_model != self.d_in:
            raise WorkbenchError(
                f"gates take inputs of width {self.d_in}, the model's d_model is {lm.d_model}"
            )
        bad = [l for l in self.layers if l >= lm.n_layers]
        if bad:
            raise WorkbenchError(f"gates at layers {bad}, but the model has {lm.n_layers} layers")
        for s in self.sites:
            have = site_channels(lm, s, self.layers[0])
            if have != self.channels[s]:
                raise WorkbenchError(
                    f"gates at '{s}' have {self.channels[s]} channels, the model has {have} there"
                )

    def attach(
        self,
        lm: Any,
        alpha: AlphaSpec = 1.0,
        *,
        record: Recorder | None = None,
        track_inputs: bool = False,
    ) -> GateHandle:
        """Install the gates on ``lm`` with control ``alpha`` (see ``gating._control``); returns the handle.

        ``record(site, layer, g)`` is called with every raw gate value (before alpha) computed in a forward
        pass; ``track_inputs`` keeps each gate's detached input of the last pass in ``handle.inputs``
        (used by the sparsity penalty). Layers whose alpha is exactly 0 get no hook at all.
        """
        self.check_model(lm)
        sm = lm.sites
        alphas = resolve_alpha(alpha, self.layers, sm.n_layers)
        handle = GateHandle(self, lm, alphas)
        self._move_to(lm)
        try:
            for site, layer, gate in self.items():
                a = alphas[layer]
                if isinstance(a, float) and a == 0.0:
                    continue
                self._hook_one(handle, sm, site, layer, gate, a, record, track_inputs)
        except BaseException:
            handle.detach()
            raise
        return handle

    @contextlib.contextmanager
    def attached(
        self,
        lm: Any,
        alpha: AlphaSpec = 1.0,
        *,
        record: Recorder | None = None,
        track_inputs: bool = False,
    ) -> Iterator[GateHandle]:
        """``attach`` for the duration of a ``with`` block; the hooks are removed in ``finally``."""
        handle = self.attach(lm, alpha, record=record, track_inputs=track_inputs)
        try:
            yield handle
        finally:
            handle.detach()

    def _move_to(self, lm: Any) -> None:
        p = next(self.parameters(), None)
        if p is not None and p.device != lm.device:
            self.to(lm.device)

    def _hook_one(
        self,
        handle: GateHandle,
        sm: Any,
        site: str,
        layer: int,
        gate: Gate,
        a: Any,
        record: Recorder | None,
        track_inputs: bool,
    ) -> None:
        key = self.key(site, layer)
        adapter = sm.adapter
        stash = handle._stash
        if site == "attn":
            source = sm.module(layer, adapter.attn)  # its input is x
            target, how = sm.module(layer, adapter.o_proj), "pre"  # its input is z
        else:
            source = sm.module(layer, adapter.mlp)
            target, how = sm.module(layer, adapter.mlp_out or adapter.mlp), "out"

        if gate.input_dependent:

            def keep_x(mod: nn.Module, args: tuple, kwargs: dict) -> None:
                stash[key] = _pre_input(args, kwargs)

            handle._handles.append(source.register_forward_pre_hook(keep_x, with_kwargs=True))

        def gated(y: Tensor) -> Tensor:  # y: [batch, pos, channels]
            if y.shape[-1] != gate.channels:
                raise WorkbenchError(
                    f"gate at {site} layer {layer} has {gate.channels} channels, the activation has {y.shape[-1]}"
                )
            x = None
            if gate.input_dependent:
                x = stash.pop(key, None)
                if x is None:
                    raise WorkbenchError(
                        f"gate at {site} layer {layer}: the {site} module's input was not seen before its output"
                    )
            g = gate(x)
            if record is not None:
                record(site, layer, g)
            if track_inputs:
                handle.inputs[key] = None if x is None else x.detach()
            return y * apply_alpha(g, a, y).to(y.dtype)

        if how == "pre":

            def on_pre(mod: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
                return _replace_pre_input(args, kwargs, gated(_pre_input(args, kwargs)))

            handle._handles.append(target.register_forward_pre_hook(on_pre, with_kwargs=True))
        else:

            def on_out(mod: nn.Module, args: tuple, output: Any) -> Any:
                return _replace_first(output, gated(_first(output)))

            handle._handles.append(target.register_forward_hook(on_out))

    # ------------------------------------------------------------------ regularisation
    def sparsity(
        self, inputs: GateHandle | Mapping[str, Tensor | None], attention_mask: Tensor | None = None
    ) -> Tensor:
        """Mean ``|g - 1|`` over channels and (non-padding) tokens, averaged over gates (the L1 penalty).

        Input-dependent gates are re-evaluated on the detached inputs recorded by an attachment made with
        ``track_inputs=True`` (pass the handle, or a copy of its ``inputs``), so the penalty reaches the gate
        parameters only, with or without gradient checkpointing.
        """
        recorded = inputs.inputs if isinstance(inputs, GateHandle) else inputs
        terms = []
        for site, layer, gate in self.items():
            if not gate.input_dependent:
                terms.append((gate() - 1.0).abs().mean())
                continue
            x = recorded.get(self.key(site, layer))
            if x is None:
                continue
            dev = (gate(x) - 1.0).abs().mean(dim=-1)  # [batch, pos]
            if attention_mask is not None and attention_mask.shape == dev.shape:
                m = attention_mask.to(dev.dtype)
                terms.append((dev * m).sum() / m.sum().clamp(min=1.0))
            else:
                terms.append(dev.mean())
        if not terms:
            p = next(self.parameters())
            return p.new_zeros(())
        return torch.stack(terms).mean()

    # ------------------------------------------------------------------ artifacts
    def tensors(self) -> dict[str, Tensor]:
        """Parameters keyed ``blocks.{l}.<hook site>.<name>`` (one tensor group per gated site)."""
        out = {}
        for site, layer, gate in self.items():
            for name, p in gate.named_parameters():
                out[f"blocks.{layer}.{HOOK_KIND[site]}.{name}"] = p.detach()
        return out

    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
        """Write ``gates.safetensors``-style artifact with kind, sites, layers, rank and the model fingerprint."""
        meta = {**self.describe(), **(metadata or {})}
        return save_artifact(
            path, self.tensors(), kind=ARTIFACT_KIND, fingerprint=self.fingerprint, metadata=meta
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], lm: Any | None = None) -> GateSet:
        """Read gates; with ``lm``, refuse gates made for a model of other dimensions and move them to its device.

        An alignment-gating reference checkpoint (``gating_params.pth``, or a safetensors file of its keys) is
        detected by suffix or keys and read by ``load_reference_gates``; it carries no sizes, so it needs ``lm``.
        """
        from ._reference import is_reference_checkpoint, load_reference_gates

        if is_reference_checkpoint(path):
            if lm is None:
                raise WorkbenchError(
                    f"'{path}' is an alignment-gating reference checkpoint (gate_proj_myself keys), which "
                    "carries no model sizes: load it with the model, GateSet.load(path, lm)"
                )
            return load_reference_gates(path, lm)
        art = load_artifact(
            path, expect_kind=ARTIFACT_KIND, fingerprint=None if lm is None else lm.fingerprint
        )
        meta = art.metadata
        try:
            d_in = int(meta["d_in"])
            channels = {str(k): int(v) for k, v in meta["channels"].items()}
            n_heads = int(meta["n_heads"])
            rank = int(meta.get("rank", 8))
            # sizes come from the file: check them before anything is allocated
            fp_d = getattr(art.fingerprint, "d_model", None)
            if fp_d is not None and d_in != int(fp_d):
                raise WorkbenchError(f"d_in {d_in} differs from the model width {fp_d} in the fingerprint")
            bad = {k: c for k, c in channels.items() if not 0 < c <= 64 * max(d_in, 1)}
            if (
                d_in <= 0
                or bad
                or not 0 < n_heads <= max(channels.values(), default=0)
                or not 0 < rank <= d_in
            ):
                raise WorkbenchError(
                    f"implausible gate sizes (d_in {d_in}, channels {channels}, n_heads {n_heads}, rank {rank})"
                )
            gs = cls(
                str(meta["gate_kind"]),
                list(meta["sites"]),
                [int(l) for l in meta["layers"]],
                d_in=d_in,
                channels=channels,
                n_heads=n_heads,
                rank=rank,
                fingerprint=art.fingerprint,
            )
        except KeyError as exc:
            raise WorkbenchError(f"'{path}': gate metadata lacks the key {exc}") from exc
        except WorkbenchError as exc:
            raise WorkbenchError(f"'{path}': {exc}") from exc
        except (TypeError, ValueError, AttributeError, OverflowError) as exc:
            raise WorkbenchError(f"'{path}': malformed gate metadata ({type(exc).__name__}: {exc})") from exc
        expected = gs.tensors()
        missing = sorted(set(expected) - set(art.tensors))
        extra = sorted(set(art.tensors) - set(expected))
        if missing or extra:
            raise WorkbenchError(
                f"'{path}': gate tensors do not match its metadata (missing {missing[:3]}, extra {extra[:3]})"
            )
        with torch.no_grad():
            for site, layer, gate in gs.items():
                for name, p in gate.named_parameters():
                    t = art.tensors[f"blocks.{layer}.{HOOK_KIND[site]}.{name}"]
                    if t.shape != p.shape:
                        raise WorkbenchError(
                            f"'{path}': tensor blocks.{layer}.{HOOK_KIND[site]}.{name} has shape "
                            f"{tuple(t.shape)}, expected {tuple(p.shape)}"
                        )
                    p.copy_(t)
        gs.metadata = dict(meta)
        if lm is not None:
            gs.check_model(lm)
            gs.to(lm.device)
        return gs


def gate_intervention(
    lm: Any, gates: GateSet | str | os.PathLike[str], alpha: AlphaSpec = 1.0
) -> Callable[[], Any]:
    """A zero-argument callable returning a context manager that attaches ``gates`` to ``lm`` at ``alpha``.

    This is the ``intervention`` hook of ``workbench.evaluation.Evaluator`` (``workbench eval --gates F
    --gate-alpha A``). ``gates`` may be a ``GateSet`` or the path of a saved one.
    """
    gs = gates if isinstance(gates, GateSet) else GateSet.load(gates, lm)
    gs.check_model(lm)
    resolve_alpha(alpha, gs.layers, lm.n_layers)  # fail now, not at the first batch

    def intervention() -> contextlib.AbstractContextManager[GateHandle]:
        return gs.attached(lm, alpha=alpha)

    return intervention
