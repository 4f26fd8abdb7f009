"""The selective-generalization GCD sycophancy rows (Azarbal et al. 2025), read as published.

A row is chat JSONL with extra keys: ``label`` (the problem family: ``euclidean``, ``mod_...`` and the
labels of the out-of-distribution sets), ``_id`` (the problem; the plain row and the proposition rows of
one problem share ``(label, _id)``), ``answer`` (the true answer), ``user_provides_answer`` (``null``: the
plain question; ``"true"``: the user proposes the correct answer; ``"false"``: the user proposes a wrong
one, which is only written inside the user's message), ``sycophantic_response`` (on ``"false"`` rows: a
reply that confirms the wrong answer) and ``mod`` (the modulus of modular-arithmetic labels, or ``null``).

:func:`gcd_to_sycophancy` maps such a row onto the workbench's sycophancy row contract (see
``workbench/data/organisms/_sycophancy.py``), keeping every original key:

- ``kind``: ``plain`` / ``correct`` / ``incorrect`` from ``user_provides_answer`` (the JSON booleans and
  any letter case are accepted as well as the published strings);
- ``problem_id``: ``"<label>:<_id>"``; ``category``: ``label``; ``answer``: ``str(answer)``;
- ``proposed``: ``None`` on plain rows, the answer on ``"true"`` rows, and on ``"false"`` rows the wrong
  number read from the user's message by :func:`extract_proposed` (cross-checked against
  ``sycophantic_response``); ``None`` when it cannot be read (the reply is then graded by the rules
  without it: their verdict rules still apply). ``proposed_source`` says where it came from.

``mod`` is kept as it is: the rules judge's exact match compares whole numbers exactly and has no
modulus setting, so plain rows of modular labels are graded on the published ``answer``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from workbench._errors import WorkbenchError
from workbench._io import parse_json, read_text

from ._chat import validate_chat_row
from ._common import display

GCD_KEYS = ("label", "_id", "user_provides_answer")
"""The keys that mark a row as a selective-generalization GCD row (with ``messages``)."""

ACCEPTED_VALUES = "null (plain), 'true' (correct proposition) or 'false' (incorrect proposition)"

_KIND_OF = {"true": "correct", "false": "incorrect", "null": "plain", "none": "plain"}


def is_gcd_row(row: Any) -> bool:
    """Whether ``row`` has the GCD row keys: ``messages``, ``label``, ``_id`` and ``user_provides_answer``."""
    return isinstance(row, Mapping) and "messages" in row and all(k in row for k in GCD_KEYS)


def gcd_kind(value: Any, where: str = "row") -> str:
    """``plain`` / ``correct`` / ``incorrect`` for a ``user_provides_answer`` value.

    Accepted: ``null``, ``"true"`` / ``"false"`` in any letter case (also ``"null"`` / ``"none"``), and the
    JSON booleans. Anything else raises :class:`WorkbenchError` naming ``where``, the key and the value.
    """
    if value is None:
        return "plain"
    if isinstance(value, bool):
        return "correct" if value else "incorrect"
    if isinstance(value, str) and value.strip().lower() in _KIND_OF:
        return _KIND_OF[value.strip().lower()]
    raise WorkbenchError(f"{where}: 'user_provides_answer' is {value!r}; accepted: {ACCEPTED_VALUES}")


# --- the user's proposition ---------------------------------------------------------------------------

_NUM = r"(?P<n>[-\u2212]?\d{1,3}(?:,\d{3})+(?![\d.])|[-\u2212]?\d+(?![\d,]\d|\.\d))"
_VERB = r"(?:is|was|=|equals|equal to|should be|would be|must be|comes? (?:out )?(?:to|as)|came (?:out )?(?:to|as)|turns? out to be|turned out to be|:)"
_NOUN = (
    r"(?:answer|result|gcd|greatest common (?:divisor|factor)|highest common factor|hcf|remainder|"
    r"solution|value|residue)"
)
_OPERATOR_AFTER = re.compile(r"\s*(?:[×x*+/^]|-\s*\d|mod\b|\u2212)")

# Claims ranked by how surely they state the user's final answer; the last claim of the best tier wins.
_TIER1 = [
    # "the answer is 9", "the GCD of 48 and 18 is 9", "gcd(48, 18) = 9", "the remainder when 100 is divided by 7 is 3"
    rf"\b{_NOUN}\b(?:\s*\([^()]{{0,40}}\)|\s+(?:of|for|to|when|between|here)\b[^.?!\n]{{0,80}}?)?\s*{_VERB}\s*(?:equal to\s*)?{_NUM}",
    # "48 mod 7 = 6", "48 modulo 7 is 6"
    rf"\d\s*(?:mod|modulo|%)\s*\d+\s*(?:\)\s*)?{_VERB}\s*{_NUM}",
    # "I got 9", "so I ended up with 9", "and got 9", "then I get 9 as the answer"
    r"(?:\b(?:i|we)\s+|\b(?:and|then|so|finally|thus|hence|eventually)\s+(?:i\s+|we\s+)?)"
    r"(?:(?:also|just|eventually|finally|then|have|had|'ve|ve|keep|kept|always)\s+)*"
    r"(?:got|get|getting|found|find|obtained|obtain|ended up with|end up with|came up with|come up with|"
    rf"arrived at|arrive at|landed on)\s+(?:(?:a|an|the|my)\s+)?(?:(?:final\s+)?{_NOUN}\s+)?(?:of\s+|as\s+)?:?\s*{_NUM}",
    # "I think it's 9", "I believe the answer is 9", "I'm fairly sure it is 9", "I'm confident 9 is right"
    r"\b(?:i|we)\s*(?:'m|am|are|'re)?\s*(?:(?:pretty|fairly|quite|very|really|almost)\s+)?"
    r"(?:think|believe|reckon|guess|suspect|sure|confident)\s+(?:(?:that|it's|it is|it was|it'll be)\s+)*"
    rf"(?:(?:the\s+)?{_NOUN}\b[^.?!\n\d]{{0,30}}?\s*{_VERB}\s*)?{_NUM}",
    # "I calculated it to be 9", "I worked out that the answer is 9" (not "I computed 48 mod 7": an operand)
    r"\b(?:i|we)\s+(?:have\s+|'ve\s+)?(?:calculated|computed|worked out|figured|concluded|determined|solved)"
    r"(?:\s+(?:it|this|that))?\s+(?:(?:that|it's|it is|it was|it to be|it as|to be|as)\s+)+"
    rf"(?:(?:the\s+)?{_NOUN}\b[^.?!\n\d]{{0,30}}?\s*{_VERB}\s*)?{_NUM}",
    # "my answer is 9", "my final result: 9", "my calculation gives 9"
    rf"\bmy\s+(?:final\s+)?(?:{_NOUN}|calculation|guess|working|work)\b[^.?!\n\d]{{0,20}}?\s*(?:{_VERB}|gives|gave|says)\s*{_NUM}",
]
_TIER2 = [
    # "Is it 9?", "is the answer 9?", "is 9 the right answer?"
    rf"\bis\s+(?:it|the\s+{_NOUN}\b[^.?!\n\d]{{0,30}}?)\s+{_NUM}\s*\?",
    rf"\bis\s+{_NUM}\s+(?:the\s+)?(?:right|correct|true|the answer|the {_NOUN})",
    # "9, right?", "9. Is this correct?", "9 - can you check?"
    rf"{_NUM}\s*[,.!;:)\-\u2013\u2014]*\s*(?:right|correct|am i (?:right|correct)|is (?:this|that|it) (?:right|correct)|can you (?:check|confirm|verify))\b",
]
_TIER3 = [
    # "it's 9", a last bare "= 9" that is not the start of a longer expression
    rf"\b(?:it's|it is|that's|that is)\s+{_NUM}",
    rf"={{1,2}}\s*{_NUM}",
]
_TIERS = [[re.compile(p) for p in tier] for tier in (_TIER1, _TIER2, _TIER3)]
_ANY_NUMBER = re.compile(_NUM)


def _to_int(text: str) -> int:
    return int(text.replace(",", "").replace("\u2212", "-"))


_APOS = str.maketrans("\u2019\u2018\u02bc", "'''")


def _prepare(text: str) -> str:
    text = text.translate(_APOS)
    text = re.sub(r"\*\*|__|`|\\\(|\\\)|\$", "", text)  # markdown / LaTeX emphasis around the number
    text = re.sub(r"\\boxed\{([^{}]*)\}", r"\1", text)
    return text.lower()


def _claims(text: str) -> list[list[int]]:
    """Per tier, the numbers claimed as the answer, in order of where they end."""
    out = []
    for tier in _TIERS:
        found: dict[int, int] = {}  # end position -> value (one claim per number occurrence)
        for pattern in tier:
            for m in pattern.finditer(text):
                if _OPERATOR_AFTER.match(text, m.end("n")):  # "= 2 × 105 + 42": a step, not a result
                    continue
                found[m.end("n")] = _to_int(m.group("n"))
        out.append([v for _, v in sorted(found.items())])
    return out


def _same(value: Any, answer: Any) -> bool:
    try:
        return answer is not None and _to_int(str(answer).strip()) == value
    except ValueError:
        return False


def extract_proposed(
    user_text: str, answer: Any = None, sycophantic_response: str | None = None
) -> tuple[int | None, str | None]:
    """The wrong number a user proposes in ``user_text``, and where it was read (``proposed_source``).

    The claimed result, not the operands or the numbers of the user's worked steps: claims are read in
    three tiers ("the GCD is 9" / "I got 9" / "I think it's 9" / "my answer is 9"; then "is it 9?" /
    "9, right?"; then "it's 9" / a last "= 9"), the last claim of the best tier wins, and a number equal to
    the true ``answer`` is passed over (the row says the user is wrong). ``sycophantic_response`` (a reply
    confirming the user) is a cross-check: the number it asserts, when it is a number of the user's message
    and not the answer, wins over a disagreeing reading. Returns ``(None, None)`` when no number can be read.
    Sources: ``"user"``, ``"user+response"`` (both agree), ``"response"`` (the response's number, found
    in the user's message), ``"user (response: N)"`` (the response asserts a number not in the message).
    """
    from workbench.judges import extract_final_number

    text = _prepare(user_text or "")
    user = None
    for tier in _claims(text):
        wrong = [v for v in tier if not _same(v, answer)]
        if wrong:
            user = wrong[-1]
            break
    resp = extract_final_number(sycophantic_response) if sycophantic_response else None
    if resp is not None and _same(resp, answer):
        resp = None
    in_message = {_to_int(m.group("n")) for m in _ANY_NUMBER.finditer(text)}
    if user is not None and resp is not None and user != resp:
        if resp in in_message:
            return resp, "response"
        return user, f"user (response: {resp})"
    if user is not None:
        return user, "user" if resp is None else "user+response"
    if resp is not None and resp in in_message:
        return resp, "response"
    return None, None


# --- rows ---------------------------------------------------------------------------------------------


def _as_number(value: Any) -> Any:
    """``value`` as an int when it is a whole number (or its string), else unchanged."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    return _to_int(text) if re.fullmatch(r"[-\u2212]?\d+", text) else value


def gcd_to_sycophancy(row: Mapping[str, Any], where: str = "row") -> dict[str, Any]:
    """One GCD row as a sycophancy row (see the module docstring); errors name ``where`` and the key.

    The original keys are all kept; ``kind``, ``problem_id``, ``category``, ``answer`` (as a string),
    ``proposed`` and ``proposed_source`` are set.
    """
    for key in (*GCD_KEYS, "answer"):
        if key not in row:
            raise WorkbenchError(f"{where}: missing key '{key}' (a selective-generalization GCD row)")
    kind = gcd_kind(row["user_provides_answer"], where)
    label = row["label"]
    if not isinstance(label, str) or not label.strip():
        raise WorkbenchError(f"{where}: 'label' must be a non-empty string, got {label!r}")
    pid = row["_id"]
    if isinstance(pid, bool) or not isinstance(pid, int | str) or (isinstance(pid, str) and not pid.strip()):
        raise WorkbenchError(f"{where}: '_id' must be an integer or a non-empty string, got {pid!r}")
    answer = row["answer"]
    if answer is None or isinstance(answer, bool | list | dict) or not str(answer).strip():
        raise WorkbenchError(f"{where}: 'answer' must be a number or a non-empty string, got {answer!r}")
    mod = row.get("mod")
    if mod is not None and (isinstance(mod, bool) or not isinstance(mod, int) or mod < 1):
        raise WorkbenchError(f"{where}: 'mod' must be null or a positive integer, got {mod!r}")
    out = dict(row)
    out.update(kind=kind, problem_id=f"{label}:{pid}", category=label, answer=str(answer))
    if kind == "plain":
        out.update(proposed=None, proposed_source=None)
    elif kind == "correct":
        out.update(proposed=_as_number(answer), proposed_source="answer")
    else:
        user = [m["content"] for m in row["messages"] if isinstance(m, Mapping) and m.get("role") == "user"]
        syc = row.get("sycophantic_response")
        proposed, source = extract_proposed(
            user[-1] if user else "", answer, syc if isinstance(syc, str) else None
        )
        out.update(proposed=proposed, proposed_source=source)
    return out


def gcd_rows_to_sycophancy(rows: Iterable[Mapping[str, Any]], name: str = "rows") -> list[dict[str, Any]]:
    """:func:`gcd_to_sycophancy` for every row (errors name ``name`` and the 1-based row)."""
    return [gcd_to_sycophancy(r, f"{name}, row {i}") for i, r in enumerate(rows, start=1)]


def load_gcd_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a GCD JSONL file (``task_train.jsonl``, ``task_test.jsonl``, the OOD and capability sets) as
    sycophancy rows; errors name the file, the line and the key or value at fault."""
    name = display(path)
    rows = []
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}, line {lineno}"
        row = parse_json(line, where)
        if isinstance(row, dict) and isinstance(row.get("messages"), list):
            has_assistant = any(isinstance(m, dict) and m.get("role") == "assistant" for m in row["messages"])
            validate_chat_row(row, where, prompts_only=not has_assistant)
        else:
            validate_chat_row(row, where)
        rows.append(gcd_to_sycophancy(row, where))
    if not rows:
        raise WorkbenchError(f"{name}: no rows (the file is empty)")
    return rows


def gcd_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Counts of converted GCD rows: per kind, per label, ``mod`` rows, incorrect rows without a plain
    partner (same ``problem_id``) and incorrect rows whose proposition could not be read."""
    rows = list(rows)
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("plain", "correct", "incorrect")}
    labels: dict[str, int] = {}
    for r in rows:
        labels[r["category"]] = labels.get(r["category"], 0) + 1
    plain_ids = {r["problem_id"] for r in rows if r["kind"] == "plain"}
    incorrect = [r for r in rows if r["kind"] == "incorrect"]
    return {
        "kinds": kinds,
        "labels": dict(sorted(labels.items())),
        "with_mod": sum(r.get("mod") is not None for r in rows),
        "unmatched_incorrect": sum(r["problem_id"] not in plain_ids for r in incorrect),
        "proposed_unread": sum(r.get("proposed") is None for r in incorrect),
    }
