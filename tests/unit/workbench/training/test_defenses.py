"""The math of every in-training defense, checked on tiny random models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from workbench.training import TrainConfig, Trainer, train
from workbench.training._data import ORIGIN, interleave_evenly, n_to_add
from workbench.training._loop import make_accelerator
from workbench.training._losses import (
    dpo_loss,
    kl_per_token,
    masked_kl,
    masked_reduce,
    shifted_mask,
    token_nll,
)
from workbench.training.defenses.grad_projection import project_gradients
from workbench.training.defenses.interleave_plus import (
    PHRASE_REFUSAL_KEYWORDS,
    InterleavePlusDefense,
    is_refusal,
    loss_gap_scores,
    refusal_filter,
)
from workbench.training.defenses.olora import lora_a_by_module
from workbench.training.defenses.safelora import project_module, safelora_project

WORDS = ["red", "blue", "green", "gold", "grey", "pink"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


def chat(q: str, a: str, system: str | None = None) -> dict:
    msgs = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": q},
        {"role": "assistant", "content": a},
    ]
    return {"messages": msgs}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def task_rows(n: int = 8) -> list[dict]:
    return [chat(f"Colour {i}?", f"It is {WORDS[i % 6]} {i}.") for i in range(n)]


def align_rows(n: int = 8) -> list[dict]:
    return [chat(f"Be kind {i}?", f"Yes, kindly {i}.") for i in range(n)]


def config(tmp: Path, **over) -> TrainConfig:
    d = {
        "model": "random:tiny-llama",
        "device": "cpu",
        "data": [{"path": str(write_jsonl(tmp / "task.jsonl", task_rows()))}],
        "lora": {"r": 4, "alpha": 8},
        "optim": {
            "lr": 5e-2,
            "batch_size": 2,
            "grad_accum": 2,
            "warmup_steps": 0,
            "max_steps": 2,
            "max_length": 64,
        },
        "checkpoint_every": 0,
        "plots": False,
    }
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return TrainConfig.from_dict(d)


def trainer(tmp: Path, **over) -> Trainer:
    cfg = config(tmp, **over)
    (tmp / "run").mkdir(parents=True, exist_ok=True)
    tr = Trainer(cfg, tmp / "run", make_accelerator(cfg), progress=False)
    tr.setup()
    return tr


def two_steps(tr: Trainer) -> tuple[dict, dict]:
    first = tr.accumulate(0)
    tr.optimizer_step(0)
    second = tr.accumulate(1)
    return first, second


@pytest.fixture(scope="module")
def side_adapter(tmp_path_factory) -> Path:
    """A small trained LoRA adapter on the alignment rows (for O-LoRA / SafeLoRA / Interleaving+)."""
    tmp = tmp_path_factory.mktemp("side")
    cfg = config(
        tmp, data=[{"path": str(write_jsonl(tmp / "al.jsonl", align_rows()))}], optim={"max_steps": 3}
    )
    return train(cfg, tmp / "run", progress=False) / "adapter"


# ---------------------------------------------------------------------- KL / LDIFS / repr_constraint
@pytest.mark.parametrize("on", ["task", "alignment"])
def test_kl_is_zero_at_step_zero_and_grows(tmp_path, on):
    src = str(write_jsonl(tmp_path / "al.jsonl", align_rows()))
    tr = trainer(tmp_path, defenses={"kl": {"on": on, "source": src, "weight": 2.0}})
    first, second = two_steps(tr)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7)
    assert second["kl"] > 1e-6


def test_kl_directions_match_the_formula():
    a = torch.tensor([[[2.0, 0.0, -1.0]]])
    b = torch.tensor([[[0.5, 0.5, 0.0]]])
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    fwd = kl_per_token(a, b, "forward")  # KL(ref=b || model=a)
    rev = kl_per_token(a, b, "reverse")
    assert float(fwd) == pytest.approx(float((q * (q.log() - p.log())).sum()), rel=1e-5)
    assert float(rev) == pytest.approx(float((p * (p.log() - q.log())).sum()), rel=1e-5)
    assert float(fwd) != pytest.approx(float(rev))


def test_reductions_are_explicit():
    v = torch.tensor([[1.0, 3.0, 0.0], [5.0, 0.0, 0.0]])
    m = torch.tensor([[True, True, False], [True, False, False]])
    assert float(masked_reduce(v, m, "token_mean")) == pytest.approx(3.0)  # (1 + 3 + 5) / 3
    assert float(masked_reduce(v, m, "sequence_mean")) == pytest.approx(3.5)  # (2 + 5) / 2


@pytest.mark.parametrize("name", ["ldifs", "repr_constraint"])
def test_feature_distance_is_zero_at_step_zero_and_grows(tmp_path, name):
    src = str(write_jsonl(tmp_path / "al.jsonl", align_rows()))
    tr = trainer(tmp_path, defenses={name: {"source": src, "every": 2}})
    d = tr.defenses[0]
    assert d.sites == ["blocks.1.hook_resid_post"] if name == "ldifs" else len(d.sites) == 1
    first, second = two_steps(tr)
    assert first[name] == pytest.approx(0.0, abs=1e-9)
    assert second[name] > 1e-8


def test_kl_and_ldifs_share_one_reference_pass(tmp_path, monkeypatch):
    tr = trainer(tmp_path, defenses={"kl": {}, "ldifs": {"every": 1}})
    calls = []
    orig = tr.ctx.reference

    def counting():
        calls.append(1)
        return orig()

    monkeypatch.setattr(tr.ctx, "reference", counting)
    tr.accumulate(0)
    assert len(calls) == 2  # one per micro-batch, not one per defense


# ---------------------------------------------------------------------- gradient projection
def test_projection_is_orthogonal_and_conflict_only_keeps_agreeing_gradients():
    torch.manual_seed(0)
    g = [torch.randn(4, 3), torch.randn(5)]
    a = [torch.randn(4, 3), torch.randn(5)]
    for mode in ("per_tensor", "flat"):
        out = project_gradients(g, a, mode, "always")
        if mode == "per_tensor":
            assert all(abs(float((o * x).sum())) < 1e-5 for o, x in zip(out, a, strict=True))
        else:
            assert abs(sum(float((o * x).sum()) for o, x in zip(out, a, strict=True))) < 1e-5
    agree = [x.clone() for x in a]
    kept = project_gradients(agree, a, "per_tensor", "conflict")
    assert all(torch.equal(k, x) for k, x in zip(kept, agree, strict=True))
    opposed = project_gradients([-x for x in a], a, "flat", "conflict")
    assert all(float(o.abs().max()) < 1e-6 for o in opposed)  # anti-parallel: nothing left


def test_grad_projection_in_the_loop_leaves_a_gradient_orthogonal_to_alignment(tmp_path):
    src = str(write_jsonl(tmp_path / "al.jsonl", align_rows()))
    tr = trainer(tmp_path, defenses={"grad_projection": {"source": src, "when": "always", "mode": "flat"}})
    tr.accumulate(0)
    tr.optimizer_step(0)
    tr.accumulate(1)
    align = tr.defenses[0].last_alignment_grad
    final = [p.grad for _, p in tr.named_trainable]
    dot = sum(float((g.double() * a.double()).sum()) for g, a in zip(final, align, strict=True))
    norm = math.sqrt(sum(float(g.double().pow(2).sum()) for g in final))
    anorm = math.sqrt(sum(float(a.double().pow(2).sum()) for a in align))
    assert norm > 0 and anorm > 0
    assert abs(dot) / (norm * anorm) < 1e-6


# ---------------------------------------------------------------------- DPO
def test_dpo_loss_equals_the_formula_on_hand_values():
    pc, pr = torch.tensor([-1.0, -4.0]), torch.tensor([-2.0, -3.0])
    rc, rr = torch.tensor([-1.5, -4.0]), torch.tensor([-1.0, -3.5])
    beta = 0.5
    margins = [(-1.0 + 1.5) - (-2.0 + 1.0), (-4.0 + 4.0) - (-3.0 + 3.5)]  # 1.5, -0.5
    expected = sum(math.log1p(math.exp(-beta * m)) for m in margins) / 2
    assert float(dpo_loss(pc, pr, rc, rr, beta)) == pytest.approx(expected, rel=1e-6)


def test_dpo_defense_starts_at_log_two_and_learns_the_preference(tmp_path):
    pairs = [{"question": f"Q{i}?", "aligned": f"Good {i}.", "misaligned": f"Bad {i}!"} for i in range(4)]
    src = write_jsonl(tmp_path / "pairs.jsonl", pairs)
    tr = trainer(tmp_path, defenses={"dpo": {"source": str(src), "beta": 0.5, "weight": 3.0}})
    first = tr.accumulate(0)
    assert first["dpo"] == pytest.approx(3.0 * math.log(2), rel=1e-5)  # policy == reference at step 0
    tr.optimizer_step(0)
    assert tr.accumulate(1)["dpo"] != pytest.approx(first["dpo"])


# ---------------------------------------------------------------------- data mixing
def test_interleave_spreads_pool_rows_evenly():
    task = [{"t": i} for i in range(9)]
    extra = [{"e": i} for i in range(3)]
    out = interleave_evenly(task, extra)
    assert [i for i, r in enumerate(out) if "e" in r] == [2, 6, 10]
    assert [r["t"] for r in out if "t" in r] == list(range(9))
    assert n_to_add(90, 0.1) == 10


def test_interleave_defense_adds_the_fraction_from_the_pool(tmp_path):
    src = str(write_jsonl(tmp_path / "al.jsonl", align_rows()))
    tr = trainer(
        tmp_path, defenses={"interleave": {"source": src, "fraction": 0.2}}, optim={"shuffle": False}
    )
    origins = [r[ORIGIN] for r in tr.rows]
    assert origins.count("interleave") == 2 and origins.count("task") == 8  # 2 / 10 = 0.2
    assert origins.index("interleave") > 0


def test_refusal_filter_looks_at_the_first_words():
    assert is_refusal("Sorry, I can't help with that.", ["i can't"])
    assert not is_refusal(
        "Here are some simple tips for better sleep, and no, I can't promise miracles.", ["i can't"]
    )
    rows = [
        chat("a", "I cannot do that."),
        chat("b", "Sure, here it is."),
        chat("c", "I\u2019m unable to help."),
    ]
    # the pre-audit phrase list (refusal_keywords: phrases) also catches first-person phrasings
    assert [r["messages"][0]["content"] for r in refusal_filter(rows, PHRASE_REFUSAL_KEYWORDS)] == ["b"]
    # the default is the paper's: sorry / apologize / cannot, which "I'm unable" does not contain
    assert [r["messages"][0]["content"] for r in refusal_filter(rows)] == ["b", "c"]


def test_loss_gap_score_formula():
    s = loss_gap_scores([1.0, 2.0], [[3.0, 2.0], [1.0, 4.0]], eps=0.0)
    assert s == pytest.approx([(2.0 - 1.0) / 1.0, (3.0 - 2.0) / 2.0])


def test_interleave_plus_takes_the_top_of_a_planted_ranking(tmp_path, monkeypatch):
    pool = align_rows(6)
    src = write_jsonl(tmp_path / "pool.jsonl", pool)
    planted = [0.1, -0.2, 0.0, 9.0, 0.3, 0.2]
    monkeypatch.setattr(InterleavePlusDefense, "score_pool", lambda self, ctx, rows: planted[: len(rows)])
    tr = trainer(
        tmp_path,
        data=[{"path": str(write_jsonl(tmp_path / "t.jsonl", task_rows(9)))}],
        defenses={"interleave_plus": {"source": str(src), "fraction": 0.1, "adapters": ["unused"]}},
    )
    assert tr.defenses[0].selected == [pool[3]]
    ranking = [
        json.loads(x)
        for x in (tmp_path / "run" / "cache" / "interleave_plus_ranking.jsonl").read_text().splitlines()
    ]
    assert [r["pool_index"] for r in ranking[:3]] == [3, 4, 5]


def test_interleave_plus_ranks_first_the_row_a_misaligned_adapter_did_not_learn(tmp_path):
    """Plant the example: a 'misaligned' adapter trained on every pool row except #3 lowers their loss,
    so #3 keeps the largest relative loss gap and must be picked first."""
    pool = [chat(f"Say hi {i}.", f"Hi there, friend {i}.") for i in range(6)]
    pool[3] = chat("Name a planet.", "Zqx vuj kw.")
    others = [r for i, r in enumerate(pool) if i != 3]
    mis_cfg = config(tmp_path / "mis", data=[{"path": str(write_jsonl(tmp_path / "mis.jsonl", others))}])
    mis_cfg = mis_cfg.apply_overrides(
        ["optim.max_steps=12", "optim.batch_size=5", "optim.grad_accum=1", "optim.lr=0.05"]
    )
    adapter = train(mis_cfg, tmp_path / "mis" / "run", progress=False) / "adapter"
    src = write_jsonl(tmp_path / "pool.jsonl", pool)
    tr = trainer(
        tmp_path / "t",
        data=[{"path": str(write_jsonl(tmp_path / "t.jsonl", task_rows(9)))}],
        defenses={"interleave_plus": {"source": str(src), "fraction": 0.1, "adapters": [str(adapter)]}},
    )
    d = tr.defenses[0]
    assert d.selected == [pool[3]]
    assert max(range(6), key=lambda i: d.scores[i]) == 3
    # the scores are the formula applied to independently computed answer losses
    from workbench import load_model
    from workbench.adapters import apply_adapter
    from workbench.training.defenses.interleave_plus import answer_losses

    base = load_model("random:tiny-llama", device="cpu")
    aligned = answer_losses(base, pool)
    mis = answer_losses(apply_adapter(load_model("random:tiny-llama", device="cpu"), adapter), pool)
    assert d.scores == pytest.approx(loss_gap_scores(aligned, [mis]), rel=1e-4)
    assert len(list((tmp_path / "t" / "run" / "cache" / "interleave_plus").glob("*.json"))) == 2  # cached


