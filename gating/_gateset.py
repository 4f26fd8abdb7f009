"""``GateSet``: the gates of one model (a kind at some placements and layers), attached by scoped hooks.

Attaching goes through the workbench's hook-site vocabulary and nothing else: each gate is one
``workbench.intervene`` edit at its hook site (``with_input=True`` for input-dependent kinds, which hands the
edit the sublayer's normalised input), entered on an ``ExitStack`` that ``handle.detach()`` closes. No module
is replaced and no weight is changed, so detaching (or leaving ``with gates.attached(lm): ...``) gives back
exactly the model that was there before, even after an exception. Modules are resolved when attaching, by
``SiteMap.hook_target`` through the layer modules kept by identity in ``lm.sites.layers``, so a model wrapped
by PEFT after the gates were made (its ``o_proj`` replaced by a ``lora.Linear``) is gated in the same place.
Edits are out-of-place, so gates train under autograd and gradient checkpointing.

Placements (where a gate sits; "site" is kept for the hook-site names, and ``sites`` is accepted as the old
name of ``placements`` everywhere)::

    attn  blocks.{l}.attn.hook_z   the per-head attention output before the output projection, flattened to
                                   [batch, pos, n_heads * d_head]; x = blocks.{l}.ln1.hook_normalized (the
                                   attention's input: the input_layernorm / ln_1 output)
    mlp   blocks.{l}.hook_mlp_out  the MLP's contribution to the residual, [batch, pos, d_model];
                                   x = blocks.{l}.ln2.hook_normalized (the MLP's input)
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from workbench import ModelFingerprint, ModelLike, WorkbenchError, intervene, load_artifact, save_artifact

from ._control import AlphaSpec, apply_alpha, resolve_alpha
from ._gate import GATE_PLACEMENTS, Gate, gate_class

ARTIFACT_KIND = "gates"
#: gate placement -> the hook-site kind it multiplies
HOOK_KIND = {"attn": "attn.hook_z", "mlp": "hook_mlp_out"}

Recorder = Callable[[str, int, Tensor], None]


def hook_site(placement: str, layer: int) -> str:
    """The hook site a gate at (placement, layer) multiplies, e.g. ``blocks.3.attn.hook_z``."""
    return f"blocks.{layer}.{HOOK_KIND[placement]}"


def _in_features(module: nn.Module) -> int | None:
    for attr in ("in_features", "nx"):  # nn.Linear, transformers' Conv1D (GPT-2)
        n = getattr(module, attr, None)
        if isinstance(n, int):
            return n
    return None


def placement_channels(lm: ModelLike, placement: str, layer: int) -> int:
    """Channels a gate at (placement, layer) multiplies: ``n_heads * d_head`` at attn, ``d_model`` at mlp.

    At ``attn`` that is the input width of the module ``blocks.{layer}.attn.hook_z`` hooks (the output
    projection), found through ``SiteMap.hook_target`` like every other hook.
    """
    sm = lm.sites
    if placement == "mlp":
        return int(sm.d_model)
    o_proj, _ = sm.hook_target(hook_site("attn", layer))
    n = _in_features(o_proj)
    if n is None:
        cfg = getattr(lm.model, "config", None)
        head_dim = getattr(cfg, "head_dim", None) or sm.d_model // sm.n_heads
        n = int(sm.n_heads * head_dim)
    return n


#: the old name of ``placement_channels``
site_channels = placement_channels


def _check_placements(placements: Sequence[str] | str) -> tuple[str, ...]:
    if isinstance(placements, str):
        placements = (placements,)
    out = tuple(placements)
    if not out:
        raise WorkbenchError("no gate placements given; choose from: " + ", ".join(GATE_PLACEMENTS))
    for s in out:
        if s not in GATE_PLACEMENTS:
            raise WorkbenchError(
                f"unknown gate site '{s}' (a gate's placement); choose from: {', '.join(GATE_PLACEMENTS)}"
            )
    if len(set(out)) != len(out):
        raise WorkbenchError(f"gate placements repeated: {list(out)}")
    return out


def _one_of(placements: Sequence[str] | str | None, sites: Sequence[str] | str | None, default: Any) -> Any:
    """``placements``, or its old name ``sites``; both given must agree."""
    if placements is not None and sites is not None:
        if _check_placements(placements) != _check_placements(sites):
            raise WorkbenchError(
                f"placements {list(_check_placements(placements))} and sites {list(_check_placements(sites))} "
                "disagree; give one of them (sites is the old name of placements)"
            )
        return placements
    if placements is not None:
        return placements
    return default if sites is None else sites


class GateHandle:
    """Hooks of one attachment. ``detach()`` removes exactly them (idempotent); also a context manager."""

    def __init__(self, gates: GateSet, lm: Any, alpha: dict[int, Any]) -> None:
        self.gates = gates
        self.lm = lm
        self.alpha = alpha
        self._stack: contextlib.ExitStack | None = None
        #: detached gate inputs of the last forward pass, per gate key (filled when ``track_inputs``)
        self.inputs: dict[str, Tensor | None] = {}

    def _open(
        self, edits: dict[str, Callable[..., Tensor]], with_input: dict[str, Callable[..., Tensor]]
    ) -> None:
        """Enter the ``intervene`` blocks of this attachment (a failure leaves no hook behind)."""
        stack = contextlib.ExitStack()
        try:
            if edits:
                stack.enter_context(intervene(self.lm, edits))
            if with_input:
                stack.enter_context(intervene(self.lm, with_input, with_input=True))
        except BaseException:
            stack.close()
            raise
        self._stack = stack if edits or with_input else None  # every layer at alpha 0: nothing attached

    @property
    def attached(self) -> bool:
        return self._stack is not None

    def detach(self) -> None:
        """Remove this attachment's hooks. Nothing of the gates remains on the model afterwards."""
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        self.inputs.clear()

    def __enter__(self) -> GateHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()


