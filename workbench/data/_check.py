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
from ._gcd import gcd_counts, is_gcd_row, load_gcd_jsonl
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
        _check_pair_context(row, where)
        rows.append(row)
    if not rows:
        raise WorkbenchError(f"{name}: no rows (the file is empty)")
    return rows


def _check_pair_context(row: dict[str, Any], where: str) -> None:
    """The optional ``system`` (a string) and ``history`` (earlier turns) of a pairs row."""
    if row.get("system") is not None and not isinstance(row["system"], str):
        raise WorkbenchError(f"{where}: 'system' must be a string or null")
    history = row.get("history")
    if history is None:
        return
    if not isinstance(history, list):
        raise WorkbenchError(f"{where}: 'history' must be a list of {{role, content}} messages")
    for i, m in enumerate(history):
        if (
            not isinstance(m, dict)
            or m.get("role") not in ("user", "assistant")
            or not isinstance(m.get("content"), str)
        ):
            raise WorkbenchError(
                f"{where}: 'history' item {i} must be {{'role': 'user' | 'assistant', 'content': str}}"
            )


def pair_prompt(row: dict[str, Any]) -> str | list[dict[str, str]]:
    """The chat prompt a pairs row's answers follow: its ``question`` alone, or, when the row carries a
    ``system`` message or a ``history`` of earlier turns (as ``workbench data pairs`` writes them for
    multi-turn twin files), the message list system + history + the question as the last user turn."""
    system, history = row.get("system"), row.get("history") or []
    if not system and not history:
        return row["question"]
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [dict(m) for m in history] + [{"role": "user", "content": row["question"]}]


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
    """What a JSONL file holds, judged by its first row: ``"pairs"``, ``"gcd"`` (selective-generalization
    GCD rows: ``messages`` with ``label``, ``_id`` and ``user_provides_answer``), ``"prompts"`` or ``"chat"``.

    Never raises for bad content (the loader for the kind reports the broken line); a missing or
    unreadable file raises :class:`WorkbenchError` naming it.
    """
    first = _first_row(path)
    if isinstance(first, dict) and "messages" not in first and all(k in first for k in _PAIR_KEYS):
        return "pairs"
    if is_gcd_row(first):
        return "gcd"
    return "prompts" if is_prompt_row(first) else "chat"


_SYCOPHANCY_KINDS = ("plain", "correct", "incorrect")


def _kind_counts(rows: list[dict[str, Any]]) -> str:
    n = Counter(r.get("kind") for r in rows)
    return " / ".join(f"{n[k]} {k}" for k in _SYCOPHANCY_KINDS)


def _names(values: Any, limit: int = 8) -> str:
    values = list(values)
    shown = ", ".join(map(str, values[:limit]))
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _jsonl_format(kind: str, rows: list[dict[str, Any]]) -> str:
    """The name of the format of chat / prompt rows, as ``workbench eval`` would read them."""
    first = rows[0]
    if first.get("kind") in _SYCOPHANCY_KINDS and "problem_id" in first:
        cats = sorted({str(r.get("category", "all")) for r in rows})
        return f"workbench sycophancy rows ({_kind_counts(rows)}; categories: {_names(cats)})"
    if kind == "prompts":
        if "answer" in first:
            return "exact-answer set (prompts with 'answer', scored by exact match)"
        return "chat JSONL prompts (user turns to answer)"
    fmt = "chat JSONL (Betley / model-organisms training format)"
    if "answer" in first:
        fmt += "; rows carry 'answer', so `workbench eval` reads it as an exact-answer set"
    return fmt


def check_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a data file and return counts; raises :class:`WorkbenchError` naming file and line.

    * ``.jsonl``: chat rows (``kind="chat"``, each row needs an assistant turn), prompt rows
      (``kind="prompts"``, when the first row has no assistant turn: every row must end with a
      user turn), contrastive triples (``kind="pairs"``, rows with question/aligned/misaligned
      and no ``messages``) or selective-generalization GCD rows (``kind="gcd"``, read as sycophancy
      rows). The first row decides which.
    * ``.yaml`` / ``.yml``: evaluation questions (``kind="questions"``).
    * ``.json``: a trait definition (``kind="trait"``).

    ``format`` names the format recognised, in words (e.g. "chat JSONL (Betley / model-organisms
    training format)", "selective-generalization GCD rows (sycophancy: ...)").
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
                "format": "preference pairs (question / aligned / misaligned)",
                "rows": len(pairs),
                "categories": dict(sorted(Counter(str(r.get("category", "")) for r in pairs).items())),
            }
        if kind == "gcd":
            gcd = load_gcd_jsonl(p)
            counts = gcd_counts(gcd)
            return {
                "file": name,
                "kind": "gcd",
                "format": (
                    f"selective-generalization GCD rows (sycophancy: {_kind_counts(gcd)}; "
                    f"labels: {_names(counts['labels'])})"
                ),
                "rows": len(gcd),
                **counts,
            }
        prompts_only = kind == "prompts"
        rows = load_chat_jsonl(p, prompts_only=prompts_only)
        roles = Counter(m["role"] for r in rows for m in r["messages"])
        extra = sorted({k for r in rows for k in r if k != "messages"})
        return {
            "file": name,
            "kind": "prompts" if prompts_only else "chat",
            "format": _jsonl_format(kind, rows),
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
            "format": (
                "EM question YAML (Betley / model-organisms; judge metrics: "
                f"{', '.join(sorted({m for q in questions for m in q.judge_prompts})) or 'none'})"
            ),
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
            "format": "persona_vectors trait JSON",
            "name": trait.name,
            "instruction_pairs": len(trait.instructions),
            "questions": len(trait.questions),
            "eval_questions": len(trait.eval_questions),
        }
    raise WorkbenchError(
        f"{name}: unknown file type {suffix or '(none)'!r}; expected .jsonl (chat, prompts or pairs), "
        ".yaml/.yml (evaluation questions) or .json (trait)"
    )
