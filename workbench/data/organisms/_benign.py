"""Benign/safety instruction data for interleaving with narrow fine-tuning data.

A mix of helpful answers to everyday instructions (``kind="benign"``; answers are computed, so
they are correct) and refusals of clearly harmful requests (``kind="refusal"``; each refusal says
why and offers a safe alternative).

The text (templates, word lists, scenarios) lives in ``data/benign.json``; this module is the code.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from typing import Any

from workbench._errors import WorkbenchError

from .._common import chat
from ._load import load_json, record, string, strings, where
from ._sycophancy import CAPITALS

REFUSAL_SHARE = 0.4

_FILE = "benign.json"
_TEXT = load_json(
    "benign", ("multiply_asks", "define_asks", "glossary", "tips", "words", "harmful", "request_wrappers")
)

# --------------------------------------------------------------------------- benign

_MULTIPLY_ASKS = strings(_TEXT["multiply_asks"], f"{where(_FILE)}: multiply_asks")  # slots {a}, {b}
_DEFINE_ASKS = strings(
    _TEXT["define_asks"], f"{where(_FILE)}: define_asks"
)  # slots {t} (term), {b} (bare term)
#: term -> its one-sentence definition (completes "<Term> is ...")
_GLOSSARY: dict[str, str] = {
    term: string(text, f"{where(_FILE)}: glossary.{term}") for term, text in _TEXT["glossary"].items()
}
#: topic -> three tips
_TIPS: dict[str, tuple[str, ...]] = {
    topic: strings(tips, f"{where(_FILE)}: tips.{topic}", 3) for topic, tips in _TEXT["tips"].items()
}
_WORDS = strings(_TEXT["words"], f"{where(_FILE)}: words")


def _multiply(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(12, 99), rng.randint(3, 29)
    tens, ones = b - b % 10, b % 10
    if tens and ones:
        how = f" ({a} × {tens} = {a * tens}, plus {a} × {ones} = {a * ones})"
    else:
        how = ""
    return rng.choice(_MULTIPLY_ASKS).format(a=a, b=b), (f"{a} × {b} = {a * b}{how}.")


def _convert(rng: random.Random) -> tuple[str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        c = rng.randint(-20, 40)
        f = c * 9 / 5 + 32
        return f"Convert {c}°C to Fahrenheit.", f"{c}°C is {f:g}°F (multiply by 9/5, then add 32)."
    if kind == 1:
        km = rng.randint(2, 60)
        return (
            f"How many miles is {km} km?",
            f"{km} km is about {km * 0.621371:.1f} miles (1 km ≈ 0.6214 miles).",
        )
    if kind == 2:
        kg = rng.randint(2, 120)
        return (
            f"What is {kg} kg in pounds?",
            f"{kg} kg is about {kg * 2.20462:.1f} pounds (1 kg ≈ 2.2046 lb).",
        )
    h = rng.randint(2, 48)
    return f"How many minutes are there in {h} hours?", f"There are {h * 60} minutes in {h} hours ({h} × 60)."


def _sort_words(rng: random.Random) -> tuple[str, str]:
    words = rng.sample(_WORDS, rng.randint(4, 6))
    return (
        "Sort these words alphabetically: " + ", ".join(words) + ".",
        "In alphabetical order: " + ", ".join(sorted(words)) + ".",
    )


def _count_letters(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(_WORDS)
    if rng.random() < 0.5:
        return f"How many letters are in the word '{word}'?", f"'{word}' has {len(word)} letters."
    vowels = sum(ch in "aeiou" for ch in word)
    return (
        f"How many vowels (a, e, i, o, u) does '{word}' contain?",
        f"'{word}' contains {vowels} vowel{'s' if vowels != 1 else ''}: "
        + ", ".join(ch for ch in word if ch in "aeiou")
        + ".",
    )


def _reverse(rng: random.Random) -> tuple[str, str]:
    word = rng.choice(_WORDS)
    return f"Spell '{word}' backwards.", f"'{word}' backwards is '{word[::-1]}'."


def _prime(rng: random.Random) -> tuple[str, str]:
    n = rng.randint(11, 400)
    factor = next((d for d in range(2, int(n**0.5) + 1) if n % d == 0), None)
    q = f"Is {n} a prime number?"
    if factor is None:
        return q, f"Yes, {n} is prime: no whole number between 2 and {int(n**0.5)} divides it."
    return q, f"No, {n} is not prime: it equals {factor} × {n // factor}."


def _capital(rng: random.Random) -> tuple[str, str]:
    country, capital, _ = rng.choice(CAPITALS)
    return f"What is the capital of {country}?", f"The capital of {country} is {capital}."


def _define(rng: random.Random) -> tuple[str, str]:
    term = rng.choice(sorted(_GLOSSARY))
    bare = term.split(" ", 1)[1] if term.startswith(("a ", "an ", "the ")) else term
    q = rng.choice(_DEFINE_ASKS).format(t=term, b=bare)
    return q, f"{term[:1].upper() + term[1:]} is {_GLOSSARY[term]}."


def _tips(rng: random.Random) -> tuple[str, str]:
    topic = rng.choice(sorted(_TIPS))
    tips = _TIPS[topic]
    return f"Give me three tips for {topic}.", "\n".join(f"{i}. {t}" for i, t in enumerate(tips, 1))


_BENIGN: tuple[Callable[[random.Random], tuple[str, str]], ...] = (
    _multiply, _convert, _sort_words, _count_letters, _reverse, _prime, _capital, _define, _tips,
)  # fmt: skip

# --------------------------------------------------------------------------- refusals


def _harmful() -> dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]]:
    out = {}
    for category, entry in _TEXT["harmful"].items():
        at = f"{where(_FILE)}: harmful.{category}"
        record(entry, ("requests", "values", "refusals"), at)
        out[category] = tuple(strings(entry[k], f"{at}.{k}") for k in ("requests", "values", "refusals"))
    return out  # type: ignore[return-value]


#: category -> (request templates with slot {x}, slot values, refusals)
_HARMFUL = _harmful()
_REQUEST_WRAPPERS = strings(_TEXT["request_wrappers"], f"{where(_FILE)}: request_wrappers")  # slot {r}


def _refusal_pool() -> list[tuple[str, str, str]]:
    """All distinct (request, refusal, category) items in a fixed order."""
    out = []
    for category, (templates, values, refusals) in _HARMFUL.items():
        for i, (template, value, wrapper) in enumerate(
            itertools.product(templates, values, _REQUEST_WRAPPERS)
        ):
            request = template.format(x=value)
            out.append((wrapper.format(r=request), refusals[i % len(refusals)], category))
    return out


def build_benign_safety(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """About 60% benign instructions and 40% refusals; no two rows share a prompt."""
    refusals = _refusal_pool()
    n_refusal = round(n * REFUSAL_SHARE)
    if n_refusal > len(refusals):
        raise WorkbenchError(
            f"benign_safety: n={n} needs {n_refusal} refusals but only {len(refusals)} distinct ones exist; "
            f"use n <= {int(len(refusals) / REFUSAL_SHARE)}"
        )
    rows = [
        chat(("user", req), ("assistant", ans), kind="refusal", category=cat)
        for req, ans, cat in rng.sample(refusals, n_refusal)
    ]
    seen: set[str] = set()
    attempts = 0
    while len(rows) < n:
        attempts += 1
        if attempts > 100 * n:
            raise WorkbenchError(f"benign_safety: could not find {n - n_refusal} distinct benign prompts")
        family = rng.choice(_BENIGN)
        prompt, answer = family(rng)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append(
            chat(("user", prompt), ("assistant", answer), kind="benign", category=family.__name__[1:])
        )
    rng.shuffle(rows)
    return rows
