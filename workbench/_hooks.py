"""Scoped hooks: read any set of sites, or intervene on them. Nothing is left on the model afterwards.

Both context managers register their own handles and remove exactly those in ``finally``, so an
exception inside the block leaves the model as it was and hooks registered by others untouched.
Interventions are out-of-place (the edit function returns a new tensor), which keeps them safe under
autograd and gradient checkpointing. ``forward_until`` runs a forward pass only as far as the last site
a reader needs (later layers, the final norm and the unembedding are skipped).

``intervene(..., with_input=True)`` hands each edit the site's tensor and the input of the sublayer that
made it (``SiteMap.input_site``: the normalised input for ``attn.hook_z`` / ``hook_mlp_out``), which is what
an input-dependent gate needs. Every hook is placed through ``SiteMap.hook_target``, the one site -> module
resolution.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ._errors import WorkbenchError
from ._sites import SiteMap

Reduce = Callable[[str, Tensor], Tensor]
Edit = Callable[[Tensor], Tensor]
#: ``edit(activation, sublayer_input) -> new activation`` (``intervene(..., with_input=True)``)
EditWithInput = Callable[[Tensor, Tensor], Tensor]


def _sitemap(obj: Any) -> SiteMap:
    return obj if isinstance(obj, SiteMap) else obj.sites


def _first(output: Any) -> Tensor:
    return output[0] if isinstance(output, tuple) else output


def _replace_first(output: Any, new: Tensor) -> Any:
    if isinstance(output, tuple):
        return (new, *output[1:])
    return new


def _pre_input(args: tuple, kwargs: dict) -> Tensor:
    if args:
        return args[0]
    return kwargs["hidden_states"]


def _replace_pre_input(args: tuple, kwargs: dict, new: Tensor) -> tuple[tuple, dict]:
    if args:
        return (new, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": new}


def _split_heads(x: Tensor, n_heads: int) -> Tensor:
    return x.view(*x.shape[:-1], n_heads, x.shape[-1] // n_heads)  # [batch, pos, n_heads, d_head]


class ActivationCache(Mapping[str, Tensor]):
    """Activations recorded per site; one entry per forward call (e.g. one per decoding step).

    ``cache[site]`` is the most recent entry; ``cache.all(site)`` is every entry in order.
    """

    def __init__(self) -> None:
        self._data: dict[str, list[Tensor]] = defaultdict(list)

    def _add(self, site: str, value: Tensor) -> None:
        self._data[site].append(value)

    def __getitem__(self, site: str) -> Tensor:
        if site not in self._data or not self._data[site]:
            raise KeyError(
                f"no activations recorded for site '{site}' (was a forward pass run inside the block?)"
            )
        return self._data[site][-1]

    def all(self, site: str) -> list[Tensor]:
        return list(self._data.get(site, []))

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def clear(self) -> None:
        self._data.clear()


def _register(module: nn.Module, how: str, fn_out: Callable[..., Any], fn_pre: Callable[..., Any]) -> Any:
    if how == "out":
        return module.register_forward_hook(fn_out)
    return module.register_forward_pre_hook(fn_pre, with_kwargs=True)


@contextlib.contextmanager
def read_sites(
    model: Any,
    sites: list[str] | tuple[str, ...],
    *,
    reduce: Reduce | None = None,
    detach: bool = True,
) -> Iterator[ActivationCache]:
    """Record the activations at ``sites`` during the forward passes run inside the block.

    ``reduce(site, tensor) -> tensor`` is applied before storing (e.g. a mean over positions), so long
    runs need not keep every tensor. ``model`` is a ``LoadedModel`` or a ``SiteMap``. To skip the layers
    after the last site read, run the pass inside the block with ``forward_until(lm, sites, ...)``.
    """
    sm = _sitemap(model)
    cache = ActivationCache()
    handles = []
    try:
        for site in sites:
            module, how = sm.hook_target(site)

            def store(x: Tensor, site: str = site) -> None:
                if detach:
                    x = x.detach()
                cache._add(site, reduce(site, x) if reduce is not None else x)

            def on_out(mod, args, output, store=store):
                store(_first(output))

            def on_pre(mod, args, kwargs, store=store, how=how):
                x = _pre_input(args, kwargs)
                store(_split_heads(x, sm.n_heads) if how == "z" else x)

            handles.append(_register(module, how, on_out, on_pre))
        yield cache
    finally:
        for h in handles:
            h.remove()


class _StopForward(Exception):
    """Raised by ``forward_until``'s own hook to end a forward pass; caught only by the call that raised it."""

    def __init__(self, token: object) -> None:
        super().__init__("forward pass stopped early by forward_until")
        self.token = token


def _stop_layer(sm: SiteMap, stop_after: int | str | Sequence[str]) -> int:
    """The decoder layer after which the pass may end: a layer index, or the deepest layer of some sites."""
    if isinstance(stop_after, bool) or not isinstance(stop_after, (int, str, list, tuple)):
        raise WorkbenchError(
            f"stop_after must be a layer index (0..{sm.n_layers - 1}), a site name or a list of site names, "
            f"got {stop_after!r}"
        )
    if isinstance(stop_after, int):
        return sm.check_layer(stop_after)
    names = [stop_after] if isinstance(stop_after, str) else list(stop_after)
    if not names:
        raise WorkbenchError("stop_after is an empty list of sites; give a layer index or at least one site")
    return max(sm.parse(name)[0] for name in names)