class GateSet(nn.Module):
    """Gates of one kind at some placements and layers of one model (an ``nn.Module``: train it with any
    optimizer).

    Make one with ``GateSet.create(lm, ...)`` or ``GateSet.load(path, lm)``; apply it with
    ``with gates.attached(lm, alpha=1.0): ...`` or ``handle = gates.attach(lm); ...; handle.detach()``.
    Nothing persists on the model after detaching. ``placements`` (``attn`` and/or ``mlp``) may also be
    given as ``sites=`` and read as ``gates.sites`` (the old name).
    """

    def __init__(
        self,
        kind: str,
        placements: Sequence[str] | None = None,
        layers: Sequence[int] | None = None,
        *,
        d_in: int,
        channels: dict[str, int],
        n_heads: int,
        rank: int = 8,
        fingerprint: ModelFingerprint | None = None,
        sites: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        cls = gate_class(kind)
        self.kind = kind
        self.placements = _check_placements(_one_of(placements, sites, ()))
        for s in self.placements:
            if s not in cls.placements:
                raise WorkbenchError(
                    f"gate kind '{kind}' cannot sit at '{s}' (it supports: {', '.join(cls.placements)})"
                )
        self.layers = sorted({int(l) for l in layers or ()})
        if not self.layers:
            raise WorkbenchError("no layers to gate")
        self.d_in = int(d_in)
        self.channels = {s: int(channels[s]) for s in self.placements}
        self.n_heads = int(n_heads)
        self.rank = int(rank)
        self.fingerprint = fingerprint
        self.metadata: dict[str, Any] = {}
        self.history: list[dict[str, float]] = []
        self.gates = nn.ModuleDict(
            {
                self.key(s, l): cls(self.d_in, self.channels[s], self.n_heads, self.rank)
                for s in self.placements
                for l in self.layers
            }
        )

    @property
    def sites(self) -> tuple[str, ...]:
        """The old name of ``placements``."""
        return self.placements

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        lm: ModelLike,
        kind: str = "input_dependent",
        placements: Sequence[str] | None = None,
        layers: Sequence[int] | None = None,
        *,
        rank: int = 8,
        seed: int = 0,
        sites: Sequence[str] | None = None,
    ) -> GateSet:
        """Fresh identity gates for ``lm`` at ``placements`` (default ``("attn",)``; ``sites=`` is the old name)
        and ``layers`` (``None``: every layer), on the model's device, float32."""
        sm = lm.sites
        layer_ids = list(range(sm.n_layers)) if layers is None else [sm.check_layer(int(l)) for l in layers]
        placed = _check_placements(_one_of(placements, sites, ("attn",)))
        channels: dict[str, int] = {}
        for s in placed:
            per_layer = {placement_channels(lm, s, l) for l in layer_ids}
            if len(per_layer) != 1:
                raise WorkbenchError(f"layers have different widths at placement '{s}': {sorted(per_layer)}")
            channels[s] = per_layer.pop()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gs = cls(
                kind,
                placed,
                layer_ids,
                d_in=sm.d_model,
                channels=channels,
                n_heads=sm.n_heads,
                rank=rank,
                fingerprint=lm.fingerprint,
            )
        return gs.to(lm.device)

    @staticmethod
    def key(placement: str, layer: int) -> str:
        return f"{placement}_{layer}"

    def gate(self, placement: str, layer: int) -> Gate:
        key = self.key(placement, layer)
        if key not in self.gates:
            raise WorkbenchError(
                f"no gate at placement '{placement}' layer {layer} (placements {self.placements}, "
                f"layers {self.layers})"
            )
        return self.gates[key]  # type: ignore[return-value]

    def items(self) -> Iterator[tuple[str, int, Gate]]:
        """``(placement, layer, gate)`` for every gate, placement by placement."""
        for s in self.placements:
            for l in self.layers:
                yield s, l, self.gate(s, l)

    @property
    def input_dependent(self) -> bool:
        return gate_class(self.kind).input_dependent

    def describe(self) -> dict[str, Any]:
        return {
            "gate_kind": self.kind,
            "placements": list(self.placements),
            "sites": list(self.placements),  # the old key, still written for readers made before the rename
            "hook_sites": {s: f"blocks.{{l}}.{HOOK_KIND[s]}" for s in self.placements},
            "layers": list(self.layers),
            "rank": self.rank,
            "d_in": self.d_in,
            "channels": dict(self.channels),
            "n_heads": self.n_heads,
            "parameters": sum(p.numel() for p in self.parameters()),
        }

    # ------------------------------------------------------------------ attaching
    def check_model(self, lm: ModelLike) -> None:
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
        for s in self.placements:
            have = placement_channels(lm, s, self.layers[0])
            if have != self.channels[s]:
                raise WorkbenchError(
                    f"gates at '{s}' have {self.channels[s]} channels, the model has {have} there"
                )

    def attach(
        self,
        lm: ModelLike,
        alpha: AlphaSpec = 1.0,
        *,
        record: Recorder | None = None,
        track_inputs: bool = False,
    ) -> GateHandle:
        """Install the gates on ``lm`` with control ``alpha`` (see ``gating._control``); returns the handle.

        Each gate is an edit at its hook site (``blocks.{l}.attn.hook_z`` / ``blocks.{l}.hook_mlp_out``) made
        with ``workbench.intervene``; input-dependent kinds get the sublayer's normalised input from
        ``intervene(..., with_input=True)``. ``record(placement, layer, g)`` is called with every raw gate value
        (before alpha) computed in a forward pass; ``track_inputs`` keeps each gate's detached input of the
        last pass in ``handle.inputs`` (used by the sparsity penalty). Layers whose alpha is exactly 0 get no
        hook at all.
        """
        self.check_model(lm)
        sm = lm.sites
        alphas = resolve_alpha(alpha, self.layers, sm.n_layers)
        handle = GateHandle(self, lm, alphas)
        self._move_to(lm)
        plain: dict[str, Callable[..., Tensor]] = {}
        with_input: dict[str, Callable[..., Tensor]] = {}
        for placement, layer, gate in self.items():
            a = alphas[layer]
            if isinstance(a, float) and a == 0.0:
                continue
            edit = self._edit(handle, placement, layer, gate, a, record, track_inputs)
            (with_input if gate.input_dependent else plain)[hook_site(placement, layer)] = edit
        handle._open(plain, with_input)
        return handle

    @contextlib.contextmanager
    def attached(
        self,
        lm: ModelLike,
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

    def _edit(
        self,
        handle: GateHandle,
        placement: str,
        layer: int,
        gate: Gate,
        a: Any,
        record: Recorder | None,
        track_inputs: bool,
    ) -> Callable[..., Tensor]:
        """The ``intervene`` edit of one gate: ``y -> y * g_alpha`` (``(y, x) -> ...`` for input-dependent kinds)."""
        key = self.key(placement, layer)

        def gated(y: Tensor, x: Tensor | None = None) -> Tensor:
            # y: [batch, pos, n_heads, d_head] at attn (hook_z), [batch, pos, d_model] at mlp
            flat = y.flatten(-2) if placement == "attn" else y  # [batch, pos, channels]
            if flat.shape[-1] != gate.channels:
                raise WorkbenchError(
                    f"gate at {placement} layer {layer} has {gate.channels} channels, the activation has "
                    f"{flat.shape[-1]}"
                )
            g = gate(x)
            if record is not None:
                record(placement, layer, g)
            if track_inputs:
                handle.inputs[key] = None if x is None else x.detach()
            return (flat * apply_alpha(g, a, flat).to(flat.dtype)).view(y.shape)

        return gated

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
        for placement, layer, gate in self.items():
            if not gate.input_dependent:
                terms.append((gate() - 1.0).abs().mean())
                continue
            x = recorded.get(self.key(placement, layer))
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
        """Parameters keyed ``blocks.{l}.<hook site>.<name>`` (one tensor group per gated hook site)."""
        out = {}
        for placement, layer, gate in self.items():
            for name, p in gate.named_parameters():
                out[f"{hook_site(placement, layer)}.{name}"] = p.detach()
        return out

    def save(self, path: str | os.PathLike[str], metadata: dict[str, Any] | None = None) -> Path:
        """Write a ``gates.safetensors``-style artifact with kind, placements (also under the old key ``sites``),
        layers, rank and the model fingerprint."""
        meta = {**self.describe(), **(metadata or {})}
        return save_artifact(
            path, self.tensors(), kind=ARTIFACT_KIND, fingerprint=self.fingerprint, metadata=meta
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str], lm: ModelLike | None = None) -> GateSet:
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
            placements = meta["placements"] if "placements" in meta else meta["sites"]
            if "placements" in meta and "sites" in meta and list(meta["sites"]) != list(placements):
                raise WorkbenchError(
                    f"metadata 'placements' {list(placements)} and 'sites' {list(meta['sites'])} disagree"
                )
            gs = cls(
                str(meta["gate_kind"]),
                list(placements),
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
            for placement, layer, gate in gs.items():
                for name, p in gate.named_parameters():
                    t = art.tensors[f"{hook_site(placement, layer)}.{name}"]
                    if t.shape != p.shape:
                        raise WorkbenchError(
                            f"'{path}': tensor {hook_site(placement, layer)}.{name} has shape "
                            f"{tuple(t.shape)}, expected {tuple(p.shape)}"
                        )
                    p.copy_(t)
        gs.metadata = dict(meta)
        if lm is not None:
            gs.check_model(lm)
            gs.to(lm.device)
        return gs


def gate_intervention(
    lm: ModelLike, gates: GateSet | str | os.PathLike[str], alpha: AlphaSpec = 1.0
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
