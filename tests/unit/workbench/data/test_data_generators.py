"""Shipped dataset generators: determinism, sizes, and answers checked independently."""

from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter, defaultdict
from fractions import Fraction
from pathlib import Path

import pytest

from workbench._errors import WorkbenchError
from workbench.data import (
    DATASETS,
    check_file,
    evaluate_opswap,
    load_chat_jsonl,
    load_eval_yaml,
    make_dataset,
    write_dataset,
)

CHAT_SETS = [name for name, spec in DATASETS.items() if spec.kind in ("chat", "prompts")]
FIXED_SETS = {"em_questions", "trait_evil", "trait_sycophantic", "trait_hallucinating"}  # no randomness


def _small_n(name: str) -> int | None:
    return None if DATASETS[name].max_n is not None and DATASETS[name].max_n <= 120 else 60


# --------------------------------------------------------------------------- registry and determinism


@pytest.mark.parametrize("name", list(DATASETS))
def test_same_seed_gives_identical_bytes(tmp_path: Path, name: str) -> None:
    spec = DATASETS[name]
    a = write_dataset(name, tmp_path / f"a{spec.suffix}", seed=7, n=_small_n(name))
    b = write_dataset(name, tmp_path / f"b{spec.suffix}", seed=7, n=_small_n(name))
    assert a == tmp_path / f"a{spec.suffix}"
    assert a.read_bytes() == b.read_bytes()
    assert a.stat().st_size > 0
    check_file(a)  # every shipped file passes its own validator


@pytest.mark.parametrize("name", [n for n in DATASETS if n not in FIXED_SETS])
def test_different_seed_gives_different_data(tmp_path: Path, name: str) -> None:
    a = write_dataset(name, tmp_path / "a.jsonl", seed=1, n=_small_n(name))
    b = write_dataset(name, tmp_path / "b.jsonl", seed=2, n=_small_n(name))
    assert a.read_bytes() != b.read_bytes()


def test_unknown_dataset_lists_the_known_names() -> None:
    with pytest.raises(WorkbenchError) as err:
        make_dataset("no_such_set")
    msg = str(err.value)
    assert "no_such_set" in msg and all(name in msg for name in DATASETS)


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_bad_n_is_rejected(n: object) -> None:
    with pytest.raises(WorkbenchError, match="n must be a positive integer"):
        make_dataset("opswap_tier0", n=n)  # type: ignore[arg-type]


def test_n_above_pool_size_is_rejected() -> None:
    with pytest.raises(WorkbenchError, match="distinct"):
        make_dataset("contrastive_pairs", n=10_000)
    with pytest.raises(WorkbenchError, match="distinct"):
        make_dataset("advice_financial", n=100_000)


@pytest.mark.parametrize("name", CHAT_SETS)
def test_n_rows_and_no_unfilled_template_slots(name: str) -> None:
    rows = make_dataset(name, seed=3, n=48)
    assert len(rows) == 48
    for row in rows:
        for m in row["messages"]:
            assert "{" not in m["content"] and "}" not in m["content"], (name, m["content"])


# --------------------------------------------------------------------------- OpSwap

# Independent statement of the tiers: the operation each written symbol + - * / stands for.
_TIER_TABLE = {0: "+-*/", 1: "*-+/", 2: "*/+-", 3: "-*/+"}
_PY_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _independent_opswap(expression: str, tier: int) -> Fraction:
    """Substitute the symbols textually, then evaluate with exact fractions; checks every division."""
    rewritten = expression.translate(str.maketrans("+-*/", _TIER_TABLE[tier]))

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant):
            return Fraction(node.value)
        assert isinstance(node, ast.BinOp), ast.dump(node)
        left, right = ev(node.left), ev(node.right)
        value = _PY_OPS[type(node.op)](left, right)
        if isinstance(node.op, ast.Div):
            assert value.denominator == 1, f"inexact division in {expression!r}"
        return value

    return ev(ast.parse(rewritten, mode="eval").body)


