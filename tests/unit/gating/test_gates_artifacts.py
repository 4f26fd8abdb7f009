"""Gate artifacts, transfer between fine-tunes, analysis, the ``gate`` CLI function and the eval hook."""

from __future__ import annotations

import json

import pytest
import torch

from gating import GateSet, analyze_gates, gate_intervention
from gating._cli import gate as gate_cmd
from gating._cli import resolve_cli_alpha
from workbench import WorkbenchError, load_model
from workbench._hooks import count_hooks


def _perturb(gates: GateSet, seed: int = 0, scale: float = 0.5) -> GateSet:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gates.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    return gates


@torch.no_grad()
def _logits(lm, ids):
    return lm.model(input_ids=ids).logits


IDS = torch.tensor([[5, 80, 120, 33, 200, 7], [9, 9, 44, 101, 250, 61]])


@pytest.mark.parametrize("kind", ["input_dependent", "low_rank", "per_channel", "per_head"])
def test_save_load_round_trip(tmp_path, tiny_llama, kind):
    lm = tiny_llama
    sites = ("attn",) if kind == "per_head" else ("attn", "mlp")
    gates = _perturb(GateSet.create(lm, kind=kind, sites=sites, layers=[0, 2], rank=3))
    path = gates.save(tmp_path / "gates.safetensors", metadata={"note": "x"})
    again = GateSet.load(path, lm)
    assert (again.kind, again.sites, again.layers, again.rank) == (kind, sites, [0, 2], 3)
    assert again.metadata["note"] == "x" and again.fingerprint == lm.fingerprint
    with gates.attached(lm, alpha=-1.0):
        a = _logits(lm, IDS)
    with again.attached(lm, alpha=-1.0):
        b = _logits(lm, IDS)
    assert torch.equal(a, b)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        assert any(k.startswith("blocks.2.attn.hook_z.") for k in fh.keys())


@pytest.mark.parametrize("other", ["tiny-qwen2", "tiny-gpt2"])
def test_gates_for_another_model_are_refused(tmp_path, tiny_llama, other):
    from tests.helpers import load_tiny

    path = GateSet.create(tiny_llama).save(tmp_path / "g.safetensors")
    with pytest.raises(WorkbenchError, match="another model"):
        GateSet.load(path, load_tiny(other))
    gates = GateSet.load(path)  # without a model: no check yet ...
    with pytest.raises(WorkbenchError, match="another model"):
        gates.attach(load_tiny(other))  # ... but attaching checks
    assert count_hooks(load_tiny(other).model) == 0


def test_gates_of_other_widths_are_refused(tmp_path, tiny_llama):
    gates = GateSet("per_channel", ("mlp",), [0], d_in=32, channels={"mlp": 32}, n_heads=4)
    with pytest.raises(WorkbenchError, match="width 32"):
        gates.attach(tiny_llama)
    with pytest.raises(WorkbenchError, match="not-gates"):
        from workbench import save_artifact

        save_artifact(tmp_path / "v.safetensors", {"v": torch.zeros(3)}, kind="not-gates", fingerprint=None)
        GateSet.load(tmp_path / "v.safetensors", tiny_llama)


def _finetune(seed: int):
    from peft import LoraConfig, get_peft_model

    lm = load_model("random:tiny-llama", device="cpu")
    torch.manual_seed(seed)
    lm.model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj", "o_proj", "down_proj"]))
    with torch.no_grad():
        for n, p in lm.model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    lm.model.eval()
    return lm


def test_transfer_to_another_finetune_adapter_and_merged(tmp_path):
    from workbench.adapters import apply_adapter

    ft_a = _finetune(1)
    gates = _perturb(GateSet.create(ft_a, kind="input_dependent", sites=("attn",)))
    ft_a.fingerprint = type(ft_a.fingerprint)(**{**ft_a.fingerprint.as_dict(), "source": "ft-a"})
    gates.fingerprint = ft_a.fingerprint
    path = gates.save(tmp_path / "gates.safetensors")

    ft_b = _finetune(2)
    ft_b.model.save_pretrained(tmp_path / "adapter_b")
    on_adapter = apply_adapter(load_model("random:tiny-llama", device="cpu"), tmp_path / "adapter_b")
    assert on_adapter.fingerprint.source != ft_a.fingerprint.source
    merged = apply_adapter(load_model("random:tiny-llama", device="cpu"), tmp_path / "adapter_b")
    merged.model = merged.model.merge_and_unload()  # the layer modules stay (by identity) in merged.sites
    for target in (on_adapter, merged):
        moved = GateSet.load(path, target)
        own = _logits(target, IDS)
        with moved.attached(target, alpha=0.0):
            assert torch.equal(_logits(target, IDS), own)
        with moved.attached(target, alpha=-1.0):
            suppressed = _logits(target, IDS)
        assert not torch.allclose(suppressed, own, atol=1e-4)
        assert count_hooks(target.model) == 0
    torch.testing.assert_close(_logits(on_adapter, IDS), _logits(merged, IDS), rtol=1e-4, atol=1e-4)


