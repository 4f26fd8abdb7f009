"""Reading the organisms' package data: the templates and word lists under ``organisms/data/``.

Each generator keeps its text in one JSON file (``advice.json``, ...); long multi-line prompts are
plain text files (``em_judge_aligned.txt``; the file's final newline is not part of the text).
Files are read once with :mod:`importlib.resources` (so they work from a wheel or a zip) and
cached. A missing or malformed file raises :class:`WorkbenchError` naming the file and the key.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources
from typing import TYPE_CHECKING, Any

from workbench._errors import WorkbenchError

if TYPE_CHECKING:  # importlib.resources.abc is Python >= 3.11
    from importlib.resources.abc import Traversable

DATA_DIR = "data"


def _source(filename: str) -> Traversable:
    return resources.files(__package__).joinpath(DATA_DIR, filename)


def where(filename: str) -> str:
    """How a data file is named in error messages."""
    return f"workbench/data/organisms/{DATA_DIR}/{filename}"


def _read(filename: str) -> str:
    source = _source(filename)
    if not source.is_file():
        raise WorkbenchError(f"{where(filename)}: package data file missing (reinstall em-workbench)")
    return source.read_text(encoding="utf-8")


def data_files() -> list[str]:
    """The file names under ``organisms/data/``, sorted."""
    folder = resources.files(__package__).joinpath(DATA_DIR)
    return sorted(p.name for p in folder.iterdir() if p.name.endswith((".json", ".txt")))


@functools.cache
def _parsed(name: str) -> Any:
    filename = f"{name}.json"
    try:
        return json.loads(_read(filename))
    except json.JSONDecodeError as err:
        raise WorkbenchError(
            f"{where(filename)}: line {err.lineno} column {err.colno}: not valid JSON ({err.msg})"
        ) from None


def load_json(name: str, keys: Sequence[str]) -> dict[str, Any]:
    """The object in ``data/<name>.json``; it must hold exactly ``keys`` (no key missing, none extra).

    The returned object is shared (cached): callers build their own structures from it and never
    change it.
    """
    data = _parsed(name)
    filename = f"{name}.json"
    if not isinstance(data, dict):
        raise WorkbenchError(f"{where(filename)}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in keys if k not in data]
    if missing:
        raise WorkbenchError(
            f"{where(filename)}: missing key '{missing[0]}' (expected keys: {', '.join(keys)})"
        )
    extra = [k for k in data if k not in keys]
    if extra:
        raise WorkbenchError(
            f"{where(filename)}: unknown key '{extra[0]}' (expected keys: {', '.join(keys)})"
        )
    return data


@functools.cache
def load_text(name: str) -> str:
    """The text of ``data/<name>.txt`` without its final newline."""
    text = _read(f"{name}.txt")
    return text[:-1] if text.endswith("\n") else text


def string(value: Any, where_: str) -> str:
    """``value`` checked to be a non-empty string."""
    if not isinstance(value, str) or not value:
        raise WorkbenchError(f"{where_}: expected a non-empty string, got {json.dumps(value)[:60]}")
    return value


def strings(value: Any, where_: str, length: int | None = None) -> tuple[str, ...]:
    """``value`` as a tuple of strings (``length`` of them when given), or a WorkbenchError naming ``where_``."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise WorkbenchError(f"{where_}: expected a list of strings, got {json.dumps(value)[:60]}")
    if length is not None and len(value) != length:
        raise WorkbenchError(f"{where_}: expected {length} strings, got {len(value)}")
    if not value:
        raise WorkbenchError(f"{where_}: expected a non-empty list of strings")
    return tuple(value)


def record(value: Any, fields: Sequence[str], where_: str) -> dict[str, Any]:
    """``value`` checked to be an object with exactly ``fields``."""
    if not isinstance(value, dict) or set(value) != set(fields):
        got = sorted(value) if isinstance(value, dict) else type(value).__name__
        raise WorkbenchError(f"{where_}: expected an object with keys {', '.join(fields)}, got {got}")
    return value


def records(value: Any, fields: Sequence[str], where_: str) -> list[dict[str, Any]]:
    """A non-empty list of objects, each with exactly ``fields``."""
    if not isinstance(value, list) or not value:
        raise WorkbenchError(f"{where_}: expected a non-empty list of objects")
    return [record(v, fields, f"{where_}[{i}]") for i, v in enumerate(value)]
