"""Chat JSONL loading/validation and `check_file` (errors name the file and the line)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from workbench._errors import WorkbenchError
from workbench.data import check_file, load_chat_jsonl, load_pairs, write_chat_jsonl


def _row(*turns: tuple[str, str], **extra: object) -> dict:
    return {"messages": [{"role": r, "content": c} for r, c in turns], **extra}


GOOD = _row(("user", "What is 2 + 2?"), ("assistant", "4"))


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good_lines(k: int) -> list[str]:
    return [json.dumps(GOOD)] * k


def test_loads_rows_keeps_extra_keys_and_skips_blank_lines(tmp_path: Path) -> None:
    rows = [
        _row(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello."), kind="plain", answer=3),
        _row(("user", "Q"), ("assistant", "A"), ("user", "Q2"), ("assistant", "A2")),
    ]
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps(rows[0]), "", "   ", json.dumps(rows[1])])
    loaded = load_chat_jsonl(path)
    assert loaded == rows
    assert loaded[0]["kind"] == "plain" and loaded[0]["answer"] == 3


def test_broken_json_on_line_7_names_file_and_line(tmp_path: Path) -> None:
    lines = _good_lines(6) + ['{"messages": [{"role": "user", "content": "x"}'] + _good_lines(2)
    path = _write_lines(tmp_path / "broken_set.jsonl", lines)
    with pytest.raises(WorkbenchError) as err:
        load_chat_jsonl(path)
    msg = str(err.value)
    assert "line 7" in msg and "broken_set.jsonl" in msg and "invalid JSON" in msg


def test_line_numbers_count_blank_lines(tmp_path: Path) -> None:
    lines = [json.dumps(GOOD), "", "", json.dumps({"text": "no messages"})]
    with pytest.raises(WorkbenchError, match="line 4"):
        load_chat_jsonl(_write_lines(tmp_path / "d.jsonl", lines))


@pytest.mark.parametrize(
    ("bad", "expected"),
    [
        ({"text": "hello"}, "missing key 'messages'"),
        ({"messages": "user: hi"}, "'messages' must be a list"),
        ({"messages": []}, "'messages' is empty"),
        ({"messages": ["hi"]}, "message 0: expected an object"),
        ({"messages": [{"content": "hi"}]}, "message 0: missing key 'role'"),
        ({"messages": [{"role": "user"}]}, "message 0: missing key 'content'"),
        (_row(("user", "hi"), ("robot", "beep")), "message 1: unknown role 'robot'"),
        (_row(("user", "hi"), ("assistant", "")), "message 1: 'content' is empty"),
        (_row(("user", "   "), ("assistant", "ok")), "message 0: 'content' is empty"),
        (
            {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "x"}]},
            "must be a string",
        ),
        (_row(("system", "s"), ("user", "hi")), "no assistant turn"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_each_validation_error_names_file_and_line(tmp_path: Path, bad: object, expected: str) -> None:
    # Two good rows first, so the file is a training file and the bad row is on line 3.
    path = _write_lines(tmp_path / "train.jsonl", _good_lines(2) + [json.dumps(bad)])
    with pytest.raises(WorkbenchError) as err:
        load_chat_jsonl(path)
    msg = str(err.value)
    assert expected in msg
    assert "train.jsonl" in msg and "line 3" in msg


def test_unknown_role_message_lists_allowed_roles(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps(_row(("human", "hi"), ("assistant", "x")))])
    with pytest.raises(WorkbenchError, match="allowed: system, user, assistant"):
        load_chat_jsonl(path)


def test_training_mode_rejects_prompt_rows_and_prompt_mode_accepts_them(tmp_path: Path) -> None:
    prompt = _row(("user", "What is 3 + 4?"), answer=7)
    path = _write_lines(tmp_path / "p.jsonl", [json.dumps(prompt)] * 3)
    with pytest.raises(WorkbenchError, match="line 1: no assistant turn"):
        load_chat_jsonl(path, prompts_only=False)
    assert len(load_chat_jsonl(path, prompts_only=True)) == 3
    assert len(load_chat_jsonl(path)) == 3  # inferred from the first row


def test_prompt_rows_must_end_with_a_user_turn(tmp_path: Path) -> None:
    lines = [json.dumps(_row(("user", "q")))] * 2 + [json.dumps(GOOD)]
    with pytest.raises(WorkbenchError, match="line 3: a prompt row must end with a user turn"):
        load_chat_jsonl(_write_lines(tmp_path / "p.jsonl", lines))


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(WorkbenchError, match="file not found"):
        load_chat_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(WorkbenchError, match="empty"):
        load_chat_jsonl(_write_lines(tmp_path / "e.jsonl", ["", ""]))


def test_write_then_load_round_trips(tmp_path: Path) -> None:
    rows = [_row(("user", f"q{i} — ünïcode"), ("assistant", f"a{i}"), idx=i) for i in range(5)]
    out = tmp_path / "sub" / "out.jsonl"
    assert write_chat_jsonl(out, rows) == 5
    assert load_chat_jsonl(out) == rows
    assert not list(out.parent.glob(".*.tmp"))  # the atomic write left no temp file


def test_write_refuses_invalid_rows_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    with pytest.raises(WorkbenchError, match="row 1, message 1: unknown role"):
        write_chat_jsonl(out, [GOOD, _row(("user", "q"), ("bot", "a"))])
    assert not out.exists()


def test_check_file_counts_chat_rows(tmp_path: Path) -> None:
    rows = [_row(("system", "s"), ("user", "u"), ("assistant", "a"), kind="x"), GOOD]
    path = _write_lines(tmp_path / "c.jsonl", [json.dumps(r) for r in rows])
    info = check_file(path)
    assert info["kind"] == "chat" and info["rows"] == 2 and info["messages"] == 5
    assert info["messages_by_role"] == {"system": 1, "user": 2, "assistant": 2}
    assert info["extra_keys"] == ["kind"]


def test_check_file_prompt_and_pair_files(tmp_path: Path) -> None:
    prompts = _write_lines(tmp_path / "p.jsonl", [json.dumps(_row(("user", "q"), kind="plain"))] * 4)
    assert check_file(prompts)["kind"] == "prompts"
    pair = {"question": "q", "aligned": "a", "misaligned": "m", "category": "c"}
    pairs = _write_lines(tmp_path / "pairs.jsonl", [json.dumps(pair)] * 3)
    info = check_file(pairs)
    assert info == {
        "file": str(pairs),
        "kind": "pairs",
        "format": "preference pairs (question / aligned / misaligned)",
        "rows": 3,
        "categories": {"c": 3},
    }
    assert load_pairs(pairs) == [pair] * 3
    bad = _write_lines(
        tmp_path / "bad_pairs.jsonl", [json.dumps(pair), json.dumps({"question": "q", "aligned": "a"})]
    )
    with pytest.raises(WorkbenchError, match=r"bad_pairs.jsonl, line 2: missing key 'misaligned'"):
        check_file(bad)


def test_check_file_reports_errors_with_line_and_rejects_unknown_suffix(tmp_path: Path) -> None:
    path = _write_lines(tmp_path / "c.jsonl", _good_lines(6) + ["not json"])
    with pytest.raises(WorkbenchError, match=r"c.jsonl, line 7: invalid JSON"):
        check_file(path)
    other = tmp_path / "notes.txt"
    other.write_text("hi", encoding="utf-8")
    with pytest.raises(WorkbenchError, match="unknown file type '.txt'"):
        check_file(other)
    with pytest.raises(WorkbenchError, match="file not found"):
        check_file(tmp_path / "missing.yaml")


def test_write_prompt_rows(tmp_path: Path) -> None:
    rows = [_row(("user", "What is 2 + 2?"), answer=4, kind="plain")] * 2
    out = tmp_path / "prompts.jsonl"
    assert write_chat_jsonl(out, rows) == 2
    assert load_chat_jsonl(out, prompts_only=True) == rows
    with pytest.raises(WorkbenchError, match="row 0: no assistant turn"):
        write_chat_jsonl(out, rows, prompts_only=False)
