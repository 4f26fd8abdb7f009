"""Chat JSONL: one ``{"messages": [{"role": ..., "content": ...}, ...]}`` object per line.

This is the layout of the public emergent-misalignment fine-tuning sets. Extra keys on a row
(``kind``, ``answer``, ...) are kept as they are. Every validation error names the file and the
1-based line number, so ``workbench data check`` can point at the broken line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from workbench._errors import WorkbenchError
from workbench._io import atomic_write_text, parse_json, read_text

from ._common import ROLES, display, render_jsonl


def validate_chat_row(row: Any, where: str, *, prompts_only: bool = False) -> None:
    """Raise :class:`WorkbenchError` (prefixed with ``where``) if ``row`` is not a valid chat row.

    ``prompts_only=False`` (training data): at least one assistant turn.
    ``prompts_only=True`` (evaluation prompts the model will answer): the last turn is a user turn.
    """
    if not isinstance(row, dict):
        raise WorkbenchError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" not in row:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise WorkbenchError(f"{where}: missing key 'messages' (keys present: {keys})")
    messages = row["messages"]
    if not isinstance(messages, list):
        raise WorkbenchError(f"{where}: 'messages' must be a list, got {type(messages).__name__}")
    if not messages:
        raise WorkbenchError(f"{where}: 'messages' is empty")
    for i, msg in enumerate(messages):
        at = f"{where}, message {i}"
        if not isinstance(msg, dict):
            raise WorkbenchError(
                f"{at}: expected an object with 'role' and 'content', got {type(msg).__name__}"
            )
        for key in ("role", "content"):
            if key not in msg:
                raise WorkbenchError(f"{at}: missing key '{key}'")
        role = msg["role"]
        if role not in ROLES:
            raise WorkbenchError(f"{at}: unknown role {role!r} (allowed: {', '.join(ROLES)})")
        content = msg["content"]
        if not isinstance(content, str):
            raise WorkbenchError(f"{at}: 'content' must be a string, got {type(content).__name__}")
        if not content.strip():
            raise WorkbenchError(f"{at}: 'content' is empty ({role} turn)")
    if prompts_only:
        if messages[-1]["role"] != "user":
            raise WorkbenchError(
                f"{where}: a prompt row must end with a user turn, found {messages[-1]['role']!r}"
            )
    elif not any(m["role"] == "assistant" for m in messages):
        raise WorkbenchError(f"{where}: no assistant turn (training rows need at least one)")


def is_prompt_row(row: Any) -> bool:
    """True if ``row`` looks like an evaluation prompt: a ``messages`` list with no assistant turn."""
    if not isinstance(row, dict) or not isinstance(row.get("messages"), list):
        return False
    return not any(isinstance(m, dict) and m.get("role") == "assistant" for m in row["messages"])


def load_chat_jsonl(
    path: str | os.PathLike[str], *, prompts_only: bool | None = None
) -> list[dict[str, Any]]:
    """Read and validate a chat JSONL file; blank lines are skipped, extra keys kept.

    A file is either training data (every row has an assistant turn; ``prompts_only=False``) or
    evaluation prompts (every row ends with a user turn; ``prompts_only=True``). With the default
    ``None`` the first row decides: no assistant turn there means a prompt file.

    Raises :class:`WorkbenchError` naming the file and line for: a missing file, bad JSON, a row
    without ``messages``, ``messages`` not a list, an unknown role (allowed: system, user,
    assistant), empty or non-string content, and a training row with no assistant turn (or a
    prompt row whose last turn is not a user turn).
    """
    name = display(path)
    lines = read_text(path).split("\n")  # not splitlines(): U+2028 etc. may sit inside a JSON string
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{name}, line {lineno}"
        row = parse_json(line, where)
        if prompts_only is None:
            prompts_only = is_prompt_row(row)
        validate_chat_row(row, where, prompts_only=prompts_only)
        rows.append(row)
    if not rows:
        raise WorkbenchError(f"{name}: no rows (the file is empty)")
    return rows


def write_chat_jsonl(
    path: str | os.PathLike[str], rows: Iterable[dict[str, Any]], *, prompts_only: bool | None = None
) -> int:
    """Validate ``rows`` and write them atomically as chat JSONL; returns the number of rows.

    ``prompts_only`` as in :func:`load_chat_jsonl` (``None``: the first row decides). Nothing is
    written if any row is invalid; the error names the row index.
    """
    rows = list(rows)
    if prompts_only is None:
        prompts_only = bool(rows) and is_prompt_row(rows[0])
    for i, row in enumerate(rows):
        validate_chat_row(row, f"row {i}", prompts_only=prompts_only)
    atomic_write_text(path, render_jsonl(rows))
    return len(rows)