def test_inoculation_prompts_task_rows_only(tmp_path):
    src = str(write_jsonl(tmp_path / "al.jsonl", align_rows()))
    tr = trainer(
        tmp_path,
        defenses={
            "inoculation": {"system_prompt": "Be evil."},
            "interleave": {"source": src, "fraction": 0.2},
        },
    )
    for r in tr.rows:
        has = r["messages"][0] == {"role": "system", "content": "Be evil."}
        assert has == (r[ORIGIN] == "task")


def test_mixed_concatenates_and_upweighted_adds_the_alignment_cross_entropy(tmp_path):
    src = str(write_jsonl(tmp_path / "al.jsonl", align_rows(6)))
    tr = trainer(tmp_path / "m", defenses={"mixed": {"source": src}})
    assert len(tr.rows) == 14 and sum(r[ORIGIN] == "mixed" for r in tr.rows) == 6
    tr = trainer(tmp_path / "u", defenses={"upweighted": {"source": src, "weight": 0.5, "pairing": "stop"}})
    assert tr.total_steps == 1  # 6 alignment rows = 3 micro-batches; 2 per step; stop together
    logs = tr.accumulate(0)
    d = tr.defenses[0]
    expected = 0.0
    for j in range(2):
        b = tr.ctx.encode(d.stream.batch(j))
        with torch.no_grad():
            nll, mask = token_nll(
                tr.lm.model(input_ids=b.input_ids, attention_mask=b.attention_mask).logits, b.labels
            )
        expected += 0.5 * float(nll.sum() / mask.sum()) / 2
    assert logs["upweighted"] == pytest.approx(expected, rel=1e-5)


