"""GPU tier (opt-in; runs only where CUDA exists): sites and interventions on a bf16 model on the GPU."""

from __future__ import annotations

import pytest
import torch

from workbench import intervene, load_model, read_sites

pytestmark = pytest.mark.gpu


def test_sites_on_cuda_bf16():
    lm = load_model("random:tiny-qwen2", device="cuda", dtype="bfloat16")
    ids = torch.randint(0, 250, (2, 16), device="cuda")
    with torch.no_grad(), read_sites(lm, lm.sites.names(["hook_resid_post"])) as cache:
        out = lm.model(input_ids=ids, output_hidden_states=True)
    for l in range(lm.n_layers - 1):
        torch.testing.assert_close(cache[f"blocks.{l}.hook_resid_post"], out.hidden_states[l + 1])
    with torch.no_grad(), intervene(lm, {"blocks.0.hook_resid_post": lambda x: x * 1}):
        again = lm.model(input_ids=ids).logits
    torch.testing.assert_close(again, out.logits)