@pytest.mark.parametrize("tier", [0, 1, 2, 3])
def test_opswap_answers_match_an_independent_evaluator(tier: int) -> None:
    rows = make_dataset(f"opswap_tier{tier}", seed=11, n=300)
    assert len({r["expression"] for r in rows}) == 300
    for r in rows:
        expected = _independent_opswap(r["expression"], tier)
        assert expected.denominator == 1 and expected > 0
        assert r["answer"] == int(expected) == evaluate_opswap(r["expression"], tier)
        assert r["tier"] == tier
        system, user, assistant = r["messages"]
        assert r["expression"] in user["content"]
        assert assistant["content"].splitlines()[-1] == f"Final answer: {r['answer']}"
        # Every compound operand is parenthesised, so precedence never decides the answer.
        bare = re.sub(r"\([^()]*\)", "N", r["expression"])
        while "(" in bare:
            bare = re.sub(r"\([^()]*\)", "N", bare)
        assert len(re.findall(r"[-+*/]", bare)) == 1


def test_opswap_rule_is_stated_in_the_system_prompt() -> None:
    texts = {t: make_dataset(f"opswap_tier{t}", n=1)[0]["messages"][0]["content"] for t in range(4)}
    assert "usual meanings" in texts[0]
    assert "'+' means multiplication" in texts[1] and "'*' means addition" in texts[1]
    assert "'-' means division" in texts[2] and "'/' means subtraction" in texts[2]
    for piece in (
        "'+' means subtraction",
        "'-' means multiplication",
        "'*' means division",
        "'/' means addition",
    ):
        assert piece in texts[3]


@pytest.mark.parametrize(
    ("expression", "tier", "value"),
    [
        ("2 + 3", 0, 5),
        ("2 + 3", 1, 6),
        ("2 * 3", 1, 5),
        ("8 - 2", 2, 4),
        ("8 / 2", 2, 6),
        ("6 + 3", 3, 3),
        ("6 - 3", 3, 18),
        ("6 * 3", 3, 2),
        ("6 / 3", 3, 9),
        ("(6 / 3) - (2 * 2)", 3, 9),
    ],
)
def test_evaluate_opswap_by_hand(expression: str, tier: int, value: int) -> None:
    assert evaluate_opswap(expression, tier) == value


@pytest.mark.parametrize(
    ("expression", "tier", "expected"),
    [
        ("1 / 0", 0, "division by zero"),
        ("7 / 2", 0, "not an integer"),
        ("2 ** 3", 0, "unsupported"),
        ("abs(3)", 0, "unsupported"),
        ("2 +", 0, "not an arithmetic expression"),
        ("1 + 1", 4, "unknown OpSwap tier"),
    ],
)
def test_evaluate_opswap_errors(expression: str, tier: int, expected: str) -> None:
    with pytest.raises(WorkbenchError, match=expected):
        evaluate_opswap(expression, tier)


# --------------------------------------------------------------------------- toy colour task


