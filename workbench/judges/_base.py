"""The judge interface, score aggregation and the append-only on-disk judgment cache."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .._io import append_jsonl

log = logging.getLogger(__name__)

MIN_NUMBER_MASS = 0.25
"""Below this total probability on the numbers 0..100 a judgment has no score."""

_INT_TOKEN = re.compile(r"[0-9]{1,3}")


def number_probs(probs: Mapping[str, float]) -> dict[int, float]:
    """Sum the probabilities of candidates that read as an integer 0..100 (whitespace stripped).

    ``" 7"`` and ``"7"`` both count for 7; anything else (words, ``"7."``, ``"-3"``, ``"101"``) is ignored.
    """
    out: dict[int, float] = {}
    for token, p in probs.items():
        text = str(token).strip()
        if not _INT_TOKEN.fullmatch(text):
            continue
        k = int(text)
        if k > 100 or not (p >= 0.0) or math.isinf(p):
            continue
        out[k] = out.get(k, 0.0) + float(p)
    return out


def aggregate_score(probs: Mapping[str, float]) -> float | None:
    """Probability-weighted mean over integer answers 0..100: ``sum(k * p_k) / sum(p_k)``.

    ``probs`` maps candidate answers (e.g. a judge's top-20 first tokens) to probabilities. Candidates that
    are not integers 0..100 after stripping whitespace are ignored. Returns ``None`` when the total mass on
    numbers is below 0.25 (the judge mostly did not answer with a number, e.g. a refusal).
    """
    nums = number_probs(probs)
    mass = sum(nums.values())
    if mass < MIN_NUMBER_MASS or mass <= 0.0:
        return None
    return sum(k * p for k, p in nums.items()) / mass


@dataclass
class Judgment:
    """One judge verdict.

    ``score``: 0..100, or ``None`` (no number mass, a rules/none judge, or an error).
    ``raw``: what the score came from: top candidates -> probability for model judges, rule details for
    the rules judge, ``{"error": ...}`` for a response that could not be read.
    ``cached``: True when it was read from the judgment cache instead of being judged now.
    """

    score: float | None
    raw: dict[str, Any] = field(default_factory=dict)
    cached: bool = False


def cache_key(judge_name: str, prompt: str) -> str:
    """sha256 of the judge name and the full prompt (a NUL byte between them)."""
    return hashlib.sha256(f"{judge_name}\x00{prompt}".encode()).hexdigest()


def _file_stem(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "judge"


class JudgmentCache:
    """Judgments of one judge, in memory and (with ``directory``) in an append-only JSONL file.

    File: ``<directory>/<judge name, sanitised>.jsonl``; one row per judgment
    ``{"key", "judge", "score", "raw"}``, appended and fsynced as soon as the judgment exists, so a crash
    or an interrupted run loses nothing already judged. Rows are never rewritten; on reading, the last
    row for a key wins and a torn last line (a kill mid-write) is skipped.
    """

    def __init__(self, judge_name: str, directory: str | os.PathLike[str] | None = None):
        self.judge_name = judge_name
        self.path: Path | None = Path(directory) / f"{_file_stem(judge_name)}.jsonl" if directory else None
        self._rows: dict[str, Judgment] = {}
        self._lock = threading.Lock()
        if self.path is not None:
            self._load(self.path)

    def _load(self, path: Path) -> None:
        if not path.exists():
            return
        data = path.read_bytes()
        for lineno, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                if row.get("judge") != self.judge_name:
                    continue
                self._rows[row["key"]] = Judgment(score=row["score"], raw=row.get("raw") or {})
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("judgment cache %s: skipping unreadable line %d", path, lineno)
        if data and not data.endswith(b"\n"):
            # A torn last line: end it so the next appended row starts on a fresh line.
            with open(path, "ab") as fh:
                fh.write(b"\n")

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, prompt: str) -> Judgment | None:
        hit = self._rows.get(cache_key(self.judge_name, prompt))
        if hit is None:
            return None
        return Judgment(score=hit.score, raw=dict(hit.raw), cached=True)

    def put(self, prompt: str, judgment: Judgment) -> None:
        key = cache_key(self.judge_name, prompt)
        stored = Judgment(score=judgment.score, raw=dict(judgment.raw))
        with self._lock:
            self._rows[key] = stored
            if self.path is not None:
                append_jsonl(
                    self.path,
                    {"key": key, "judge": self.judge_name, "score": stored.score, "raw": stored.raw},
                )


class Judge(ABC):
    """A judge turns prompts into 0..100 scores.

    Subclasses set ``name`` (``"openai:gpt-4o-mini"``, ``"hf:smollm2-135m"``, ...) and implement
    :meth:`_judge`, which yields ``(index, Judgment)`` pairs as they finish, in any order. :meth:`score`
    answers cached prompts from the cache, judges each distinct remaining prompt once, and writes every new
    judgment to the cache the moment it is yielded, before the next one is awaited. Judgments carrying
    ``raw["error"]`` are returned but not cached, so a rerun judges them again.
    """

    name: str = "judge"
    cache_results: bool = True
    """False for judges whose output costs nothing to recompute (``rules``, ``none``)."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None):
        self.cache = JudgmentCache(self.name, cache_dir if self.cache_results else None)

    def __repr__(self) -> str:
        where = f", cache={self.cache.path}" if self.cache.path else ""
        return f"{type(self).__name__}(name={self.name!r}{where})"

    def score(self, prompts: list[str], *, progress: bool = False, desc: str = "judging") -> list[Judgment]:
        """Judge every prompt; the i-th judgment belongs to the i-th prompt.

        ``progress``: a tqdm bar over the prompts judged now (cached ones are not counted), named ``desc``;
        judges that cost nothing (``cache_results`` False: ``rules``, ``none``) never draw one.
        """
        prompts = list(prompts)
        out: list[Judgment | None] = [None] * len(prompts)
        todo: dict[str, list[int]] = {}
        for i, p in enumerate(prompts):
            if not isinstance(p, str):
                raise TypeError(f"judge prompts must be strings, got {type(p).__name__} at index {i}")
            hit = self.cache.get(p) if self.cache_results else None
            if hit is not None:
                out[i] = hit
            else:
                todo.setdefault(p, []).append(i)
        if todo:
            unique = list(todo)
            quiet = not (progress and self.cache_results)
            with tqdm(total=len(unique), desc=desc, disable=quiet, unit="prompt") as bar:
                for j, judgment in self._judge(unique):
                    if self.cache_results and "error" not in judgment.raw:
                        self.cache.put(unique[j], judgment)
                    for i in todo[unique[j]]:
                        out[i] = Judgment(score=judgment.score, raw=dict(judgment.raw), cached=False)
                    bar.update(1)
        missing = [i for i, j in enumerate(out) if j is None]
        if missing:
            raise RuntimeError(f"judge {self.name} returned no judgment for prompt(s) {missing[:5]}")
        return out  # type: ignore[return-value]

    @abstractmethod
    def _judge(self, prompts: list[str]) -> Iterator[tuple[int, Judgment]]:
        """Yield ``(index into prompts, judgment)`` for every prompt, as each one finishes."""


def score_prompts(
    judge: Any, prompts: list[str], *, progress: bool = False, desc: str = "judging"
) -> list[Any]:
    """``judge.score(prompts)`` with a progress bar for :class:`Judge` objects; any other object with a
    ``score(prompts)`` method (a caller's own judge) is called as it is."""
    if isinstance(judge, Judge):
        return judge.score(prompts, progress=progress, desc=desc)
    return judge.score(prompts)


class NoneJudge(Judge):
    """``none``: scores nothing (every score is ``None``), so an evaluation can run without a judge."""

    name = "none"
    cache_results = False

    def _judge(self, prompts: list[str]) -> Iterator[tuple[int, Judgment]]:
        for i in range(len(prompts)):
            yield i, Judgment(score=None, raw={"judge": "none"})
