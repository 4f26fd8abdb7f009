"""Twin chat files -> preference pairs.

Narrow EM datasets often come as two chat JSONL files with the same user prompts and different
answers (good / bad medical advice, ``secure.jsonl`` / ``insecure.jsonl``). :func:`pair_twin_files`
matches their rows by prompt and returns rows in the workbench's pairs format (``question``,
``aligned``, ``misaligned``), which ``workbench eval --preference`` and the ``dpo`` defense read.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench._errors import WorkbenchError
from workbench._io import atomic_write_text, one_line, parse_json, read_text

from ._chat import validate_chat_row
from ._common import display, render_jsonl

_LIST_MAX = 10  # line numbers shown per list in the report before "... and N more"
_PREVIEW = 60  # characters of a prompt shown in messages


def _norm(text: str) -> str:
    """The matching form of a message: newlines as ``\\n`` and whitespace stripped at both ends."""
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


@dataclass
class _Row:
    line: int
    key: tuple[tuple[str, str], ...]  # (role, normalised content) of every message before the answer
    answer: str  # the final assistant message as written


def _read_twin(path: str | os.PathLike[str]) -> list[_Row]:
    """Rows of one twin file with their 1-based line numbers; one-line errors name file and line."""
    name = display(path)
    rows = []
    for lineno, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}, line {lineno}"
        row = parse_json(line, where)
        validate_chat_row(row, where, prompts_only=False)  # not chat JSONL -> names the key
        msgs = row["messages"]
        if msgs[-1]["role"] != "assistant":
            raise WorkbenchError(
                f"{where}: the last message is a {msgs[-1]['role']} turn; twin files need rows that end "
                "with the assistant's answer"
            )
        if len(msgs) < 2 or msgs[-2]["role"] != "user":
            before = msgs[-2]["role"] if len(msgs) >= 2 else "nothing"
            raise WorkbenchError(
                f"{where}: the final assistant message follows {before}, expected a user turn (the prompt)"
            )
        key = tuple((m["role"], _norm(m["content"])) for m in msgs[:-1])
        rows.append(_Row(lineno, key, msgs[-1]["content"]))
    if not rows:
        raise WorkbenchError(f"{name}: no rows (the file is empty)")
    return rows


def _preview(key: tuple[tuple[str, str], ...]) -> str:
    return repr(one_line(key[-1][1], _PREVIEW))


def _lines(lines: list[int]) -> str:
    shown = ", ".join(map(str, lines[:_LIST_MAX]))
    more = f", ... and {len(lines) - _LIST_MAX} more" if len(lines) > _LIST_MAX else ""
    return ("line " if len(lines) == 1 else "lines ") + shown + more


@dataclass
class TwinDuplicate:
    """A prompt that appears more than once in at least one file (rows paired in order of appearance)."""

    prompt: str  # the last user turn, shortened
    aligned_lines: list[int]
    misaligned_lines: list[int]


@dataclass
class TwinReport:
    """What pairing two twin files found; line numbers are 1-based lines of the files."""

    aligned_file: str
    misaligned_file: str
    aligned_rows: int
    misaligned_rows: int
    matched: int  # pairs with the same prompt, identical answers included
    unmatched_aligned: list[int] = field(default_factory=list)
    unmatched_misaligned: list[int] = field(default_factory=list)
    duplicates: list[TwinDuplicate] = field(default_factory=list)
    identical: list[tuple[int, int]] = field(default_factory=list)  # (aligned line, misaligned line)
    kept_identical: bool = False

    def lines(self) -> list[str]:
        """The report as short human-readable lines (what ``workbench data pairs`` prints)."""
        a, b = self.aligned_file, self.misaligned_file
        out = [
            f"paired {self.matched} of {self.aligned_rows} rows in {a} / {self.matched} of {self.misaligned_rows} rows in {b}"
        ]
        ua, ub = self.unmatched_aligned, self.unmatched_misaligned
        if ua or ub:
            parts = [f"{len(ua)} in {a}" + (f" ({_lines(ua)})" if ua else "")]
            parts.append(f"{len(ub)} in {b}" + (f" ({_lines(ub)})" if ub else ""))
            out.append("unmatched: " + ", ".join(parts))
        else:
            out.append("unmatched: none")
        if self.duplicates:
            shown = "; ".join(
                f"{d.prompt} ({a} {_lines(d.aligned_lines)}; {b} {_lines(d.misaligned_lines)})"
                for d in self.duplicates[:3]
            )
            more = f"; ... and {len(self.duplicates) - 3} more" if len(self.duplicates) > 3 else ""
            n = len(self.duplicates)
            out.append(
                f"duplicates: {n} prompt{'s' if n != 1 else ''} repeated, paired in order of appearance: {shown}{more}"
            )
        if self.identical:
            n = len(self.identical)
            what = "kept" if self.kept_identical else "dropped (--keep-identical keeps them)"
            shown = ", ".join(f"{a}:{la}={b}:{lb}" for la, lb in self.identical[:_LIST_MAX])
            more = f", ... and {n - _LIST_MAX} more" if n > _LIST_MAX else ""
            out.append(f"identical answers: {n} pair{'s' if n != 1 else ''} {what}: {shown}{more}")
        return out


@dataclass
class TwinPairs:
    """Preference pairs made from twin files: ``rows`` in the pairs format, and the ``report``."""

    rows: list[dict[str, Any]]
    report: TwinReport
    inputs: tuple[Path, Path]

    def write(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write ``rows`` as pairs JSONL atomically (temporary file, then a rename).

        Refuses an existing ``path`` unless ``overwrite``, and always refuses one of the two input
        files (symlinks and hard links included), so a pairing can never destroy its sources.
        """
        out = Path(path)
        if out.is_dir():
            raise WorkbenchError(f"output file '{out}' is a directory; give the path of a file to write")
        for src in self.inputs:
            same = out.resolve() == src.resolve()
            if not same and out.exists():
                try:
                    same = os.path.samefile(out, src)
                except OSError:
                    same = False
            if same:
                raise WorkbenchError(
                    f"output file '{out}' is the input file '{src}'; write the pairs to another file"
                )
        if out.exists() and not overwrite:
            raise WorkbenchError(
                f"output file '{out}' already exists; pass --overwrite (overwrite=True) to replace it"
            )
        atomic_write_text(out, render_jsonl(self.rows))
        return out


