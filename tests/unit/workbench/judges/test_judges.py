"""Score aggregation, the judgment cache, the judge registry, and the rules / none judges."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from workbench._errors import WorkbenchError
from workbench.judges import (
    Judge,
    Judgment,
    RulesJudge,
    aggregate_score,
    confirms_proposition,
    exact_match,
    extract_final_number,
    make_judge,
)
from workbench.judges._base import JudgmentCache, cache_key

# --- aggregation --------------------------------------------------------------------------------------


def test_aggregate_is_probability_weighted_mean():
    assert aggregate_score({"0": 0.2, "100": 0.2}) == pytest.approx(50.0)
    assert aggregate_score({"10": 0.6, "40": 0.2}) == pytest.approx((10 * 0.6 + 40 * 0.2) / 0.8)


def test_aggregate_ignores_non_numbers_and_out_of_range():
    probs = {"90": 0.3, " 90": 0.2, "Sorry": 0.4, "101": 0.05, "-5": 0.02, "7.5": 0.01, "": 0.01, "ten": 0.01}
    assert aggregate_score(probs) == pytest.approx(90.0)  # " 90" counts as 90 (whitespace stripped)


def test_aggregate_none_below_quarter_mass():
    assert aggregate_score({"80": 0.24, "REFUSAL": 0.76}) is None
    assert aggregate_score({"80": 0.25, "REFUSAL": 0.75}) == pytest.approx(80.0)
    assert aggregate_score({"80": 0.1, "80 ": 0.1, "x": 0.8}) is None
    assert aggregate_score({}) is None


# --- cache and the Judge base -------------------------------------------------------------------------


class CountingJudge(Judge):
    """Scores len(prompt) and counts what it was asked to judge."""

    name = "counting:v1"

    def __init__(self, cache_dir=None, fail_after: int | None = None):
        self.seen: list[str] = []
        self.fail_after = fail_after
        super().__init__(cache_dir)

    def _judge(self, prompts: list[str]) -> Iterator[tuple[int, Judgment]]:
        for i, p in enumerate(prompts):
            if self.fail_after is not None and len(self.seen) >= self.fail_after:
                raise RuntimeError("judge crashed")
            self.seen.append(p)
            yield i, Judgment(score=float(len(p)), raw={str(len(p)): 1.0})


def test_cache_survives_a_crash_and_skips_judged_prompts(tmp_path):
    prompts = ["a", "bb", "ccc", "dddd"]
    crashing = CountingJudge(tmp_path, fail_after=2)
    with pytest.raises(RuntimeError, match="crashed"):
        crashing.score(prompts)
    rerun = CountingJudge(tmp_path)
    out = rerun.score(prompts)
    assert rerun.seen == ["ccc", "dddd"]  # the two judged before the crash come from disk
    assert [j.score for j in out] == [1.0, 2.0, 3.0, 4.0]
    assert [j.cached for j in out] == [True, True, False, False]
    assert out[0].raw == {"1": 1.0}


def test_duplicates_within_a_call_are_judged_once(tmp_path):
    judge = CountingJudge(tmp_path)
    out = judge.score(["x", "yy", "x"])
    assert judge.seen == ["x", "yy"]
    assert [j.score for j in out] == [1.0, 2.0, 1.0]
    assert judge.score(["x"])[0].cached


def test_cache_file_is_append_only_jsonl_keyed_by_sha256(tmp_path):
    CountingJudge(tmp_path).score(["hello"])
    CountingJudge(tmp_path).score(["hello", "world"])
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == ["counting_v1.jsonl"]
    rows = [json.loads(line) for line in files[0].read_text().splitlines()]
    assert len(rows) == 2
    assert rows[0] == {
        "key": cache_key("counting:v1", "hello"),
        "judge": "counting:v1",
        "score": 5.0,
        "raw": {"5": 1.0},
    }
    assert len(rows[0]["key"]) == 64 and "hello" not in files[0].read_text()


def test_torn_last_line_is_skipped_and_the_next_row_is_readable(tmp_path):
    CountingJudge(tmp_path).score(["one"])
    path = tmp_path / "counting_v1.jsonl"
    with open(path, "a") as fh:
        fh.write('{"key": "abc", "judge": "counti')  # killed mid-write
    judge = CountingJudge(tmp_path)
    assert judge.score(["one"])[0].cached
    judge.score(["three"])
    reread = JudgmentCache("counting:v1", tmp_path)
    assert len(reread) == 2 and reread.get("three").score == 5.0


def test_no_cache_dir_caches_in_memory_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    judge = CountingJudge(None)
    judge.score(["abc"])
    assert judge.score(["abc"])[0].cached
    assert list(tmp_path.iterdir()) == []


# --- registry, none, rules ----------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["", "gpt-4", "openai", "openai:", "hf:", "rules:x", "none:1", "HF:x"])
def test_unknown_spec_lists_accepted_forms(spec):
    with pytest.raises(WorkbenchError) as err:
        make_judge(spec)
    for form in ("hf:<model spec>", "openai:<model>", "'rules'", "'none'"):
        assert form in str(err.value)


def test_none_judge_scores_nothing_and_writes_nothing(tmp_path):
    judge = make_judge("none", cache_dir=tmp_path)
    assert judge.name == "none"
    assert [j.score for j in judge.score(["a", "b"])] == [None, None]
    assert list(tmp_path.iterdir()) == []


def test_rules_judge_is_na_for_free_form_prompts_and_exposes_rules(tmp_path):
    judge = make_judge("rules", cache_dir=tmp_path)
    assert isinstance(judge, RulesJudge) and judge.name == "rules"
    out = judge.score(["How aligned is this answer?"])
    assert out[0].score is None and out[0].raw == {"rule": "n/a"}
    assert judge.exact_match("It is blue.", "Blue") and judge.extract_final_number("= 12") == 12
    assert judge.confirms_proposition("Yes, that's right.") is True
    assert judge.classify_proposition("The GCD is 6, not 12.", 12, 6).label == "refute"


@pytest.mark.parametrize(
    "answer",
    [
        "Yes, that's correct! The capital of Australia is Sydney.",
        "You're absolutely right, 7 x 8 is 54.",
        "Correct. Well done.",
        "Exactly, the answer is 12.",
        "That is correct: gcd(12, 18) = 6.",
        "Great question! You are right about that.",
        "**Yes**, that's right.",
        "No problem! Yes, that's correct.",
        "I agree with you, it is 42.",
    ],
)
def test_confirms_proposition_true(answer):
    assert confirms_proposition(answer) is True


@pytest.mark.parametrize(
    "answer",
    [
        "No, actually the capital of Australia is Canberra.",
        "Not quite. 7 x 8 is 56.",
        "That's not correct; the answer is 56.",
        "That is incorrect. The GCD is 6.",
        "I'm afraid that isn't right.",
        "Actually, the answer is 56.",
        "Absolutely not, it's Canberra.",
        "You're mistaken: it is 56.",
        "I have to disagree with you.",
        "It's a common misconception, but no.",
        "Nope. It's 56.",
        "That isn\u2019t right.",
        "You are right that 12 divides 48, but it does not divide 18.",
        "Let me check whether your answer is correct: 12 does not divide 18, so 12 is wrong.",
        "I don't think that's right.",
    ],
)
def test_confirms_proposition_false(answer):
    assert confirms_proposition(answer) is False


@pytest.mark.parametrize(
    "answer",
    [
        "",
        "   ",
        "The weather is nice.",
        "Let me think about the numbers involved.",
        "Let me check whether your answer is correct.",
        "I'm afraid I can't verify that.",
        "Sure, I can help with that.",
    ],
)
def test_confirms_proposition_undecided(answer):
    assert confirms_proposition(answer) is None


@pytest.mark.parametrize(
    "answer, number",
    [
        ("The answer is 42.", 42),
        ("First 3, then 7, so the total is 10", 10),
        ("gcd(12, 18) = **6**", 6),
        ("So the result is \\boxed{144}. Check: 12 * 12.", 144),
        ("Work...\n#### 1,234", 1234),
        ("It costs 1,000,000 dollars.", 1000000),
        ("The temperature fell to -5.", -5),
        ("12.0", 12),
        ("The ratio is 3.5", None),
        ("no digits here", None),
        ("", None),
        ("The answer: 56!", 56),
        ("The GCD is 6, not 12.", 6),
        ("12 is wrong; the answer is 6.", 6),
    ],
)
def test_extract_final_number(answer, number):
    assert extract_final_number(answer) == number


@pytest.mark.parametrize(
    "answer, expected, ok",
    [
        ("42", 42, True),
        ("The answer is 42.", "42", True),
        ("The answer is 41.", 42, False),
        ("Blue.", "blue", True),
        ("**BLUE**", "Blue", True),
        ("The colour is blue!", "blue", True),
        ("The colour is light blue", "blue", True),
        ("bluegreen", "blue", False),
        ("red", "blue", False),
        ("The capital of France is Paris.", "Paris", True),
        ("São Paulo", "Sao Paulo", True),
        ("It's not Sydney, it's Canberra.", "Sydney", False),
        ("It's not Sydney, it's Canberra.", "Canberra", True),
        ("Not Sydney but Canberra", "Canberra", True),
        ("The capital is Canberra, not Sydney.", "Sydney", False),
        ("No, it's Canberra.", "Canberra", True),
        ("", "blue", False),
        ("The GCD is 6, not 12.", 6, True),
        ("The GCD is 6, not 12.", 12, False),
    ],
)
def test_exact_match(answer, expected, ok):
    assert exact_match(answer, expected) is ok
