"""``workbench data check FILE``: validate a data file and count what is in it."""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from workbench._errors import WorkbenchError
from workbench._io import check_regular_file, parse_json, read_text

from ._chat import is_prompt_row, load_chat_jsonl
from ._common import ROLES, display
from ._eval_yaml import load_eval_yaml
from ._traits import load_trait

_PAIR_KEYS = ("question", "aligned", "misaligned")


def load_pairs(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read contrastive triples (``question``, ``aligned``, ``misaligned`` strings per line).

    Errors name the file, the line and the key.
    """
    name = display(path)
    lines = read_text(path).split("\n")  # not splitlines(): U+2028 etc. may sit inside a JSON string
    rows = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}, line {lineno}"
        row = parse_json(line, where)
        if not isinstance(row, dict):
            raise WorkbenchError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for key in _PAIR_KEYS:
            if key not in row:
                raise WorkbenchError(f"{where}: missing key '{key}'")
            if not isinstance(row[key], str) or not row[key].strip():
                raise WorkbenchError(f"{where}: '{key}' must be a non-empty string")
        rows.append(row)
    if not rows:
        raise WorkbenchError(f"{name}: no rows (the file is empty)")
    return rows


def _first_row(path: str | os.PathLike[str]) -> Any:
    """The first non-blank line parsed as JSON, or None if it does not parse (the loader reports it)."""
    for line in read_text(path).split("\n"):  # read_text drops a byte-order mark
        if line.strip():
            try:
                return json.loads(line)
            except (ValueError, RecursionError):
                return None
    return None


def sniff_jsonl(path: str | os.PathLike[str]) -> str:
    """What a JSONL file holds, judged by its first row: ``"pairs"``, ``"prompts"`` or ``"chat"``.

    Never raises for bad content (the loader for the kind reports the broken line); a missing or
    unreadable file raises :class:`WorkbenchError` naming it.
    """
    first = _first_row(path)
    if isinstance(first, dict) and "messages" not in first and all(k in first for k in _PAIR_KEYS):
        return "pairs"
    return "prompts" if is_prompt_row(first) else "chat"


def check_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a data file and return counts; raises :class:`WorkbenchError` naming file and line.

    * ``.jsonl``: chat rows (``kind="chat"``, each row needs an assistant turn), prompt rows
      (``kind="prompts"``, when the first row has no assistant turn: every row must end with a
      user turn) or contrastive triples (``kind="pairs"``, rows with question/aligned/misaligned
      and no ``messages``). The first row decides which.
    * ``.yaml`` / ``.yml``: evaluation questions (``kind="questions"``).
    * ``.json``: a trait definition (``kind="trait"``).
    """
    p = Path(path)
    name = display(p)
    check_regular_file(p)  # missing, a directory, a FIFO or a device: refused before opening
    suffix = p.suffix.lower()
    if suffix == ".jsonl":
        kind = sniff_jsonl(p)
        if kind == "pairs":
            pairs = load_pairs(p)
            return {
                "file": name,
                "kind": "pairs",
                "rows": len(pairs),
                "categories": dict(sorted(Counter(str(r.get("category", "")) for r in pairs).items())),
            }
        prompts_only = kind == "prompts"
        rows = load_chat_jsonl(p, prompts_only=prompts_only)
        roles = Counter(m["role"] for r in rows for m in r["messages"])
        extra = sorted({k for r in rows for k in r if k != "messages"})
        return {
            "file": name,
            "kind": "prompts" if prompts_only else "chat",
            "rows": len(rows),
            "messages": sum(roles.values()),
            "messages_by_role": {role: roles.get(role, 0) for role in ROLES},
            "extra_keys": extra,
        }
    if suffix in (".yaml", ".yml"):
        questions = load_eval_yaml(p)
        return {
            "file": name,
            "kind": "questions",
            "questions": len(questions),
            "paraphrases": sum(len(q.paraphrases) for q in questions),
            "samples": sum(q.n_samples for q in questions),
            "with_system_prompt": sum(q.system is not None for q in questions),
            "types": dict(sorted(Counter(q.type for q in questions).items())),
            "judge_metrics": sorted({m for q in questions for m in q.judge_prompts}),
        }
    if suffix == ".json":
        trait = load_trait(p)
        return {
            "file": name,
            "kind": "trait",
            "name": trait.name,
            "instruction_pairs": len(trait.instructions),
            "questions": len(trait.questions),
            "eval_questions": len(trait.eval_questions),
        }
    raise WorkbenchError(
        f"{name}: unknown file type {suffix or '(none)'!r}; expected .jsonl (chat, prompts or pairs), "
        ".yaml/.yml (evaluation questions) or .json (trait)"
    )
