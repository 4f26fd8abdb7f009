"""What trained gates do: deviation ``|g - 1|`` per layer, head and channel, top channels, heatmaps.

Static kinds are read from their parameters. Input-dependent kinds are run on probe prompts (the gates
attached at alpha 1, raw ``g`` recorded at every non-padding token) and averaged over those tokens.
``GateAnalysis.save(out_dir)`` writes ``analysis.json`` (for the app) and ``gates_heatmap.html``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench import ModelLike, WorkbenchError
from workbench.html import write_figure_html
from workbench.io import atomic_write_json

from ._gateset import HOOK_KIND, GateSet


@dataclass
class GateAnalysis:
    """Per gated site: mean ``|g - 1|`` and mean ``g`` per ``[layer, channel]``, and summaries of them.

    ``per_channel[site]`` / ``mean_g[site]``: ``[n_gated_layers, channels]`` (rows follow ``layers``);
    ``per_head["attn"]``: ``[n_gated_layers, n_heads]``; ``per_layer[site]``: ``[n_gated_layers]``.
    """

    kind: str
    layers: list[int]
    n_heads: int
    per_channel: dict[str, Tensor]
    mean_g: dict[str, Tensor]
    n_tokens: int = 0
    top_k: int = 20
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def per_layer(self) -> dict[str, Tensor]:
        return {s: t.mean(dim=1) for s, t in self.per_channel.items()}

    @property
    def per_head(self) -> dict[str, Tensor]:
        out = {}
        for s, t in self.per_channel.items():
            if s == "attn":
                out[s] = t.reshape(t.shape[0], self.n_heads, -1).mean(dim=-1)
        return out

    def top_channels(self, k: int | None = None) -> list[dict[str, Any]]:
        """The ``k`` (site, layer, channel) entries with the largest mean deviation, largest first."""
        k = self.top_k if k is None else k
        entries = []
        for s, t in self.per_channel.items():
            d_head = t.shape[1] // self.n_heads if s == "attn" else None
            flat = t.flatten()
            n = min(k, flat.numel())
            vals, idx = torch.topk(flat, n)
            for v, i in zip(vals.tolist(), idx.tolist(), strict=True):
                row, ch = divmod(i, t.shape[1])
                entry = {
                    "site": s,
                    "hook_site": f"blocks.{self.layers[row]}.{HOOK_KIND[s]}",
                    "layer": self.layers[row],
                    "channel": ch,
                    "deviation": v,
                    "mean_g": float(self.mean_g[s][row, ch]),
                }
                if d_head:
                    entry["head"], entry["head_channel"] = divmod(ch, d_head)
                entries.append(entry)
        entries.sort(key=lambda e: -e["deviation"])
        return entries[:k]

    def to_json(self) -> dict[str, Any]:
        return {
            "gate_kind": self.kind,
            "layers": self.layers,
            "n_heads": self.n_heads,
            "n_tokens": self.n_tokens,
            "per_layer": {s: t.tolist() for s, t in self.per_layer.items()},
            "per_head": {s: t.tolist() for s, t in self.per_head.items()},
            "per_channel": {s: t.tolist() for s, t in self.per_channel.items()},
            "mean_g": {s: t.tolist() for s, t in self.mean_g.items()},
            "top_channels": self.top_channels(),
            **self.info,
        }

    def heatmap(self) -> Any:
        """A plotly figure: layer x head (attn) and/or layer x channel (mlp) mean ``|g - 1|``."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        panels = []
        if "attn" in self.per_channel:
            panels.append(("attention: mean |g - 1| per head", self.per_head["attn"], "head"))
        if "mlp" in self.per_channel:
            panels.append(("MLP: mean |g - 1| per channel", self.per_channel["mlp"], "channel"))
        fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels])
        for i, (_, data, xlabel) in enumerate(panels, start=1):
            fig.add_trace(
                go.Heatmap(
                    z=data.tolist(),
                    x=list(range(data.shape[1])),
                    y=self.layers,
                    colorscale="Viridis",
                    colorbar={"title": "|g-1|", "x": 1.0 + 0.08 * (i - 1)},
                    hovertemplate=f"layer %{{y}}<br>{xlabel} %{{x}}<br>|g-1| %{{z:.4f}}<extra></extra>",
                ),
                row=1,
                col=i,
            )
            fig.update_xaxes(title_text=xlabel, row=1, col=i)
            fig.update_yaxes(title_text="layer", row=1, col=i)
        fig.update_layout(title=f"Gate deviation ({self.kind}, {self.n_tokens} probe tokens)", height=600)
        return fig

    def save(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``analysis.json`` and ``gates_heatmap.html`` into ``out_dir``; returns their paths."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"json": out / "analysis.json", "heatmap": out / "gates_heatmap.html"}
        atomic_write_json(paths["json"], self.to_json())
        write_figure_html(self.heatmap(), paths["heatmap"])
        return paths


@torch.no_grad()
def analyze_gates(
    gates: GateSet,
    lm: ModelLike | None = None,
    prompts: Sequence[Any] | None = None,
    *,
    top_k: int = 20,
    batch_size: int = 8,
    max_length: int = 256,
) -> GateAnalysis:
    """Deviation of each gate from the identity.

    Input-dependent kinds need ``lm`` and probe ``prompts`` (strings or message lists, rendered with the
    chat template); ``g`` is averaged over their non-padding tokens. Static kinds need neither.
    """
    per_channel: dict[str, Tensor] = {}
    mean_g: dict[str, Tensor] = {}
    n_tokens = 0
    if not gates.input_dependent:
        for site in gates.sites:
            g = torch.stack([gates.gate(site, l)().float().cpu() for l in gates.layers])  # [L, C]
            per_channel[site] = (g - 1.0).abs()
            mean_g[site] = g
        return GateAnalysis(gates.kind, list(gates.layers), gates.n_heads, per_channel, mean_g, 0, top_k)
    if lm is None or not prompts:
        raise WorkbenchError(f"gate kind '{gates.kind}' depends on the input: give a model and probe prompts")
    from workbench.generation import render_prompts
    from workbench.scoring import pad_right

    texts = render_prompts(lm.tokenizer, list(prompts), None)
    seqs = [lm.tokenizer(t, add_special_tokens=False)["input_ids"][:max_length] for t in texts]
    dev_sum = {s: torch.zeros(len(gates.layers), gates.channels[s], dtype=torch.float64) for s in gates.sites}
    g_sum = {s: torch.zeros_like(dev_sum[s]) for s in gates.sites}
    row_of = {l: i for i, l in enumerate(gates.layers)}
    current: dict[str, Tensor] = {}

    def record(site: str, layer: int, g: Tensor) -> None:
        m = current["mask"]  # [batch, pos]
        g = g.float()
        dev_sum[site][row_of[layer]] += ((g - 1.0).abs() * m[..., None]).sum(dim=(0, 1)).double().cpu()
        g_sum[site][row_of[layer]] += (g * m[..., None]).sum(dim=(0, 1)).double().cpu()

    pad = lm.tokenizer.pad_token_id if lm.tokenizer.pad_token_id is not None else 0
    with gates.attached(lm, alpha=1.0, record=record):
        for start in range(0, len(seqs), batch_size):
            ids, mask = pad_right(seqs[start : start + batch_size], pad, lm.device)
            current["mask"] = mask.float()
            n_tokens += int(mask.sum())
            lm.model(input_ids=ids, attention_mask=mask)
    for s in gates.sites:
        per_channel[s] = (dev_sum[s] / max(1, n_tokens)).float()
        mean_g[s] = (g_sum[s] / max(1, n_tokens)).float()
    return GateAnalysis(
        gates.kind,
        list(gates.layers),
        gates.n_heads,
        per_channel,
        mean_g,
        n_tokens,
        top_k,
        info={"n_prompts": len(seqs)},
    )
