"""Atomic file writes (temporary file in the same folder, then a rename over the target) and the readers
of user-supplied files (regular files only, UTF-8, one-line errors naming the file)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:
    from ._errors import WorkbenchError
except ImportError:  # loaded on its own from its path (the kill tests do, to start fast): no package

    class WorkbenchError(Exception):  # type: ignore[no-redef]
        """Stand-in for ``workbench.WorkbenchError`` when this file is loaded outside the package."""


class WriteError(WorkbenchError, OSError):
    """Writing a file failed (disk full, permission denied, ...); names the file.

    Both a :class:`WorkbenchError` (the CLI prints one ``error:`` line) and an :class:`OSError` (with the
    original ``errno`` and ``strerror``), so code that catches ``OSError`` keeps working.
    """

    def __str__(self) -> str:
        return f"cannot write '{self.filename}': {self.strerror}"


def _write_error(path: str | os.PathLike[str], exc: OSError) -> WriteError:
    if isinstance(exc, WriteError):
        return exc
    err = WriteError(exc.errno, exc.strerror or one_line(str(exc), 200))
    err.filename = str(path)
    return err


@contextlib.contextmanager
def _naming_the_file(path: str | os.PathLike[str]) -> Iterator[None]:
    """Re-raise an ``OSError`` (ENOSPC, EACCES, ...) as a :class:`WriteError` that names ``path``."""
    try:
        yield
    except OSError as exc:
        raise _write_error(path, exc) from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    On an exception (or a kill) the target is untouched: either the old file or nothing.
    An ``OSError`` while writing (a full disk, no permission) becomes a :class:`WriteError` naming ``path``.
    """
    target = Path(path)
    with _naming_the_file(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give results the usual permissions
    tmp_path = Path(tmp)
    try:
        with _naming_the_file(target):
            yield tmp_path
            with open(tmp_path, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp_path, target)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


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
    data = "".join(json.dumps(row, default=str) + "\n" for row in rows).encode("utf-8")
    with _naming_the_file(p):
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "a+b") as fh:
            if fh.seek(0, os.SEEK_END) > 0:
                fh.seek(-1, os.SEEK_END)
                if fh.read(1) != b"\n":
                    data = b"\n" + data
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


_NOT_REGULAR = (
    (stat.S_ISDIR, "is a directory, expected a file"),
    (stat.S_ISFIFO, "is a named pipe (FIFO), expected a regular file"),
    (stat.S_ISCHR, "is a character device, expected a regular file"),
    (stat.S_ISBLK, "is a block device, expected a regular file"),
    (stat.S_ISSOCK, "is a socket, expected a regular file"),
)


def check_regular_file(path: str | os.PathLike[str]) -> Path:
    """``path`` if it is a regular file (symlinks followed); else a :class:`WorkbenchError` naming it.

    Checked before opening: reading a FIFO blocks until a writer appears and ``/dev/zero`` never ends.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise WorkbenchError(f"{p}: file not found") from None
    except PermissionError:
        raise WorkbenchError(f"{p}: permission denied") from None
    except (OSError, ValueError) as exc:  # a name too long, a loop of symlinks, a NUL byte in the path
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else one_line(str(exc), 120)
        raise WorkbenchError(f"{p}: cannot be read ({why})") from None
    if not stat.S_ISREG(mode):
        why = next((text for test, text in _NOT_REGULAR if test(mode)), "is not a regular file")
        raise WorkbenchError(f"{p}: {why}")
    return p


def read_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of a user-supplied file, without a leading byte-order mark (U+FEFF).

    Raises :class:`WorkbenchError` naming the file when it is missing, not a regular file (a directory,
    a FIFO, a device: refused before opening), unreadable or not UTF-8.
    """
    p = check_regular_file(path)
    try:
        text = p.read_text(encoding="utf-8")
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
    return text[1:] if text.startswith("\ufeff") else text


# a JSON escape of a UTF-16 surrogate (\ud800-\udfff); "\\ud800" (an escaped backslash) also matches,
# which only costs a check
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF]")