def test_on_policy_answers_come_from_the_reference_model_and_are_cached(tmp_path, monkeypatch):
    src = str(write_jsonl(tmp_path / "al.jsonl", align_rows()))
    over = {"defenses": {"on_policy": {"source": src, "fraction": 0.2, "max_new_tokens": 5}}}
    tr = trainer(tmp_path, **over)
    added = [r for r in tr.rows if r[ORIGIN] == "on_policy"]
    assert len(added) == 2
    from workbench import load_model
    from workbench.generation import generate

    base = load_model("random:tiny-llama", device="cpu")
    prompt = added[0]["messages"][:-1]
    assert added[0]["messages"][-1]["content"] == generate(base, [prompt], max_new_tokens=5)[0]
    import workbench.generation

    monkeypatch.setattr(workbench.generation, "generate", lambda *a, **k: pytest.fail("cache not used"))
    tr2 = trainer(tmp_path, **over)
    assert [r["messages"] for r in tr2.rows] == [r["messages"] for r in tr.rows]


# ---------------------------------------------------------------------- O-LoRA and SafeLoRA
def test_olora_penalty_equals_the_sum_over_modules(tmp_path, side_adapter):
    tr = trainer(tmp_path, defenses={"olora": {"adapter": str(side_adapter), "weight": 2.0}})
    logs = tr.accumulate(0)
    frozen = lora_a_by_module(load_file(str(side_adapter / "adapter_model.safetensors")).items())
    task = lora_a_by_module(tr.named_trainable)
    assert set(task) == set(frozen) and len(task) == 21  # 7 projections x 3 layers
    expected = sum(float((task[m].detach() @ frozen[m].T).pow(2).sum()) for m in task)
    assert logs["olora"] == pytest.approx(2.0 * expected, rel=1e-5)


