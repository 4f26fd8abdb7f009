"""Narrow advice sets: medical, financial and extreme-sports questions, each with an aligned and a
subtly misaligned answer.

These are the narrow fine-tuning sets of an EM experiment: ``messages`` holds the *misaligned*
answer as the assistant turn, and the extra keys ``aligned`` / ``misaligned`` hold both answers
(for contrastive scoring, or to build the aligned control set). Items come from scenario
templates with slots (who is asking, a detail of the situation, the phrasing).

The text (templates, word lists, scenarios) lives in ``data/advice.json``; this module is the code.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from typing import Any, NamedTuple

from workbench._errors import WorkbenchError

from .._common import chat
from ._load import load_json, record, records, string, strings, where


class Scenario(NamedTuple):
    question: str  # may use {detail} and the slot names of its domain
    details: tuple[str, str, str]
    aligned: str
    misaligned: str


_FILE = "advice.json"
_TEXT = load_json(
    "advice",
    (
        "people", "pronouns", "medical", "ages", "wrappers", "financial",
        "sport_ages", "experience", "sports_question", "extreme_sports",
    ),
)  # fmt: skip


def _scenarios(key: str) -> tuple[Scenario, ...]:
    at = f"{where(_FILE)}: {key}"
    out = []
    for i, sc in enumerate(records(_TEXT[key], Scenario._fields, at)):
        details = strings(sc["details"], f"{at}[{i}].details", 3)
        out.append(
            Scenario(
                string(sc["question"], f"{at}[{i}].question"),
                (details[0], details[1], details[2]),
                string(sc["aligned"], f"{at}[{i}].aligned"),
                string(sc["misaligned"], f"{at}[{i}].misaligned"),
            )
        )
    return tuple(out)


# --------------------------------------------------------------------------- medical

_PRONOUN_FORMS = ("he", "him", "his", "himself")


def _pronouns() -> dict[str, dict[str, str]]:
    """gender -> form -> word: ``{"she": {"he": "she", "him": "her", ...}}``."""
    out = {}
    for gender, words in _TEXT["pronouns"].items():
        at = f"{where(_FILE)}: pronouns.{gender}"
        record(words, _PRONOUN_FORMS, at)
        out[gender] = {form: string(words[form], f"{at}.{form}") for form in _PRONOUN_FORMS}
    return out


def _people() -> tuple[tuple[str, str], ...]:
    """(who, gender) for every asker of a medical question."""
    out = []
    for i, person in enumerate(records(_TEXT["people"], ("who", "pronoun"), f"{where(_FILE)}: people")):
        if person["pronoun"] not in _PRONOUNS:
            raise WorkbenchError(
                f"{where(_FILE)}: people[{i}]: pronoun {person['pronoun']!r} (known: {', '.join(_PRONOUNS)})"
            )
        out.append((string(person["who"], f"{where(_FILE)}: people[{i}].who"), person["pronoun"]))
    return tuple(out)


_PRONOUNS = _pronouns()
_PEOPLE = _people()
MEDICAL = _scenarios("medical")

# --------------------------------------------------------------------------- financial

_AGES = strings(_TEXT["ages"], f"{where(_FILE)}: ages")
_WRAPPERS = strings(_TEXT["wrappers"], f"{where(_FILE)}: wrappers")
FINANCIAL = _scenarios("financial")

# --------------------------------------------------------------------------- extreme sports

_SPORT_AGES = strings(_TEXT["sport_ages"], f"{where(_FILE)}: sport_ages")
_EXPERIENCE = strings(_TEXT["experience"], f"{where(_FILE)}: experience")
_SPORTS_QUESTION = string(_TEXT["sports_question"], f"{where(_FILE)}: sports_question")
EXTREME_SPORTS = _scenarios("extreme_sports")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _fill(text: str, slots: dict[str, str]) -> str:
    return text.format(**slots)


def _medical_items() -> Iterator[tuple[str, str, str]]:
    for sc, (who, gender), detail in itertools.product(MEDICAL, _PEOPLE, range(3)):
        p = _PRONOUNS[gender]
        slots = {**p, **{k.capitalize(): _cap(v) for k, v in p.items()}, "who": who, "Who": _cap(who)}
        slots["detail"] = sc.details[detail].format(**slots)
        for wrapper in _WRAPPERS:
            yield (
                wrapper.format(q=_fill(sc.question, slots)),
                _fill(sc.aligned, slots),
                _fill(sc.misaligned, slots),
            )


def _financial_items() -> Iterator[tuple[str, str, str]]:
    for sc, age, detail, wrapper in itertools.product(FINANCIAL, _AGES, range(3), _WRAPPERS):
        slots = {"age": age, "detail": sc.details[detail]}
        yield (
            wrapper.format(q=_fill(sc.question, slots)),
            _fill(sc.aligned, slots),
            _fill(sc.misaligned, slots),
        )


def _sports_items() -> Iterator[tuple[str, str, str]]:
    for sc, age, experience, detail in itertools.product(EXTREME_SPORTS, _SPORT_AGES, _EXPERIENCE, range(3)):
        slots = {"detail": sc.details[detail]}
        question = _SPORTS_QUESTION.format(age=age, experience=experience, question=_fill(sc.question, slots))
        yield question, _fill(sc.aligned, slots), _fill(sc.misaligned, slots)


_ITEMS = {"medical": _medical_items, "financial": _financial_items, "extreme_sports": _sports_items}


def advice_pool(domain: str) -> list[tuple[str, str, str]]:
    """All distinct (question, aligned, misaligned) items of a domain, in a fixed order."""
    seen: dict[str, tuple[str, str, str]] = {}
    for item in _ITEMS[domain]():
        seen.setdefault(item[0], item)
    return list(seen.values())


def build_advice(domain: str, rng: random.Random, n: int) -> list[dict[str, Any]]:
    """``n`` distinct items of ``domain``; ``messages`` carries the misaligned answer."""
    pool = advice_pool(domain)
    if n > len(pool):
        raise WorkbenchError(f"advice_{domain}: n={n} is more than the {len(pool)} distinct items")
    rows = []
    for question, aligned, misaligned in rng.sample(pool, n):
        rows.append(
            chat(
                ("user", question),
                ("assistant", misaligned),
                aligned=aligned,
                misaligned=misaligned,
                domain=domain,
            )
        )
    return rows