def lone_surrogate(obj: Any) -> str | None:
    """The first string (or key) in ``obj`` holding a lone UTF-16 surrogate, or None.

    Such strings come from escapes like ``"\\ud800"``; they are valid JSON but not Unicode, so they
    cannot be written as UTF-8 and crash every later command that saves or tokenizes them.
    """
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, str):
            try:
                x.encode("utf-8")
            except UnicodeEncodeError:
                return x
        elif isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, list | tuple):
            stack.extend(x)
    return None


def _surrogate_message(text: str) -> str:
    bad = next((c for c in text if 0xD800 <= ord(c) <= 0xDFFF), "?")
    return f"a string holds the lone UTF-16 surrogate \\u{ord(bad):04x}, which is not valid Unicode"


def parse_json(text: str, where: str) -> Any:
    """``json.loads`` with a one-line :class:`WorkbenchError` naming ``where`` (and the line, for a file).

    Also catches what ``json`` raises besides ``JSONDecodeError``: integers longer than Python's
    digit limit (``ValueError``) and nesting too deep for the parser (``RecursionError``). Strings with a
    lone UTF-16 surrogate (``"\\ud800"``: valid JSON, not Unicode) are refused too; escaped surrogate
    pairs (``"\\ud83d\\ude00"``) are fine.
    """
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f", line {exc.lineno}" if "\n" in text.strip() else ""
        raise WorkbenchError(f"{where}{at}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise WorkbenchError(f"{where}: invalid JSON (nested too deeply)") from None
    except ValueError as exc:  # e.g. an integer with more digits than int() accepts
        raise WorkbenchError(f"{where}: invalid JSON ({one_line(str(exc), 120)})") from None
    if _SURROGATE_ESCAPE.search(text):
        bad = lone_surrogate(obj)
        if bad is not None:
            raise WorkbenchError(f"{where}: invalid text ({_surrogate_message(bad)})")
    return obj


def one_line(text: str, limit: int = 300) -> str:
    """``text`` with whitespace runs collapsed to single spaces, cut to ``limit`` characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class _DuplicateKey(Exception):
    def __init__(self, key: Any, first: int, again: int) -> None:
        super().__init__(key, first, again)
        self.key, self.first, self.again = key, first, again


@functools.lru_cache(maxsize=1)
def _yaml_loader() -> type:
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (plain YAML keeps the last one,
    silently) and strings with a lone UTF-16 surrogate; an escaped surrogate pair becomes its character."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:  # the node's own keys: a '<<' merge may be overridden
                    if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                        continue
                    key, line = self.construct_object(key_node), key_node.start_mark.line + 1
                    try:
                        if key in seen:
                            raise _DuplicateKey(key, seen[key], line)
                        seen[key] = line
                    except TypeError:  # unhashable: construct_mapping reports it
                        continue
            return super().construct_mapping(node, deep=deep)

        def construct_scalar(self, node: Any) -> Any:
            value = super().construct_scalar(node)
            if isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value):
                try:  # "\\ud83d\\ude00" (a JSON-style escaped pair) is one character
                    return value.encode("utf-16", "surrogatepass").decode("utf-16")
                except UnicodeDecodeError:
                    raise yaml.constructor.ConstructorError(
                        None, None, _surrogate_message(value), node.start_mark
                    ) from None
            return value

    return Loader


def load_yaml_value(text: str) -> Any:
    """``yaml.safe_load`` with the duplicate-key check of :func:`_yaml_loader` (raises ``_DuplicateKey`` and
    PyYAML's own errors; :func:`parse_yaml` turns them into one-line errors)."""
    loader = _yaml_loader()(text)  # a SafeLoader subclass: no object construction
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with a one-line error naming ``where`` and the line of a syntax error.

    Stricter than ``safe_load``: a key given twice in one mapping is an error naming the key and both
    lines, and a string with a lone UTF-16 surrogate (``"\\ud800"``) is an error naming its line.
    """
    import yaml

    try:
        return load_yaml_value(text)
    except _DuplicateKey as exc:
        shown = repr(exc.key) if len(repr(exc.key)) <= 60 else repr(exc.key)[:57] + "..."
        raise WorkbenchError(
            f"{where}, line {exc.again}: duplicate key {shown} (first given at line {exc.first}); "
            "YAML would silently keep the last one, remove one of them"
        ) from None
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
