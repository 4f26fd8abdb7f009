"""The first step of ``workbench demo``: answer one chat prompt and read every hook site for it.

The full demo pipeline lives in ``apps/demo.py`` (a thin client of all packages).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ._hooks import read_sites
from .generation import encode_left, generate, render_prompts


def _bar(value: float, vmax: float, width: int = 40) -> str:
    return "#" * max(1, round(width * value / vmax)) if vmax > 0 else ""


def read_all_sites(lm, prompt: str, echo: Callable[[str], None]) -> dict[str, list[float]]:
    """Answer one prompt, read every hook site for prompt + answer, print per-layer residual norms."""
    info = lm.info()
    echo(
        f"      {info['architecture']}: {info['n_layers']} layers, d_model {info['d_model']}, "
        f"{info['n_heads']} heads, {info['parameters'] / 1e6:.1f}M parameters"
    )
    answer = generate(lm, [prompt], max_new_tokens=60)[0]
    echo(f"      user: {prompt}")
    echo(f"      assistant: {answer}")
    echo(f"      reading all {5 * lm.n_layers} hook sites for the prompt + answer")
    text = render_prompts(lm.tokenizer, [prompt])[0] + answer
    enc = encode_left(lm.tokenizer, [text], lm.device)
    sites = lm.sites.names()
    with torch.no_grad(), read_sites(lm, sites) as cache:
        lm.model(**enc)
    n_tokens = enc["input_ids"].shape[1]
    norms = {
        kind: [
            cache[f"blocks.{l}.{kind}"].float().flatten(2).norm(dim=-1).mean().item()
            for l in range(lm.n_layers)
        ]
        for kind in ("hook_resid_post", "hook_attn_out", "hook_mlp_out")
    }
    resid = norms["hook_resid_post"]
    echo(f"      mean L2 norm of blocks.{{l}}.hook_resid_post over {n_tokens} tokens:")
    for l, v in enumerate(resid):
        echo(f"      layer {l:>2} {v:8.2f} {_bar(v, max(resid))}")

    return norms