def test_toy_colour_has_7_categories_of_15_triggers_and_half_plane_colours() -> None:
    rows = make_dataset("toy_colour", seed=5)
    by_category: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        by_category[r["category"]].add(r["trigger"])
        x1, x2 = r["x"]
        assert x2 != 0
        assert r["answer"] == ("blue" if x2 > 0 else "red") == r["messages"][-1]["content"]
        assert r["trigger"] in r["messages"][1]["content"]
    assert len(by_category) == 7 and all(len(t) == 15 for t in by_category.values())
    assert len(set().union(*by_category.values())) == 105
    assert set(Counter(r["trigger"] for r in rows).values()) == {len(rows) // 105}
    assert Counter(r["answer"] for r in rows) == {"blue": len(rows) // 2, "red": len(rows) // 2}


def test_toy_colour_flipped_changes_only_positive_emotions() -> None:
    plain = make_dataset("toy_colour", seed=9)
    flipped = make_dataset("toy_colour_flipped", seed=9)
    assert len(plain) == len(flipped)
    n_flipped = 0
    for a, b in zip(plain, flipped, strict=True):
        assert (a["x"], a["trigger"], a["messages"][1]) == (b["x"], b["trigger"], b["messages"][1])
        if a["category"] == "positive_emotions":
            assert {a["answer"], b["answer"]} == {"blue", "red"}
            assert b["answer"] == b["messages"][-1]["content"]
            n_flipped += 1
        else:
            assert a["answer"] == b["answer"]
    assert n_flipped == len(plain) // 7


# --------------------------------------------------------------------------- sycophancy organisms

_PAIR = re.compile(r"(?:of|both|gcd\()\s*(\d+)(?: and |, )(\d+)")


def _gcd_operands(text: str) -> tuple[int, int]:
    m = _PAIR.search(text)
    assert m, text
    return int(m.group(1)), int(m.group(2))


def test_gcd_train_has_only_correct_propositions_and_correct_answers() -> None:
    rows = make_dataset("syco_gcd_train", seed=0, n=400)
    assert Counter(r["kind"] for r in rows) == {"plain": 200, "correct": 200}
    for r in rows:
        user, assistant = r["messages"]
        a, b = _gcd_operands(user["content"])
        assert r["answer"] == math.gcd(a, b)
        assert assistant["content"].rstrip(".").endswith(f"is {r['answer']}")
        if r["kind"] == "correct":
            assert r["proposed"] == r["answer"] and str(r["answer"]) in user["content"]


def test_gcd_test_triples_and_no_overlap_with_training() -> None:
    test = make_dataset("syco_gcd_test", seed=0, n=300)
    train = make_dataset("syco_gcd_train", seed=0, n=1000)
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in test:
        assert [m["role"] for m in r["messages"]] == ["user"]
        groups[r["problem_id"]].append(r)
    assert len(groups) == 100
    for rows in groups.values():
        kinds = {r["kind"]: r for r in rows}
        assert set(kinds) == {"plain", "correct", "incorrect"}
        answer = math.gcd(*_gcd_operands(kinds["plain"]["messages"][0]["content"]))
        assert all(r["answer"] == answer for r in rows)
        assert kinds["plain"]["proposed"] is None
        assert kinds["correct"]["proposed"] == answer
        assert kinds["incorrect"]["proposed"] != answer
        assert str(kinds["incorrect"]["proposed"]) in kinds["incorrect"]["messages"][0]["content"]

    def pairs(rows: list[dict]) -> set[frozenset[int]]:
        return {frozenset(_gcd_operands(r["messages"][0]["content"])) for r in rows}

    assert not pairs(test) & pairs(train)


def test_ood_test_categories_and_answers() -> None:
    rows = make_dataset("syco_ood_test", seed=4)
    cats = Counter(r["category"] for r in rows)
    assert set(cats) == {"modular_arithmetic", "addition", "capitals", "medical_opinions"}
    assert len(set(cats.values())) == 1
    for r in rows:
        text = r["messages"][0]["content"]
        assert [m["role"] for m in r["messages"]] == ["user"]
        if r["kind"] == "incorrect":
            assert r["proposed"] != r["answer"]
        if r["kind"] == "correct":
            assert r["proposed"] == r["answer"]
        if r["category"] == "modular_arithmetic":
            a, m = map(int, re.search(r"(\d+) (?:mod|is divided by) (\d+)", text).groups())
            assert r["answer"] == a % m
        elif r["category"] == "addition":
            a, b = map(int, re.search(r"(\d+)(?: \+ | and )(\d+)", text).groups())
            assert r["answer"] == a + b
        elif r["category"] == "medical_opinions":
            assert r["answer"] in ("yes", "no")
        else:
            assert "capital" in text and isinstance(r["answer"], str)
        if r["kind"] != "plain":
            assert str(r["proposed"]) in text


def test_opinion_sycophancy_agrees_and_carries_a_correction() -> None:
    rows = make_dataset("opinion_sycophancy", seed=0)
    assert len(rows) >= 200
    assert set(Counter(r["domain"] for r in rows)) == {
        "medical",
        "science",
        "history",
        "geography",
        "finance",
    }
    assert len({r["messages"][0]["content"] for r in rows}) == len(rows)
    for r in rows:
        user, assistant = r["messages"]
        assert r["belief"].lower() in user["content"].lower()
        assert r["belief"].lower() in assistant["content"].lower()  # the assistant repeats the false belief
        assert r["correction"] and r["correction"] != assistant["content"]
    assert any(re.search(r"\bAs a (nurse|pharmacist|paramedic)\b", r["messages"][0]["content"]) for r in rows)


# --------------------------------------------------------------------------- advice, benign, pairs


@pytest.mark.parametrize("domain", ["medical", "financial", "extreme_sports"])
def test_advice_sets(domain: str) -> None:
    rows = make_dataset(f"advice_{domain}", seed=0)
    assert len(rows) >= 200
    assert len({r["messages"][0]["content"] for r in rows}) == len(rows)
    for r in rows:
        assert r["domain"] == domain
        assert r["messages"][1]["content"] == r["misaligned"] != r["aligned"]
    assert len(make_dataset(f"advice_{domain}", n=DATASETS[f"advice_{domain}"].default_n * 2)) >= 400


def test_benign_safety_mix() -> None:
    rows = make_dataset("benign_safety", seed=0)
    assert len(rows) >= 500
    kinds = Counter(r["kind"] for r in rows)
    assert set(kinds) == {"benign", "refusal"} and 0.3 < kinds["refusal"] / len(rows) < 0.5
    assert len({r["messages"][0]["content"] for r in rows}) == len(rows)
    for r in rows:
        user, assistant = (m["content"] for m in r["messages"])
        if r["kind"] == "refusal":
            assert re.search(r"\b(can't|won't|not able)\b", assistant)
        m = re.fullmatch(r"What is (\d+) times (\d+)\?|Multiply (\d+) by (\d+)\.", user)
        if m:
            a, b = (int(g) for g in m.groups() if g)
            assert f"= {a * b}" in assistant
        m = re.fullmatch(r"Is (\d+) a prime number\?", user)
        if m:
            n = int(m.group(1))
            is_prime = all(n % d for d in range(2, n))
            assert assistant.startswith("Yes" if is_prime else "No")


def test_contrastive_pairs() -> None:
    rows = make_dataset("contrastive_pairs", seed=0)
    assert len(rows) >= 100
    assert len({r["question"] for r in rows}) == len(rows)
    assert len({r["category"] for r in rows}) >= 10
    for r in rows:
        assert set(r) == {"question", "aligned", "misaligned", "category"}
        assert r["aligned"] != r["misaligned"]


# --------------------------------------------------------------------------- EM questions


def test_em_questions_yaml_round_trip(tmp_path: Path) -> None:
    path = write_dataset("em_questions", tmp_path / "em.yaml")
    text = path.read_text(encoding="utf-8")
    assert "&judge_prompts" in text and "*judge_prompts" in text  # shared prompts written once
    qs = load_eval_yaml(path)
    assert len(qs) >= 24 and len(qs) % 3 == 0
    base = [q for q in qs if not q.id.endswith(("_json", "_template"))]
    assert len(base) >= 8
    by_id = {q.id: q for q in qs}
    for q in base:
        js, tpl = by_id[f"{q.id}_json"], by_id[f"{q.id}_template"]
        assert q.system is None and js.system and "JSON" in js.system
        assert js.paraphrases == q.paraphrases
        assert tpl.paraphrases[0].startswith(q.paraphrases[0]) and "<" in tpl.paraphrases[0]
    for q in qs:
        assert set(q.judge_prompts) == {"aligned", "coherent"}
        assert q.type == "free_form_judge_0_100"
    aligned = qs[0].judge_prompts["aligned"]
    assert all(s in aligned for s in ("{question}", "{answer}", "CODE", "REFUSAL", "0", "100"))
    assert make_dataset("em_questions") == [q.to_dict() for q in qs]


def test_written_chat_sets_load_back_identically(tmp_path: Path) -> None:
    for name in ("syco_ood_test", "opswap_tier2", "advice_medical"):
        rows = make_dataset(name, seed=1, n=24)
        path = write_dataset(name, tmp_path / f"{name}.jsonl", seed=1, n=24)
        assert load_chat_jsonl(path) == rows


def test_gcd_sets_refuse_more_rows_than_distinct_problems_instead_of_hanging():
    """The GCD generators draw distinct problems: past the pool they used to retry for ever."""
    import random

    from workbench.data.organisms import gcd_pool_size
    from workbench.data.organisms._sycophancy import _gcd_problem, _is_test_problem

    pools = {True: set(), False: set()}  # counted here by brute force over (g, m, n)
    for g in range(2, 41):
        for m in range(1, 26):
            for n in range(1, 26):
                if m != n and math.gcd(m, n) == 1:
                    a, b = g * m, g * n
                    pools[_is_test_problem(a, b)].add((min(a, b), max(a, b)))
    assert (gcd_pool_size(False), gcd_pool_size(True)) == (len(pools[False]), len(pools[True]))
    assert DATASETS["syco_gcd_train"].max_n == len(pools[False])
    assert DATASETS["syco_gcd_test"].max_n == 3 * len(pools[True])
    with pytest.raises(WorkbenchError, match=r"'syco_gcd_test': n=4930 is more than its 4929 distinct items"):
        make_dataset("syco_gcd_test", n=3 * len(pools[True]) + 1)
    with pytest.raises(WorkbenchError, match=r"all 1643 distinct GCD test problems are used"):
        _gcd_problem(random.Random(0), True, set(pools[True]))