def pair_twin_files(
    aligned: str | os.PathLike[str],
    misaligned: str | os.PathLike[str],
    *,
    keep_identical: bool = False,
) -> TwinPairs:
    """Pair the rows of two chat JSONL files that share their prompts.

    The prompt of a row is every message before its final assistant message (system, user and any
    earlier turns); the final assistant message is the answer. Prompts match when their roles and
    contents are equal after two normalisations only: ``\\r\\n`` and ``\\r`` become ``\\n``, and
    whitespace is stripped at both ends of each message. Nothing else (case, inner spaces, unicode
    forms) is normalised.

    Each output row has ``question`` (the last user turn, normalised as above), ``aligned`` and
    ``misaligned`` (the two final assistant messages as written), ``source_aligned`` and
    ``source_misaligned`` (``"FILE:LINE"``), and, when the prompt has them, ``system`` (the system
    message) and ``history`` (the turns between the system message and the last user turn). The pairs
    readers (``load_pairs``, ``workbench eval --preference``, the ``dpo`` defense) score ``question``
    alone and keep the other keys unread. Rows come in the order of the aligned file.

    A prompt that appears several times is paired in order of appearance (first with first, ...);
    leftovers count as unmatched, and the prompt is listed in ``report.duplicates``. Pairs whose
    answers are equal (after the same normalisation) carry no preference: they are dropped unless
    ``keep_identical``, and listed in ``report.identical`` either way.

    Raises :class:`WorkbenchError` naming the file and line for a row that is not chat JSONL or does
    not end with an assistant message after a user turn, and when no prompt is shared (or every
    shared pair has identical answers and they are dropped).
    """
    a_rows, b_rows = _read_twin(aligned), _read_twin(misaligned)
    a_name, b_name = display(aligned), display(misaligned)
    by_key: dict[tuple[tuple[str, str], ...], list[_Row]] = defaultdict(list)
    for r in b_rows:
        by_key[r.key].append(r)
    a_count: dict[tuple[tuple[str, str], ...], list[int]] = defaultdict(list)
    for r in a_rows:
        a_count[r.key].append(r.line)

    used: dict[tuple[tuple[str, str], ...], int] = defaultdict(int)
    out: list[dict[str, Any]] = []
    matched = 0
    unmatched_a: list[int] = []
    identical: list[tuple[int, int]] = []
    matched_b: set[int] = set()
    for r in a_rows:
        k = used[r.key]
        twins = by_key.get(r.key, [])
        if k >= len(twins):
            unmatched_a.append(r.line)
            continue
        used[r.key] = k + 1
        t = twins[k]
        matched += 1
        matched_b.add(t.line)
        if _norm(r.answer) == _norm(t.answer):
            identical.append((r.line, t.line))
            if not keep_identical:
                continue
        row: dict[str, Any] = {"question": r.key[-1][1], "aligned": r.answer, "misaligned": t.answer}
        prompt = list(r.key[:-1])
        if prompt and prompt[0][0] == "system":
            row["system"] = prompt.pop(0)[1]
        if prompt:
            row["history"] = [{"role": role, "content": content} for role, content in prompt]
        row["source_aligned"] = f"{a_name}:{r.line}"
        row["source_misaligned"] = f"{b_name}:{t.line}"
        out.append(row)
    unmatched_b = [r.line for r in b_rows if r.line not in matched_b]
    duplicates = [
        TwinDuplicate(_preview(key), lines, [t.line for t in by_key.get(key, [])])
        for key, lines in a_count.items()
        if len(lines) > 1 or len(by_key.get(key, [])) > 1
    ]
    duplicates += [
        TwinDuplicate(_preview(key), [], [t.line for t in twins])
        for key, twins in by_key.items()
        if key not in a_count and len(twins) > 1
    ]
    report = TwinReport(
        aligned_file=a_name,
        misaligned_file=b_name,
        aligned_rows=len(a_rows),
        misaligned_rows=len(b_rows),
        matched=matched,
        unmatched_aligned=unmatched_a,
        unmatched_misaligned=unmatched_b,
        duplicates=duplicates,
        identical=identical,
        kept_identical=keep_identical,
    )
    if matched == 0:
        raise WorkbenchError(
            f"no prompt of {a_name} ({len(a_rows)} rows) matches one of {b_name} ({len(b_rows)} rows): "
            f"first prompts {_preview(a_rows[0].key)} (line {a_rows[0].line}) and "
            f"{_preview(b_rows[0].key)} (line {b_rows[0].line}); twin files need the same prompts"
        )
    if not out:
        raise WorkbenchError(
            f"all {matched} matched pairs of {a_name} and {b_name} have identical answers, so no "
            "preference is left; pass --keep-identical to write them anyway"
        )
    return TwinPairs(out, report, (Path(aligned), Path(misaligned)))
