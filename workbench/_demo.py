"""``workbench demo``: the end-to-end main job on the embedded model.

Stage 1 (foundation): load the model, show its info, answer one chat prompt and read every hook site
for that prompt, printing per-layer residual norms. Later capabilities add their steps here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from ._hooks import read_sites
from ._io import atomic_write_json, atomic_write_text
from .generation import encode_left, generate, render_prompts


def _bar(value: float, vmax: float, width: int = 40) -> str:
    return "#" * max(1, round(width * value / vmax)) if vmax > 0 else ""


def run_demo(model: str, out: Path | None, prompt: str, echo: Callable[[str], None]) -> Path:
    from .cli import _load

    run_dir = Path(out) if out else Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)

    echo(f"[1/3] loading {model} ...")
    t0 = time.time()
    lm = _load(model)
    info = lm.info()
    echo(
        f"      {info['architecture']}: {info['n_layers']} layers, d_model {info['d_model']}, "
        f"{info['n_heads']} heads, {info['parameters'] / 1e6:.1f}M parameters ({time.time() - t0:.1f} s)"
    )

    echo("[2/3] answering one chat prompt (greedy)")
    answer = generate(lm, [prompt], max_new_tokens=60)[0]
    echo(f"      user: {prompt}")
    echo(f"      assistant: {answer}")

    echo(f"[3/3] reading all {5 * lm.n_layers} hook sites for the prompt + answer")
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

    atomic_write_json(run_dir / "info.json", info)
    atomic_write_json(
        run_dir / "site_norms.json", {"tokens": n_tokens, "sites_read": len(sites), "norms": norms}
    )
    atomic_write_text(run_dir / "answer.txt", f"user: {prompt}\nassistant: {answer}\n")
    echo(f"run directory: {run_dir}")
    return run_dir
