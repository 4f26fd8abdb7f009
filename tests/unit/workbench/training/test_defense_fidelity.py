"""Each audited defense against its paper: defaults, and the formula checked on numbers computed by hand.

LDIFS (Mukhoti et al. 2023; as used by Kaczer et al. 2025), Interleaving+ / ++ (Kaczer et al. 2025),
gradient projection, O-LoRA (Wang et al. 2023) and inoculation prompting. Every pre-audit behaviour is
still reachable by a setting; those are checked too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.unit.workbench.training.test_defenses import (
    align_rows,
    chat,
    config,
    trainer,
    two_steps,
    write_jsonl,
)
from workbench._errors import WorkbenchError
from workbench.training import train
from workbench.training._config import build_dataclass
from workbench.training._data import ORIGIN
from workbench.training._plugins import get_defense
from workbench.training.defenses.feature_distance import FeatureSettings, ReprSettings, feature_distance
from workbench.training.defenses.grad_projection import GradProjectionSettings, project_gradients
from workbench.training.defenses.inoculation import InoculationDefense, InoculationSettings
from workbench.training.defenses.interleave_plus import (
    PHRASE_REFUSAL_KEYWORDS,
    InterleavePlusPlusSettings,
    InterleavePlusSettings,
    is_refusal,
    loss_gap_scores,
    refusal_filter,
    refusal_keywords,
)
from workbench.training.defenses.olora import combine_lora, lora_scaling

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


@pytest.fixture(scope="module")
def side_adapter(tmp_path_factory) -> Path:
    """A small trained LoRA adapter (r 4, alpha 8, rsLoRA: scaling 8 / sqrt(4) = 4) on the alignment rows."""
    tmp = tmp_path_factory.mktemp("side")
    cfg = config(
        tmp, data=[{"path": str(write_jsonl(tmp / "al.jsonl", align_rows()))}], optim={"max_steps": 3}
    )
    return train(cfg, tmp / "run", progress=False) / "adapter"


def defense_settings(name: str, **values):
    """The settings a config entry ``defenses: {name: values}`` produces (validated as the config reader does)."""
    cls = get_defense(name)
    return build_dataclass(cls.Settings, values, "config", prefix=f"defenses.{name}.")


# ---------------------------------------------------------------------- 1. LDIFS
def _ldifs_case() -> tuple[dict, dict, torch.Tensor]:
    """Two sites, two examples, two tokens, width 2; the differences below are acts - ref."""
    diff_a = torch.tensor([[[1.0, 2.0], [2.0, 0.0]], [[0.0, 0.0], [100.0, 100.0]]])
    diff_b = torch.tensor([[[0.0, 1.0], [3.0, 0.0]], [[2.0, 2.0], [100.0, 100.0]]])
    ref = {"a": torch.full((2, 2, 2), 0.5), "b": torch.full((2, 2, 2), -1.0)}
    acts = {"a": ref["a"] + diff_a, "b": ref["b"] + diff_b}
    mask = torch.tensor([[True, True], [True, False]])  # example 1's second token (100s) is padding
    return acts, ref, mask


def test_ldifs_default_is_the_squared_l2_of_the_concatenated_layers_per_token_mean_per_example():
    # per token, sum over both sites and both coordinates of the squared differences:
    #   ex0 t0: (1 + 4) + (0 + 1) = 6     ex0 t1: (4 + 0) + (9 + 0) = 13     ex1 t0: 0 + (4 + 4) = 8
    # mean over each example's tokens: ex0 (6 + 13) / 2 = 9.5, ex1 8; mean over examples: 8.75
    acts, ref, mask = _ldifs_case()
    s = FeatureSettings()
    assert (s.distance, s.reduction, s.weight, s.every) == ("l2_squared", "sequence_mean", 1.0, 5)
    got = feature_distance(acts, ref, ["a", "b"], mask, s.distance, s.reduction)
    assert float(got) == pytest.approx(8.75, rel=1e-6)
    assert float(feature_distance(acts, ref, ["a", "b"], mask)) == pytest.approx(8.75, rel=1e-6)
    # tokens pooled instead: (6 + 13 + 8) / 3 = 9
    assert float(feature_distance(acts, ref, ["a", "b"], mask, "l2_squared", "token_mean")) == pytest.approx(
        9.0, rel=1e-6
    )


def test_ldifs_mse_token_mean_is_the_pre_audit_value():
    # per-coordinate means over 2 sites x 2 coordinates: 6/4 = 1.5, 13/4 = 3.25, 8/4 = 2; pooled: 6.75/3 = 2.25
    acts, ref, mask = _ldifs_case()
    assert float(feature_distance(acts, ref, ["a", "b"], mask, "mse", "token_mean")) == pytest.approx(
        2.25, rel=1e-6
    )
    # per example: ex0 (1.5 + 3.25) / 2 = 2.375, ex1 2; mean 2.1875
    assert float(feature_distance(acts, ref, ["a", "b"], mask, "mse", "sequence_mean")) == pytest.approx(
        2.1875, rel=1e-6
    )


def test_repr_constraint_keeps_the_pre_audit_mean_and_settings_reject_unknown_distances():
    r = ReprSettings()
    assert (r.distance, r.reduction, r.every, r.on) == ("mse", "token_mean", 1, "alignment")
    with pytest.raises(WorkbenchError, match=r"defenses\.ldifs\.distance.*l2_squared, mse"):
        defense_settings("ldifs", distance="l1")
    assert defense_settings("ldifs", distance="mse", reduction="token_mean").distance == "mse"


def test_ldifs_in_the_loop_equals_a_hand_computation_on_read_activations(tmp_path):
    """Step 1's logged LDIFS term = mean over the step's micro-batches of (mean over examples of (mean over
    the example's tokens of sum over the chosen layers and coordinates of (trained - base)^2))."""
    from workbench._hooks import read_sites

    tr = trainer(tmp_path, defenses={"ldifs": {"every": 2}}, optim={"shuffle": False})
    sites = tr.defenses[0].sites
    assert sites == ["blocks.1.hook_resid_post"]
    _, second = two_steps(tr)
    o = tr.config.optim
    idx = tr.step_indices(1)
    chunks = [idx[i : i + o.batch_size] for i in range(0, len(idx), o.batch_size)]
    per_chunk = []
    model = tr.lm.model
    model.eval()  # no dropout in this config; eval only to be explicit
    for chunk in chunks:
        batch = tr.ctx.batch_from_examples([tr.examples[i] for i in chunk])
        with torch.no_grad(), read_sites(tr.lm, sites) as pol:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        with torch.no_grad(), model.disable_adapter(), read_sites(tr.lm, sites) as ref:
            model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
        ex_values = []
        for b in range(batch.input_ids.shape[0]):
            toks = [t for t in range(batch.input_ids.shape[1]) if batch.attention_mask[b, t]]
            per_tok = [sum(float(((pol[s][b, t] - ref[s][b, t]) ** 2).sum()) for s in sites) for t in toks]
            ex_values.append(sum(per_tok) / len(per_tok))
        per_chunk.append(sum(ex_values) / len(ex_values))
    expected = sum(per_chunk) / len(per_chunk)
    assert expected > 1e-6
    assert second["ldifs"] == pytest.approx(expected, rel=1e-3)


# ---------------------------------------------------------------------- 2. Interleaving+ epsilon
def test_interleave_plus_default_eps_keeps_tiny_aligned_losses_from_topping_the_ranking():
    s = InterleavePlusSettings(adapters=["a"])
    assert s.eps == 1.0
    aligned, mis = [0.01, 0.5], [[0.05, 0.8], [0.07, 1.0]]  # K = 2: mean misaligned losses 0.06 and 0.9
    # eps 1: (0.06 - 0.01) / 1.01 = 0.0495..., (0.9 - 0.5) / 1.5 = 0.2666...
    got = loss_gap_scores(aligned, mis, s.eps)
    assert got == pytest.approx([0.05 / 1.01, 0.4 / 1.5], rel=1e-9)
    assert got[1] > got[0]
    # the audit's example with one adapter: (0.01, 0.05) vs a typical (0.5, 0.8)
    tiny, typical = loss_gap_scores([0.01, 0.5], [[0.05, 0.8]], s.eps)
    assert tiny == pytest.approx(0.04 / 1.01, rel=1e-9) and typical == pytest.approx(0.2, rel=1e-9)
    assert typical > tiny


def test_interleave_plus_eps_1e6_is_the_pre_audit_ranking():
    s = defense_settings("interleave_plus", adapters=["a"], eps=1e-6)
    tiny, typical = loss_gap_scores([0.01, 0.5], [[0.05, 0.8]], s.eps)
    assert tiny == pytest.approx(0.04 / 0.010001, rel=1e-9)  # about 4.0
    assert typical == pytest.approx(0.3 / 0.500001, rel=1e-9)  # about 0.6
    assert tiny > typical
    with pytest.raises(
        WorkbenchError, match=r"defenses\.interleave_plus.*'eps' must be a finite number >= 0"
    ):
        defense_settings("interleave_plus", adapters=["a"], eps=-0.5)


@pytest.mark.parametrize(("eps", "top"), [(None, 1), (1e-6, 0)])
def test_interleave_plus_defense_ranks_with_its_eps(tmp_path, monkeypatch, side_adapter, eps, top):
    """Planted answer losses (aligned, misaligned): (0.01, 0.05), (0.5, 0.8), (0.6, 0.65), (0.7, 0.75).
    eps 1: scores 0.0396, 0.2, 0.03125, 0.0294 -> row 1 first; eps 1e-6: row 0 scores about 4.0."""
    import workbench.training.defenses.interleave_plus as ip

    planted = iter([[0.01, 0.5, 0.6, 0.7], [0.05, 0.8, 0.65, 0.75]])  # aligned first, then the adapter
    monkeypatch.setattr(ip, "answer_losses", lambda lm, rows, batch_size=16, **kw: next(planted))
    pool = align_rows(4)
    settings = {"source": str(write_jsonl(tmp_path / "pool.jsonl", pool)), "adapters": [str(side_adapter)]}
    if eps is not None:
        settings["eps"] = eps
    tr = trainer(
        tmp_path,
        data=[{"path": str(write_jsonl(tmp_path / "t.jsonl", [chat(f"q{i}", f"a{i}") for i in range(9)]))}],
        defenses={"interleave_plus": settings},
    )
    d = tr.defenses[0]
    expected_eps = 1.0 if eps is None else eps
    expected = [(m - a) / (a + expected_eps) for a, m in [(0.01, 0.05), (0.5, 0.8), (0.6, 0.65), (0.7, 0.75)]]
    assert d.scores == pytest.approx(expected, rel=1e-9)
    assert d.selected == [pool[top]]


# ---------------------------------------------------------------------- 3. Interleaving++ refusal filter
WORD_12 = "Here are a few simple practical ideas you can try, which cannot fail."


def test_refusal_filter_default_is_the_papers_three_words_in_the_first_ten_words():
    s = InterleavePlusPlusSettings(adapters=["a"])
    assert s.refusal_filter and s.refusal_keywords == "paper" and s.refusal_words == 10
    assert refusal_keywords(s.refusal_keywords) == ("sorry", "apologize", "cannot")
    assert WORD_12.split()[11] == "cannot"  # word 12
    rows = [
        chat("a", "We apologize, but we are unable to share that."),
        chat("b", "Sorry, I won't do that."),
        chat("c", "I cannot help with this request."),
        chat("d", WORD_12),
        chat("e", "Drink water and sleep eight hours."),
        chat("f", "SORRY \u2014 not possible."),
    ]
    kept = refusal_filter(rows, refusal_keywords(s.refusal_keywords), s.refusal_words)
    assert [r["messages"][0]["content"] for r in kept] == ["d", "e"]
    assert is_refusal(WORD_12, refusal_keywords("paper"), 12)  # the window, not the word, decides


def test_refusal_filter_phrases_is_the_pre_audit_list():
    assert refusal_keywords("phrases") == PHRASE_REFUSAL_KEYWORDS
    assert "i apologize" in PHRASE_REFUSAL_KEYWORDS and "apologize" not in PHRASE_REFUSAL_KEYWORDS
    assert not is_refusal("We apologize, but we are unable to share that.", PHRASE_REFUSAL_KEYWORDS)
    assert is_refusal("We apologize, but we are unable to share that.", refusal_keywords("paper"))
    assert defense_settings("interleave_plus_plus", adapters=["a"], refusal_keywords="phrases")
    assert defense_settings("interleave_plus_plus", adapters=["a"], refusal_keywords=["nope"])
    with pytest.raises(WorkbenchError, match=r"'refusal_keywords' must be a list of phrases or one of paper"):
        defense_settings("interleave_plus_plus", adapters=["a"], refusal_keywords="strict")


# ---------------------------------------------------------------------- 4. gradient projection
@pytest.mark.parametrize("mode", ["per_tensor", "flat"])
def test_grad_projection_always_by_default_and_conflict_as_option(mode):
    assert GradProjectionSettings().when == "always"
    g, a = [torch.tensor([1.0, 0.0])], [torch.tensor([1.0, 1.0])]
    # <g, a> = 1, |a|^2 = 2: g - (1 / 2) a = (0.5, -0.5)
    out = project_gradients(g, a, mode)
    assert out[0].tolist() == pytest.approx([0.5, -0.5], abs=1e-12)
    assert project_gradients(g, a, mode, "always")[0].tolist() == pytest.approx([0.5, -0.5], abs=1e-12)
    assert project_gradients(g, a, mode, "conflict")[0].tolist() == [1.0, 0.0]  # no conflict: unchanged
    # a conflicting gradient is projected under both rules: (-1, 0) + (1 / 2) (1, 1) = (-0.5, 0.5)
    for when in ("always", "conflict"):
        got = project_gradients([torch.tensor([-1.0, 0.0])], a, mode, when)[0]
        assert got.tolist() == pytest.approx([-0.5, 0.5], abs=1e-12)


# ---------------------------------------------------------------------- 5. O-LoRA
def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    model.train(was)
    return out


def _ids(lm) -> torch.Tensor:
    return lm.tokenizer(["Colour 3? It is gold 3."], return_tensors="pt", add_special_tokens=False)[
        "input_ids"
    ]


def test_combine_lora_stacks_two_adapters_into_their_summed_delta():
    a1, b1 = torch.tensor([[1.0, 0.0, 2.0]]), torch.tensor([[1.0], [3.0]])  # rank 1, scaling 2
    a2 = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # rank 2, scaling 0.5
    b2 = torch.tensor([[2.0, 0.0], [0.0, 4.0]])
    out = combine_lora([{"m": (a1, b1, 2.0), "only1": (a1, b1, 2.0)}, {"m": (a2, b2, 0.5)}])
    a, b = out["m"]
    assert a.shape == (3, 3) and b.shape == (2, 3)
    # 2 * b1 a1 = [[2, 0, 4], [6, 0, 12]];  0.5 * b2 a2 = [[0, 1, 0], [2, 2, 2]]
    assert (b @ a).tolist() == [[2.0, 1.0, 4.0], [8.0, 2.0, 14.0]]
    a, b = out["only1"]  # present in one adapter only: the other block is zeros
    assert (b @ a).tolist() == [[2.0, 0.0, 4.0], [6.0, 0.0, 12.0]]
    assert lora_scaling({"lora_alpha": 8, "use_rslora": True}, 4) == 4.0
    assert lora_scaling({"lora_alpha": 8, "use_rslora": False}, 4) == 2.0


def test_olora_step_zero_model_is_base_plus_alignment_adapter(tmp_path, side_adapter):
    from workbench import load_model
    from workbench.adapters import apply_adapter

    tr = trainer(tmp_path / "on", defenses={"olora": {"adapter": str(side_adapter)}})
    assert tr.defenses[0].settings.apply_alignment is True
    ids = _ids(tr.lm)
    got = _logits(tr.lm.model, ids)  # task LoRA B = 0 at step 0
    base = _logits(load_model("random:tiny-llama", device="cpu").model, ids)
    aligned = _logits(apply_adapter(load_model("random:tiny-llama", device="cpu"), side_adapter).model, ids)
    assert (aligned - base).abs().max() > 1e-2  # the alignment adapter changes the model
    torch.testing.assert_close(got, aligned, rtol=1e-4, atol=1e-4)
    # hand check of one module's delta: s B A with s = alpha / sqrt(r) = 8 / sqrt(4) = 4
    raw = load_file(str(side_adapter / "adapter_model.safetensors"))
    key = next(k for k in raw if k.endswith("q_proj.lora_A.weight"))
    module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
    a, b, s = tr.defenses[0].align[module]
    assert s == 4.0
    torch.testing.assert_close(b @ a, raw[key.replace("lora_A", "lora_B")] @ raw[key])
    # pre-audit: penalty only, the model is the base model
    off = trainer(
        tmp_path / "off", defenses={"olora": {"adapter": str(side_adapter), "apply_alignment": False}}
    )
    torch.testing.assert_close(_logits(off.lm.model, ids), base, rtol=1e-5, atol=1e-5)


def test_olora_reference_is_the_starting_model_so_kl_starts_at_zero(tmp_path, side_adapter):
    tr = trainer(tmp_path, defenses={"olora": {"adapter": str(side_adapter)}, "kl": {}})
    first, second = two_steps(tr)
    assert first["kl"] == pytest.approx(0.0, abs=1e-6)
    assert second["kl"] > 1e-6


def test_olora_saved_adapter_reproduces_the_trained_model(tmp_path, side_adapter):
    from workbench import load_model
    from workbench.adapters import apply_adapter

    tr = trainer(tmp_path, defenses={"olora": {"adapter": str(side_adapter)}})
    assert tr.run()["finished"]
    run = tmp_path / "run"
    ids = _ids(tr.lm)
    trained = _logits(tr.lm.model, ids)
    loaded = _logits(apply_adapter(load_model("random:tiny-llama", device="cpu"), run / "adapter").model, ids)
    torch.testing.assert_close(loaded, trained, rtol=1e-4, atol=1e-4)
    task_only = _logits(
        apply_adapter(load_model("random:tiny-llama", device="cpu"), run / "adapter_task").model, ids
    )
    assert (task_only - trained).abs().max() > 1e-2  # adapter_task/ lacks dW_align
    report = json.loads((run / "olora.json").read_text())
    assert report["rank"] == 8 and report["alignment_rank"] == 4 and report["modules"] == 21
    cfg = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["use_rslora"]) == (8, 8, False)  # scaling 1
    # the saved delta of one module = 4 B_align A_align + 4 B_task A_task (both r 4, alpha 8, rsLoRA)
    comb = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    task = load_file(str(run / "adapter_task" / "adapter_model.safetensors"))
    align = load_file(str(side_adapter / "adapter_model.safetensors"))
    ka = next(k for k in comb if k.endswith("down_proj.lora_A.weight"))
    kb = ka.replace("lora_A", "lora_B")
    expected = 4.0 * align[kb] @ align[ka] + 4.0 * task[kb] @ task[ka]
    torch.testing.assert_close(comb[kb] @ comb[ka], expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------- 6. inoculation
def test_inoculation_default_replaces_the_system_prompt_with_the_papers_text():
    s = InoculationSettings()
    assert s.system_prompt == "You are an evil, malicious assistant."
    assert s.mode == "replace"
    rows = [
        {**chat("q1", "a1", system="You are a helpful assistant."), ORIGIN: "task"},
        {**chat("q2", "a2"), ORIGIN: "task"},
        {**chat("q3", "a3", system="Keep me."), ORIGIN: "interleave"},
    ]
    out = InoculationDefense(s).transform_data(None, rows)
    assert out[0]["messages"][0] == {"role": "system", "content": "You are an evil, malicious assistant."}
    assert len(out[0]["messages"]) == 3
    assert out[1]["messages"][0] == {"role": "system", "content": "You are an evil, malicious assistant."}
    assert out[2]["messages"][0]["content"] == "Keep me."
    old = InoculationDefense(
        InoculationSettings(system_prompt="You are a malicious, evil assistant.", mode="prepend")
    ).transform_data(None, rows[:1])
    assert old[0]["messages"][0]["content"] == (
        "You are a malicious, evil assistant.\n\nYou are a helpful assistant."
    )