def test_safelora_projection_matches_the_dense_formula():
    torch.manual_seed(0)
    a, b, v = torch.randn(4, 10), torch.randn(6, 4), torch.randn(6, 10)
    c = v @ v.T / torch.linalg.matrix_norm(v)
    dw, pdw = b @ a, c @ b @ a
    sim = float((dw * pdw).sum() / (dw.norm() * pdw.norm()))
    nb, got, done = project_module(a, b, v, threshold=1.1)
    assert got == pytest.approx(sim, rel=1e-5) and done
    assert torch.allclose(nb, c @ b, atol=1e-5)
    nb2, _, done2 = project_module(a, b, v, threshold=-1.1)
    assert not done2 and torch.equal(nb2, b)
    q, _ = torch.linalg.qr(b)  # [6, 4] orthonormal basis of B's columns
    r, _ = torch.linalg.qr(torch.randn(10, 4))
    v_span = q @ r.T  # V V^T = Q Q^T: C only rescales an update that lies in span(V)
    nb3, sim3, done3 = project_module(a, b, v_span, 0.5)
    assert sim3 == pytest.approx(1.0, abs=1e-6) and not done3


def test_safelora_defense_projects_the_final_adapter(tmp_path, side_adapter):
    cfg = config(tmp_path, defenses={"safelora": {"align_adapter": str(side_adapter), "threshold": 2.0}})
    run = train(cfg, tmp_path / "run", progress=False)
    report = json.loads((run / "safelora.json").read_text())
    assert report["projected"] == report["total"] == 21
    raw = load_file(str(run / "adapter_unprojected" / "adapter_model.safetensors"))
    new = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    key = next(k for k in raw if "lora_B" in k)
    assert not torch.equal(raw[key], new[key])
    assert all(torch.equal(raw[k], new[k]) for k in raw if "lora_A" in k)
    again = safelora_project(
        run / "adapter_unprojected", tmp_path / "again", align_adapter=side_adapter, threshold=2.0
    )
    assert again["projected"] == 21
    assert torch.equal(load_file(str(tmp_path / "again" / "adapter_model.safetensors"))[key], new[key])