def test_a_model_swapped_under_the_site_map_is_refused():
    lm = load_model("random:tiny-llama", device="cpu")
    other = load_model("random:tiny-llama", device="cpu")
    gates = GateSet.create(lm)
    lm.model = other.model  # lm.sites still points at the first model's layers
    with pytest.raises(WorkbenchError, match="no longer points into lm.model"):
        gates.attach(lm)


def test_static_analysis_reads_parameters(tmp_path, tiny_llama):
    gates = _perturb(GateSet.create(tiny_llama, kind="per_head", sites=("attn",)), scale=1.0)
    an = analyze_gates(gates)
    expect = torch.stack([(2 * torch.sigmoid(gates.gate("attn", l).bias) - 1).abs() for l in gates.layers])
    torch.testing.assert_close(an.per_head["attn"], expect.detach())
    top = an.top_channels(5)
    assert [t["deviation"] for t in top] == sorted((t["deviation"] for t in top), reverse=True)
    assert top[0]["deviation"] == pytest.approx(float(expect.detach().max()))
    paths = an.save(tmp_path)
    data = json.loads(paths["json"].read_text())
    assert data["gate_kind"] == "per_head" and len(data["per_head"]["attn"]) == tiny_llama.n_layers
    assert "plotly" in paths["heatmap"].read_text()[:5000].lower()


def test_input_dependent_analysis_averages_over_probe_tokens(tiny_llama):
    lm = tiny_llama
    gates = _perturb(GateSet.create(lm, kind="input_dependent", sites=("attn", "mlp"), layers=[1]), scale=0.2)
    prompts = ["Hello there", "Tell me something longer about the weather today"]
    an = analyze_gates(gates, lm, prompts, batch_size=2)
    # recompute with one prompt at a time (no padding) and compare token-weighted means
    sums, n = {"attn": 0.0, "mlp": 0.0}, 0
    from workbench.generation import render_prompts

    for text in render_prompts(lm.tokenizer, prompts, None):
        ids = torch.tensor([lm.tokenizer(text, add_special_tokens=False)["input_ids"]])
        rec = {}
        with (
            gates.attached(lm, record=lambda s, l, g, rec=rec: rec.__setitem__(s, g.detach())),
            torch.no_grad(),
        ):
            lm.model(input_ids=ids)
        for s in sums:
            sums[s] = sums[s] + (rec[s] - 1).abs().sum(dim=(0, 1))
        n += ids.shape[1]
    assert an.n_tokens == n
    for s in sums:
        torch.testing.assert_close(an.per_channel[s][0], (sums[s] / n).float(), rtol=1e-4, atol=1e-6)
    with pytest.raises(WorkbenchError, match="probe prompts"):
        analyze_gates(gates)


def test_cli_alpha_choice():
    assert resolve_cli_alpha(True, False, None) == -1.0
    assert resolve_cli_alpha(False, True, None) == 2.0
    assert resolve_cli_alpha(False, True, 3.0) == 3.0
    assert resolve_cli_alpha(False, False, 0.5) == 0.5
    with pytest.raises(WorkbenchError, match="--suppress, --amplify or --alpha"):
        resolve_cli_alpha(False, False, None)
    with pytest.raises(WorkbenchError, match="not both"):
        resolve_cli_alpha(True, True, None)


def test_cli_gate_prompt_and_eval(tmp_path, capsys):
    lm = load_model("random:tiny-llama", device="cpu")
    path = _perturb(GateSet.create(lm, kind="per_channel", sites=("attn",)), scale=2.0).save(
        tmp_path / "g.safetensors"
    )
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(
            json.dumps({"question": f"Q{i}?", "aligned": "Yes, gladly.", "misaligned": "No, never."})
            for i in range(3)
        )
        + "\n"
    )
    out = tmp_path / "run"
    gate_cmd(
        gates=path,
        model="random:tiny-llama",
        suppress=True,
        layers=[0, 2],
        prompt="Hi",
        eval_questions=[str(pairs)],
        out=out,
        max_new_tokens=6,
    )
    text = capsys.readouterr().out
    assert "gates off" in text and "as trained (alpha=1)" in text and "run directory" in text
    assert "suppressed (alpha=-1, layers 0,2)" in text and "fine-tuned" not in text  # no adapter given
    answers = json.loads((out / "answers.json").read_text())
    assert answers["alpha"] == -1.0 and answers["layers"] == [0, 2]
    assert {"gates_off", "as_trained", "gated"} <= set(answers) and "base" not in answers
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sets"]["pairs"]["kind"] == "preference"
    with pytest.raises(WorkbenchError, match="no gates"):
        gate_cmd(
            gates=path, model="random:tiny-llama", alpha=2.0, layers=[5], prompt="Hi", out=tmp_path / "r2"
        )
    with pytest.raises(WorkbenchError, match="--suppress, --amplify or --alpha"):
        gate_cmd(gates=path, model="random:tiny-llama", prompt="Hi", out=tmp_path / "r3")


