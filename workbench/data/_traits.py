"""Trait definitions for persona-vector extraction (shipped: evil, sycophantic, hallucinating).

A trait file is JSON with ``instruction`` (a list of ``{"pos": ..., "neg": ...}`` system
instructions that elicit / suppress the trait), ``questions`` (extraction questions),
``eval_questions`` (held-out questions, disjoint from ``questions``) and ``eval_prompt`` (a 0-100
judge template with ``{question}`` and ``{answer}``). ``name`` and ``description`` are optional.
A file without ``eval_questions`` (the layout of a separate extraction file) is accepted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from workbench._errors import WorkbenchError
from workbench._io import parse_json, read_text

from ._common import display
from ._eval_yaml import fill_template

_TRAITS_DIR = "traits"


@dataclass(frozen=True)
class Trait:
    """A trait: contrastive system instructions, questions and a judge prompt."""

    name: str
    instructions: tuple[tuple[str, str], ...]  # (positive, negative) system-instruction pairs
    questions: tuple[str, ...]  # extraction questions
    eval_questions: tuple[str, ...]  # held-out evaluation questions
    judge_prompt: str  # 0-100 template with {question} and {answer}
    description: str = ""

    def judge(self, question: str, answer: str) -> str:
        """The filled judge prompt for one (question, answer)."""
        return fill_template(self.judge_prompt, question, answer)

    def to_dict(self) -> dict[str, Any]:
        """The JSON layout ``load_trait`` reads."""
        return {
            "name": self.name,
            "description": self.description,
            "instruction": [{"pos": p, "neg": n} for p, n in self.instructions],
            "questions": list(self.questions),
            "eval_questions": list(self.eval_questions),
            "eval_prompt": self.judge_prompt,
        }


def shipped_traits() -> list[str]:
    """Names of the traits shipped with the package."""
    folder = resources.files(__package__).joinpath(_TRAITS_DIR)
    return sorted(p.name[: -len(".json")] for p in folder.iterdir() if p.name.endswith(".json"))


def _strings(value: Any, key: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise WorkbenchError(f"{where}: '{key}' must be a non-empty list of strings")
    for i, v in enumerate(value):
        if not isinstance(v, str) or not v.strip():
            raise WorkbenchError(f"{where}: '{key}' item {i} must be a non-empty string, got {v!r}")
    return tuple(value)


def parse_trait(data: Any, where: str, default_name: str) -> Trait:
    """Validate trait data already parsed from JSON; ``where`` names the source in errors."""
    if not isinstance(data, dict):
        raise WorkbenchError(f"{where}: expected a JSON object, got {type(data).__name__}")
    for key in ("instruction", "questions", "eval_prompt"):
        if key not in data:
            raise WorkbenchError(f"{where}: missing key '{key}'")
    raw = data["instruction"]
    if not isinstance(raw, list) or not raw:
        raise WorkbenchError(f"{where}: 'instruction' must be a non-empty list of {{'pos', 'neg'}} objects")
    pairs = []
    for i, pair in enumerate(raw):
        if not isinstance(pair, dict):
            raise WorkbenchError(f"{where}: 'instruction' item {i} must be an object with 'pos' and 'neg'")
        for key in ("pos", "neg"):
            if key not in pair:
                raise WorkbenchError(f"{where}: 'instruction' item {i}: missing key '{key}'")
            if not isinstance(pair[key], str) or not pair[key].strip():
                raise WorkbenchError(f"{where}: 'instruction' item {i}: '{key}' must be a non-empty string")
        pairs.append((pair["pos"], pair["neg"]))
    questions = _strings(data["questions"], "questions", where)
    eval_questions = (
        _strings(data["eval_questions"], "eval_questions", where) if "eval_questions" in data else ()
    )
    shared = sorted(set(questions) & set(eval_questions))
    if shared:
        raise WorkbenchError(
            f"{where}: {len(shared)} question(s) appear in both 'questions' and 'eval_questions' "
            f"(first: {shared[0]!r}); extraction and evaluation questions must be disjoint"
        )
    prompt = data["eval_prompt"]
    if not isinstance(prompt, str):
        raise WorkbenchError(f"{where}: 'eval_prompt' must be a string")
    for placeholder in ("{question}", "{answer}"):
        if placeholder not in prompt:
            raise WorkbenchError(f"{where}: 'eval_prompt' has no '{placeholder}' placeholder")
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise WorkbenchError(f"{where}: 'name' must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise WorkbenchError(f"{where}: 'description' must be a string")
    return Trait(name, tuple(pairs), questions, eval_questions, prompt, description)


def load_trait(name_or_path: str | os.PathLike[str]) -> Trait:
    """A shipped trait by name (``evil``, ``sycophantic``, ``hallucinating``) or a trait JSON file.

    Raises :class:`WorkbenchError` naming the file and the missing or bad key, or listing the
    shipped names when ``name_or_path`` is neither a shipped name nor an existing file.
    """
    text_name = os.fspath(name_or_path)
    if text_name in shipped_traits() and not Path(text_name).exists():
        source = resources.files(__package__).joinpath(_TRAITS_DIR, f"{text_name}.json")
        where = f"{text_name} (shipped trait {source})"
        text = source.read_text(encoding="utf-8")
        default = text_name
    else:
        path = Path(text_name)
        if not path.is_file():
            raise WorkbenchError(
                f"unknown trait {text_name!r}: not a shipped trait ({', '.join(shipped_traits())}) "
                "and not an existing JSON file"
            )
        where = display(path)
        text = read_text(path)
        default = path.stem
    return parse_trait(parse_json(text, where), where, default)