def forward_until(model: Any, stop_after: int | str | Sequence[str], /, *args: Any, **kwargs: Any) -> None:
    """Run ``model.model(*args, **kwargs)`` only through the decoder layer that holds ``stop_after``.

    ``stop_after`` is a layer index, a site name, or the list of sites a reader needs (the deepest one
    counts). The pass ends once that decoder layer has returned, so every site of that layer and of the
    layers before it has been read by the hooks already installed (``read_sites``, ``intervene``); the
    later layers, the final norm and the unembedding never run, and nothing is returned (no logits).
    ``use_cache`` defaults to ``False`` (a cut pass would leave a partial key-value cache). The stop hook
    is removed in ``finally``; an exception raised by anything else in the pass propagates unchanged.
    ``model`` is a ``LoadedModel``.
    """
    if isinstance(model, SiteMap) or not hasattr(model, "model"):
        raise WorkbenchError(
            f"forward_until needs a LoadedModel (it runs the model), got {type(model).__name__}"
        )
    sm = _sitemap(model)
    layer = _stop_layer(sm, stop_after)
    token = object()

    def stop(module: nn.Module, args: Any, output: Any) -> None:
        raise _StopForward(token)

    kwargs.setdefault("use_cache", False)
    handle = sm.layers[layer].register_forward_hook(stop)
    try:
        model.model(*args, **kwargs)
    except _StopForward as exc:
        if exc.token is not token:  # another forward_until's stop (a nested call): not ours to swallow
            raise
    finally:
        handle.remove()


@contextlib.contextmanager
def intervene(
    model: Any, edits: Mapping[str, Edit] | Mapping[str, EditWithInput], *, with_input: bool = False
) -> Iterator[None]:
    """Replace the activation at each site by ``edit(activation)`` for forward passes inside the block.

    ``edit`` receives the tensor in the site's shape (``attn.hook_z`` as ``[batch, pos, n_heads, d_head]``)
    and must return a tensor of the same shape; it must not modify its input in place.

    ``with_input=True``: every edit is called ``edit(activation, x)``, where ``x`` is the input of the
    sublayer that made the site in the same forward pass (``SiteMap.input_site``: ``ln1.hook_normalized``
    for ``attn.hook_z`` and ``hook_attn_out``, ``ln2.hook_normalized`` for ``hook_mlp_out``,
    ``hook_resid_pre`` for ``hook_resid_post``), ``[batch, pos, d_model]``. ``x`` is caught by a hook at
    that input site and consumed by the edit, so each decoding step and each recompute under gradient
    checkpointing sees its own. An edit whose input was not seen first raises a ``WorkbenchError``; a site
    without an input (``hook_resid_pre``, the ``ln*`` sites) is refused when the block opens. All hooks,
    the input catchers included, are removed in ``finally``.
    """
    sm = _sitemap(model)
    handles: list[Any] = []
    try:
        for site, edit in edits.items():
            module, how = sm.hook_target(site)
            fn: Callable[..., Tensor] = edit
            if with_input:
                fn = _with_input(sm, site, edit, handles)

            def on_out(mod, args, output, fn=fn):
                return _replace_first(output, fn(_first(output)))

            def on_pre(mod, args, kwargs, fn=fn, how=how):
                x = _pre_input(args, kwargs)
                if how == "z":
                    new = fn(_split_heads(x, sm.n_heads)).reshape(x.shape)
                else:
                    new = fn(x)
                return _replace_pre_input(args, kwargs, new)

            handles.append(_register(module, how, on_out, on_pre))
        yield
    finally:
        for h in handles:
            h.remove()


def _with_input(sm: SiteMap, site: str, edit: Callable[..., Tensor], handles: list[Any]) -> Edit:
    """Install a catcher of ``site``'s sublayer input (its handle goes into ``handles``); return a one-argument
    edit that calls ``edit(activation, caught input)``."""
    source = sm.input_site(site)
    module, how = sm.hook_target(source)
    caught: list[Tensor] = []

    def keep(x: Tensor) -> None:
        caught[:] = [x]

    def on_out(mod, args, output):
        keep(_first(output))

    def on_pre(mod, args, kwargs):
        keep(_pre_input(args, kwargs))

    handles.append(_register(module, how, on_out, on_pre))

    def one(y: Tensor) -> Tensor:
        if not caught:
            raise WorkbenchError(
                f"intervene(with_input=True): the input of '{site}' ({source}) was not seen before it in "
                "this forward pass"
            )
        return edit(y, caught.pop())

    return one


def _ours(hook: Any) -> bool:
    """False for transformers' own output-capturing hooks: it installs them once, permanently, the first time
    a model is asked for hidden states or attentions, so they are not leaks."""
    fn = getattr(hook, "func", hook)
    return not str(getattr(fn, "__module__", "") or "").startswith("transformers.")


def count_hooks(model: nn.Module) -> int:
    """Number of forward / pre-forward hooks on every submodule (for leak checks), not counting the
    permanent output-capturing hooks transformers installs for ``output_hidden_states``."""
    n = 0
    for m in model.modules():
        n += sum(_ours(h) for h in m._forward_hooks.values())
        n += sum(_ours(h) for h in m._forward_pre_hooks.values())
    return n


@torch.no_grad()
def residual_norms(model: Any, inputs: Mapping[str, Tensor]) -> Tensor:
    """Mean L2 norm of ``resid_post`` per layer over non-padding tokens: ``[n_layers]``."""
    sm = _sitemap(model)
    mask = inputs.get("attention_mask")
    sites = [f"blocks.{l}.hook_resid_post" for l in range(sm.n_layers)]
    with read_sites(model, sites) as cache:
        model.model(**inputs)
    norms = []
    for s in sites:
        n = cache[s].float().norm(dim=-1)  # [batch, pos]
        norms.append((n * mask).sum() / mask.sum() if mask is not None else n.mean())
    return torch.stack(norms)