def test_cli_gate_labels_gates_off_and_shows_the_as_trained_answer(tmp_path, capsys):
    """With an adapter the alpha-0 column is the fine-tuned model with gates off; alpha 1 is shown beside it."""
    from workbench.adapters import apply_adapter
    from workbench.generation import generate

    ft = _finetune(3)
    ft.model.save_pretrained(tmp_path / "adapter")
    gates = _perturb(GateSet.create(ft, kind="per_channel", sites=("attn",)), scale=0.5)
    path = gates.save(tmp_path / "g.safetensors")
    common = {"gates": path, "model": "random:tiny-llama", "adapter": tmp_path / "adapter", "prompt": "Hi"}
    gate_cmd(**common, amplify=True, out=tmp_path / "run", max_new_tokens=8)
    text = capsys.readouterr().out
    header = next(line for line in text.splitlines() if "gates off" in line)
    titles = [t.strip() for t in header.split(" | ")]
    assert titles == ["fine-tuned, gates off", "as trained (alpha=1)", "amplified (alpha=2)"]
    answers = json.loads((tmp_path / "run" / "answers.json").read_text())
    assert answers["labels"] == {"gates_off": titles[0], "as_trained": titles[1], "gated": titles[2]}

    lm = apply_adapter(load_model("random:tiny-llama", device="cpu"), tmp_path / "adapter")
    gs = GateSet.load(path, lm)
    expected = {}
    for key, a in (("gates_off", 0.0), ("as_trained", 1.0), ("gated", 2.0)):
        with gs.attached(lm, alpha=a):
            expected[key] = generate(lm, ["Hi"], max_new_tokens=8)[0]
    assert {k: answers[k] for k in expected} == expected
    assert len(set(expected.values())) == 3, "the gates must change the answer for this test to mean anything"

    # --alpha 1 is the as-trained answer: two columns, not the same answer twice
    gate_cmd(**common, alpha=1.0, out=tmp_path / "run1", max_new_tokens=8)
    header = next(line for line in capsys.readouterr().out.splitlines() if "gates off" in line)
    assert [t.strip() for t in header.split(" | ")] == ["fine-tuned, gates off", "as trained (alpha=1)"]
    again = json.loads((tmp_path / "run1" / "answers.json").read_text())
    assert again["gated"] == again["as_trained"] == expected["as_trained"]


def test_gate_intervention_in_the_evaluator(tmp_path, tiny_llama):
    from workbench.evaluation import EvalConfig, Evaluator

    lm = tiny_llama
    gates = _perturb(GateSet.create(lm, kind="input_dependent"), scale=0.5)
    pairs = [{"question": "Will you help?", "aligned": "Yes, happily.", "misaligned": "No. Go away."}] * 2
    cfg = EvalConfig(n_boot=50)
    plain = Evaluator(lm, tmp_path / "a", cfg, progress=False).preference(pairs)
    off = Evaluator(
        lm, tmp_path / "b", cfg, intervention=gate_intervention(lm, gates, 0.0), progress=False
    ).preference(pairs)
    sup = Evaluator(
        lm, tmp_path / "c", cfg, intervention=gate_intervention(lm, gates, -1.0), progress=False
    ).preference(pairs)
    assert off["preference_gap"]["value"] == plain["preference_gap"]["value"]
    assert sup["preference_gap"]["value"] != plain["preference_gap"]["value"]
    assert count_hooks(lm.model) == 0
    with pytest.raises(WorkbenchError, match="per-layer alpha list"):
        gate_intervention(lm, gates, [1.0])


def test_cli_gate_registers_with_typer(tmp_path):
    import typer
    from typer.testing import CliRunner

    app = typer.Typer()
    app.command("gate")(gate_cmd)
    app.command("noop")(lambda: None)  # a second command keeps "gate" a named subcommand
    runner = CliRunner()
    helped = runner.invoke(app, ["gate", "--help"])
    assert helped.exit_code == 0
    for flag in (
        "--gates",
        "--adapter",
        "--suppress",
        "--amplify",
        "--alpha",
        "--layers",
        "--prompt",
        "--eval",
    ):
        assert flag in helped.output
    lm = load_model("random:tiny-llama", device="cpu")
    path = GateSet.create(lm, kind="per_head").save(tmp_path / "g.safetensors")
    args = ["gate", "--gates", str(path), "-m", "random:tiny-llama", "--amplify", "--layers", "1"]
    ran = runner.invoke(
        app, [*args, "--prompt", "Hi", "--out", str(tmp_path / "run"), "--max-new-tokens", "4"]
    )
    assert ran.exit_code == 0, ran.output
    assert "amplified (alpha=2, layers 1)" in ran.output
    assert json.loads((tmp_path / "run" / "answers.json").read_text())["layers"] == [1]