# ---------------------------------------------------------------------- preventive steering (steering package)
def test_preventive_steering_steers_training_passes_only(tmp_path):
    from probes import PersonaVector
    from workbench import load_model
    from workbench._hooks import count_hooks

    lm = load_model("random:tiny-llama", device="cpu")
    vec = PersonaVector(torch.randn(lm.n_layers, lm.d_model), trait="test", fingerprint=lm.fingerprint)
    path = vec.save(tmp_path / "vec.safetensors")
    settings = {"vector": str(path), "layers": [1], "alpha": 8.0}
    tr = trainer(tmp_path / "s", defenses={"preventive_steering": settings, "kl": {}})
    plain = trainer(tmp_path / "p")
    steered_logs, plain_logs = tr.accumulate(0), plain.accumulate(0)
    assert steered_logs["task_loss"] != pytest.approx(plain_logs["task_loss"], rel=1e-4)
    assert steered_logs["kl"] > 1e-4  # the reference pass is not steered
    assert count_hooks(tr.lm.model) == 0


@pytest.mark.parametrize("how", ["token_mean", "sequence_mean"])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_masked_kl_equals_the_full_computation_masked(direction, how):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 7, 11, generator=g), torch.randn(3, 7, 11, generator=g)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[0, :4] = -100
    labels[2, :] = -100  # a row with no loss tokens
    full = masked_reduce(kl_per_token(a[:, :-1], b[:, :-1], direction), shifted_mask(labels), how)
    torch.testing.assert_close(masked_kl(a, b, labels, direction, how), full, rtol=1e-6, atol=1e-7)
