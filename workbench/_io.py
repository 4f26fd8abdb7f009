"""Atomic file writes: write to a temporary file in the same folder, then rename over the target."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    On an exception (or a kill) the target is untouched: either the old file or nothing.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give results the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def append_jsonl(path: str | os.PathLike[str], row: dict[str, Any]) -> None:
    """Append one JSON row and flush it to disk (rows already written are never rewritten).

    If the file ends in a line torn by a kill mid-write, the row starts on a fresh line, so the torn
    fragment stays one unreadable line (which readers skip) instead of swallowing this row.
    """
    append_jsonl_rows(path, [row])


def append_jsonl_rows(path: str | os.PathLike[str], rows: list[dict[str, Any]]) -> None:
    """Append several JSON rows with one write and one ``fsync`` (see :func:`append_jsonl`)."""
    if not rows:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode("utf-8")
    with open(p, "a+b") as fh:
        if fh.seek(0, os.SEEK_END) > 0:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                data = b"\n" + data
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def read_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of a user-supplied file.

    Raises :class:`WorkbenchError` naming the file when it is missing, a directory, unreadable or not UTF-8.
    """
    from ._errors import WorkbenchError

    p = Path(path)
    try:
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkbenchError(f"{p}: file not found") from None
    except IsADirectoryError:
        raise WorkbenchError(f"{p}: is a directory, expected a file") from None
    except PermissionError:
        raise WorkbenchError(f"{p}: permission denied") from None
    except UnicodeDecodeError as exc:
        raise WorkbenchError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise WorkbenchError(f"{p}: cannot be read ({exc.strerror or type(exc).__name__})") from None


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with a one-line :class:`WorkbenchError` naming ``where`` (and the line, for a file).

    Also catches what ``json`` raises besides ``JSONDecodeError``: integers longer than Python's
    digit limit (``ValueError``) and nesting too deep for the parser (``RecursionError``).
    """
    from ._errors import WorkbenchError

    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f", line {exc.lineno}" if "\n" in text.strip() else ""
        raise WorkbenchError(f"{where}{at}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise WorkbenchError(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer with more digits than int() accepts
        raise WorkbenchError(f"{where}: invalid JSON ({one_line(str(exc), 120)})") from None


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with whitespace runs collapsed to single spaces, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with a one-line error naming ``where`` and the line of a syntax error."""
    import yaml

    from ._errors import WorkbenchError

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["?"])[0]
        raise WorkbenchError(f"{where}{at}: invalid YAML ({one_line(problem, 120)})") from None
    except RecursionError:
        raise WorkbenchError(f"{where}: invalid YAML (nested too deeply)") from None
    except (ValueError, OverflowError, TypeError) as exc:
        # values the YAML constructors cannot build: a date like 2024-13-45, an int past Python's digit limit
        raise WorkbenchError(f"{where}: invalid YAML value ({one_line(str(exc), 120)})") from None
