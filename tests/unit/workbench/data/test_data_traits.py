"""Trait definitions: shipped files load with the required counts; errors name file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench._errors import WorkbenchError
from workbench.data import Trait, check_file, load_trait, shipped_traits, write_dataset

SHIPPED = ["evil", "hallucinating", "sycophantic"]


def test_shipped_trait_names() -> None:
    assert shipped_traits() == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_trait_has_required_counts(name: str) -> None:
    t = load_trait(name)
    assert isinstance(t, Trait) and t.name == name
    assert len(t.instructions) == 5
    assert all(pos.strip() and neg.strip() and pos != neg for pos, neg in t.instructions)
    assert len(t.questions) == 20 and len(set(t.questions)) == 20
    assert len(t.eval_questions) == 20 and len(set(t.eval_questions)) == 20
    assert not set(t.questions) & set(t.eval_questions)
    assert "{question}" in t.judge_prompt and "{answer}" in t.judge_prompt
    assert "0" in t.judge_prompt and "100" in t.judge_prompt
    filled = t.judge("Q?", "A!")
    assert "Q?" in filled and "A!" in filled and "{answer}" not in filled


@pytest.mark.parametrize("name", SHIPPED)
def test_trait_file_round_trip_via_path(tmp_path: Path, name: str) -> None:
    path = write_dataset(f"trait_{name}", tmp_path / f"{name}.json")
    assert load_trait(path) == load_trait(name)
    assert load_trait(str(path)).to_dict() == json.loads(path.read_text(encoding="utf-8"))
    info = check_file(path)
    assert (info["kind"], info["instruction_pairs"], info["questions"], info["eval_questions"]) == (
        "trait",
        5,
        20,
        20,
    )


def _valid() -> dict:
    return {
        "instruction": [{"pos": "Be X.", "neg": "Be not X."}],
        "questions": ["q1", "q2"],
        "eval_questions": ["e1"],
        "eval_prompt": "Rate {question} / {answer} from 0 to 100.",
    }


def _write(tmp_path: Path, obj: object, name: str = "mytrait.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


def test_user_file_name_defaults_to_stem_and_eval_questions_are_optional(tmp_path: Path) -> None:
    data = _valid()
    del data["eval_questions"]
    t = load_trait(_write(tmp_path, data))
    assert t.name == "mytrait" and t.eval_questions == ()


@pytest.mark.parametrize("key", ["instruction", "questions", "eval_prompt"])
def test_missing_key_names_file_and_key(tmp_path: Path, key: str) -> None:
    data = _valid()
    del data[key]
    with pytest.raises(WorkbenchError) as err:
        load_trait(_write(tmp_path, data))
    assert "mytrait.json" in str(err.value) and f"missing key '{key}'" in str(err.value)


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [
        ({"instruction": [{"pos": "only pos"}]}, "'instruction' item 0: missing key 'neg'"),
        ({"instruction": []}, "'instruction' must be a non-empty list"),
        ({"questions": ["ok", 3]}, "'questions' item 1 must be a non-empty string"),
        ({"eval_prompt": "Rate {question} only"}, "no '{answer}' placeholder"),
        ({"eval_prompt": "Rate {answer} only"}, "no '{question}' placeholder"),
        ({"eval_questions": ["q2"]}, "must be disjoint"),
    ],
)
def test_invalid_trait_files(tmp_path: Path, mutation: dict, expected: str) -> None:
    with pytest.raises(WorkbenchError, match="mytrait.json") as err:
        load_trait(_write(tmp_path, {**_valid(), **mutation}))
    assert expected in str(err.value)


def test_bad_json_and_unknown_name(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "instruction": [\n  oops\n}', encoding="utf-8")
    with pytest.raises(WorkbenchError, match=r"broken.json, line 3: invalid JSON"):
        load_trait(path)
    with pytest.raises(WorkbenchError) as err:
        load_trait("kindness")
    assert "kindness" in str(err.value) and all(name in str(err.value) for name in SHIPPED)
