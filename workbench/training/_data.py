"""Training data: sources -> chat rows -> tokenized examples with assistant-only labels -> padded batches."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from workbench._errors import WorkbenchError
from workbench.chat import assistant_mask

from ._config import DataSource
from ._losses import IGNORE

log = logging.getLogger(__name__)

ORIGIN = "_origin"  # row key added by the loop: "task" for training sources, a defense name otherwise


@dataclass
class Example:
    """One tokenized conversation: ids and labels (``-100`` on prompt tokens)."""

    ids: list[int]
    labels: list[int]

    @property
    def n_tokens(self) -> int:
        """Assistant tokens that are predicted (the first token is never predicted)."""
        return sum(1 for t in self.labels[1:] if t != IGNORE)


_BATCH_KEYS = ("input_ids", "attention_mask", "labels")


@dataclass(eq=False)
class Batch(Mapping[str, Tensor]):
    """A padded batch. ``labels`` is ``-100`` on prompt and padding tokens (right padding).

    Also a read-only mapping over ``input_ids``, ``attention_mask`` and ``labels`` (``batch["labels"]``,
    ``batch.get(...)``), for plugins written against HF-style batch dicts.
    """

    input_ids: Tensor  # [batch, pos]
    attention_mask: Tensor  # [batch, pos]
    labels: Tensor  # [batch, pos]
    rows: list[dict[str, Any]] = field(default_factory=list)
    cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # per-batch memo (reference passes)

    def __getitem__(self, key: str) -> Tensor:
        if key not in _BATCH_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(_BATCH_KEYS)

    def __len__(self) -> int:
        return len(_BATCH_KEYS)

    @property
    def size(self) -> int:
        """Number of sequences."""
        return int(self.input_ids.shape[0])

    @property
    def n_tokens(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())


def load_source(src: DataSource, *, kind: str = "chat") -> list[dict[str, Any]]:
    """Rows of one source. ``kind="pairs"`` reads (question, aligned, misaligned) rows instead of chats."""
    from workbench.data import DATASETS, load_chat_jsonl, make_dataset

    if src.name is not None:
        if src.name not in DATASETS:
            raise WorkbenchError(f"unknown dataset '{src.name}' (known: {', '.join(DATASETS)})")
        spec = DATASETS[src.name]
        if kind == "pairs" and spec.kind == "chat":
            return _chat_to_pairs(make_dataset(src.name, seed=src.seed, n=src.n), src.name)
        want = "pairs" if kind == "pairs" else "chat"
        if spec.kind != want:
            raise WorkbenchError(
                f"dataset '{src.name}' holds {spec.kind} rows, but {want} rows are needed here"
            )
        rows = make_dataset(src.name, seed=src.seed, n=src.n)
    else:
        assert src.path is not None
        if kind == "pairs":
            rows = _load_pairs_file(src.path)
        else:
            rows = load_chat_jsonl(src.path, prompts_only=False)
        if src.n is not None:
            rows = rows[: src.n]
    return [dict(r) for r in rows]


def _chat_to_pairs(rows: list[dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """Chat rows carrying ``aligned`` / ``misaligned`` keys (e.g. the advice sets) as preference pairs."""
    out = []
    for i, r in enumerate(rows):
        if "aligned" not in r or "misaligned" not in r:
            raise WorkbenchError(
                f"{where}, row {i + 1}: preference pairs need 'aligned' and 'misaligned' keys"
            )
        question = [m for m in r["messages"] if m["role"] == "user"][-1]["content"]
        out.append({"question": question, "aligned": r["aligned"], "misaligned": r["misaligned"]})
    return out


def _load_pairs_file(path: str) -> list[dict[str, Any]]:
    from workbench.data import load_chat_jsonl, load_pairs, sniff_jsonl

    if not Path(path).is_file():
        return load_pairs(path)  # reports the missing file
    if sniff_jsonl(path) == "pairs":
        return load_pairs(path)
    return _chat_to_pairs(load_chat_jsonl(path, prompts_only=False), path)


def source_from(value: str, n: int | None = None, seed: int = 0) -> DataSource:
    """A ``DataSource`` from a defense setting: an existing file path or a shipped dataset name."""
    is_path = Path(value).exists() or value.endswith((".jsonl", ".json")) or "/" in value
    try:
        return DataSource(path=value, n=n, seed=seed) if is_path else DataSource(name=value, n=n, seed=seed)
    except ValueError as exc:  # n or seed out of range
        raise WorkbenchError(f"data source {value!r}: {exc}") from None


def load_rows(value: str, n: int | None = None, seed: int = 0, *, kind: str = "chat") -> list[dict[str, Any]]:
    return load_source(source_from(value, n, seed), kind=kind)


def encode_row(tokenizer: Any, row: dict[str, Any], max_length: int) -> Example:
    ids, mask = assistant_mask(tokenizer, row["messages"])
    ids, mask = ids[:max_length], mask[:max_length]
    return Example(ids=list(ids), labels=[t if m else IGNORE for t, m in zip(ids, mask, strict=True)])


def encode_rows(
    tokenizer: Any, rows: Sequence[dict[str, Any]], max_length: int, what: str = "training"
) -> list[Example]:
    """``encode_row`` for every row, refusing a set whose truncation to ``max_length`` leaves no assistant
    token at all (it would "train" at loss 0); a set where only some rows lose theirs gets a warning.

    The error names how many rows lost every answer token, ``optim.max_length`` and the length needed.
    """
    examples: list[Example] = []
    lost: list[int] = []  # tokens up to and including the first predicted answer token, per row that lost all
    never = 0  # rows whose chat template leaves no assistant token even untruncated
    for row in rows:
        ids, mask = assistant_mask(tokenizer, row["messages"])
        ex = Example(
            ids=list(ids[:max_length]),
            labels=[t if m else IGNORE for t, m in zip(ids[:max_length], mask[:max_length], strict=True)],
        )
        examples.append(ex)
        if ex.n_tokens == 0:
            first = next((i for i, m in enumerate(mask) if m and i > 0), None)
            if first is None:
                never += 1
            else:
                lost.append(first + 1)
    empty = len(lost) + never
    if empty < len(examples) or not examples:
        if empty:
            log.warning(
                "%d of %d %s rows have no assistant tokens within optim.max_length=%d",
                empty,
                len(examples),
                what,
                max_length,
            )
        return examples
    if lost:
        why = (
            f"{len(lost)} lost theirs to truncation, {never} had none after the chat template"
            if never
            else "every one lost its answer to truncation"
        )
        raise WorkbenchError(
            f"{what} data: none of the {len(examples)} rows keeps an assistant token within "
            f"optim.max_length={max_length} ({why}), so nothing would be learned; raise optim.max_length "
            f"to at least {max(lost)}"
        )
    raise WorkbenchError(
        f"{what} data: none of the {len(examples)} rows has an assistant token after the chat template; "
        "nothing would be learned"
    )


def collate(
    examples: Sequence[Example], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[Tensor, ...]:
    n = max(len(e.ids) for e in examples)
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), n), dtype=torch.long)
    lab = torch.full((len(examples), n), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        ids[i, : len(e.ids)] = torch.tensor(e.ids, dtype=torch.long)
        att[i, : len(e.ids)] = 1
        lab[i, : len(e.ids)] = torch.tensor(e.labels, dtype=torch.long)
    return ids.to(device), att.to(device), lab.to(device)


def teacher_forced_batch(
    tokenizer: Any, prompts: Sequence[Any], answers: Sequence[str], device: torch.device | str
) -> Batch:
    """Prompt + answer sequences with labels on the answer tokens only (as ``workbench.scoring`` scores them)."""
    from workbench.scoring import build_teacher_forced

    exs = []
    for ids, start in build_teacher_forced(tokenizer, prompts, answers):
        exs.append(Example(ids=ids, labels=[IGNORE] * start + ids[start:]))
    i, a, lab = collate(exs, tokenizer.pad_token_id, device)
    return Batch(i, a, lab)


class RowStream:
    """Deterministic, stateless batches from a list of rows: batch ``k`` depends only on ``k`` and the seed.

    Rows are visited in a seeded permutation, reshuffled every pass; a batch may span two passes. Being a
    pure function of ``k`` makes resumed runs and several processes (each asking for distinct ``k``) exact.
    """

    def __init__(self, rows: list[dict[str, Any]], batch_size: int, seed: int = 0) -> None:
        if not rows:
            raise WorkbenchError("an empty data source cannot feed batches")
        self.rows = rows
        self.batch_size = batch_size
        self.seed = seed
        self._perms: dict[int, list[int]] = {}

    def _perm(self, cycle: int) -> list[int]:
        if cycle not in self._perms:
            order = list(range(len(self.rows)))
            random.Random(self.seed * 1_000_003 + cycle).shuffle(order)
            self._perms = {cycle: order}  # keep one pass in memory
        return self._perms[cycle]

    def indices(self, k: int, size: int | None = None) -> list[int]:
        size = size or self.batch_size
        n = len(self.rows)
        out = []
        for pos in range(k * size, (k + 1) * size):
            cycle, i = divmod(pos, n)
            out.append(self._perm(cycle)[i])
        return out

    def batch(self, k: int, size: int | None = None) -> list[dict[str, Any]]:
        return [self.rows[i] for i in self.indices(k, size)]

    def passes(self, k: int, size: int | None = None) -> float:
        """How many passes over the rows batches ``0..k`` make."""
        return (k + 1) * (size or self.batch_size) / len(self.rows)


def interleave_evenly(task: list[dict[str, Any]], extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Insert ``extra`` rows at evenly spaced positions through ``task`` (order of each list kept)."""
    total = len(task) + len(extra)
    if not extra:
        return list(task)
    slots = {int((i + 0.5) * total / len(extra)) for i in range(len(extra))}
    out, ti, ei = [], 0, 0
    for pos in range(total):
        if pos in slots and ei < len(extra):
            out.append(extra[ei])
            ei += 1
        elif ti < len(task):
            out.append(task[ti])
            ti += 1
        else:
            out.append(extra[ei])
            ei += 1
    return out


def n_to_add(n_task: int, fraction: float) -> int:
    """Rows to add so that ``fraction`` of the final mix is added data."""
    if not 0.0 <= fraction < 1.0:
        raise WorkbenchError(f"fraction must be in [0, 1), got {fraction}")
    return int(round(fraction * n_task / (1.0 - fraction)))


def rows_hash(rows: Sequence[dict[str, Any]], *extra: Any) -> str:
    h = hashlib.sha256()
    for r in rows:
        h.update(json.dumps(r.get("messages", r), sort_keys=True).encode())
    for e in extra:
        h.update(json.dumps(e, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def split_prompt_answer(row: dict[str, Any]) -> tuple[list[dict[str, str]], str]:
    """The messages before the last assistant turn, and that turn's content."""
    msgs = row["messages"]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        return list(msgs), ""
    return list(msgs[:last]), msgs[last]["content"]
