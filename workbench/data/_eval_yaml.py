"""EM evaluation questions in the community YAML format.

The file is a YAML list; each entry has ``id``, ``type``, ``paraphrases`` (a list of strings),
``samples_per_paraphrase`` and optionally ``system``, ``judge`` and ``judge_prompts`` (a mapping
such as ``aligned``/``coherent`` to a template with ``{question}`` and ``{answer}``). Anchors and
aliases (``&name`` / ``*name``) are allowed, as in the published files. Unknown entry types are
reported, never silently skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import yaml

from workbench._errors import WorkbenchError
from workbench._io import parse_yaml, read_text

from ._common import display
from .organisms import JUDGE_PROMPTS

#: Entry types this loader understands; all three are answered freely and scored by a judge.
KNOWN_TYPES: tuple[str, ...] = ("free_form_judge_0_100", "free_form_judge", "free_form")
#: Types whose entries must carry ``judge_prompts``; a ``free_form`` entry without them gets the
#: workbench's default ``aligned`` / ``coherent`` prompts (``JUDGE_PROMPTS``).
_NEEDS_JUDGE_PROMPTS = ("free_form_judge_0_100", "free_form_judge")
_REQUIRED = ("id", "type", "paraphrases", "samples_per_paraphrase")
#: Upper bound of ``samples_per_paraphrase``: every sample is generated and judged, so 1e12 would never end.
MAX_SAMPLES_PER_PARAPHRASE = 100_000
_OPTIONAL = ("system", "judge", "judge_prompts")


def fill_template(template: str, question: str, answer: str) -> str:
    """Substitute ``{question}`` and ``{answer}``; other braces (JSON examples) are left alone."""
    return template.replace("{question}", question).replace("{answer}", answer)


@dataclass(frozen=True)
class EvalQuestion:
    """One entry of an evaluation YAML file."""

    id: str
    type: str
    paraphrases: tuple[str, ...]
    samples_per_paraphrase: int = 1
    system: str | None = None
    judge: str | None = None
    judge_prompts: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # unknown keys, kept for round-trips

    @property
    def n_samples(self) -> int:
        """Answers this entry asks for: paraphrases x samples_per_paraphrase."""
        return len(self.paraphrases) * self.samples_per_paraphrase

    def messages(self, paraphrase: str) -> list[dict[str, str]]:
        """The chat prompt for one paraphrase (with the entry's system prompt, if any)."""
        msgs = [{"role": "system", "content": self.system}] if self.system else []
        return msgs + [{"role": "user", "content": paraphrase}]

    def judge_prompt(self, metric: str, question: str, answer: str) -> str:
        """The filled judge prompt for ``metric`` (e.g. ``aligned``); KeyError names the known ones."""
        if metric not in self.judge_prompts:
            known = ", ".join(sorted(self.judge_prompts)) or "none"
            raise KeyError(f"question {self.id!r} has no judge prompt {metric!r} (has: {known})")
        return fill_template(self.judge_prompts[metric], question, answer)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "paraphrases": list(self.paraphrases),
            "samples_per_paraphrase": self.samples_per_paraphrase,
        }
        if self.system is not None:
            out["system"] = self.system
        if self.judge is not None:
            out["judge"] = self.judge
        if self.judge_prompts:
            out["judge_prompts"] = dict(self.judge_prompts)
        out.update(self.extra)
        return out


def _entry_lines(text: str) -> list[int]:
    """1-based start line of each top-level list item (empty if the document is not a list)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, RecursionError):
        return []
    if not isinstance(node, yaml.SequenceNode):
        return []
    return [item.start_mark.line + 1 for item in node.value]


def parse_eval_entries(data: Any, name: str, lines: list[int] | None = None) -> list[EvalQuestion]:
    """Validate already-parsed YAML data (a list of dicts); ``name`` is used in error messages."""
    if not isinstance(data, list):
        raise WorkbenchError(f"{name}: expected a YAML list of question entries, got {type(data).__name__}")
    if not data:
        raise WorkbenchError(f"{name}: no question entries")
    lines = lines or []
    questions: list[EvalQuestion] = []
    seen: dict[str, int] = {}
    for i, entry in enumerate(data):
        line = f", line {lines[i]}" if i < len(lines) else ""
        where = f"{name}, entry {i}{line}"
        if not isinstance(entry, dict):
            raise WorkbenchError(f"{where}: expected a mapping, got {type(entry).__name__}")
        if "id" in entry:
            where = f"{name}, entry {i} (id {entry['id']!r}{line})"
        for key in _REQUIRED:
            if key not in entry:
                raise WorkbenchError(f"{where}: missing key '{key}'")
        qid = entry["id"]
        if not isinstance(qid, str) or not qid.strip():
            raise WorkbenchError(f"{where}: 'id' must be a non-empty string, got {qid!r}")
        if qid in seen:
            raise WorkbenchError(f"{where}: duplicate id {qid!r} (first used by entry {seen[qid]})")
        seen[qid] = i
        qtype = entry["type"]
        if qtype not in KNOWN_TYPES:
            raise WorkbenchError(
                f"{where}: unknown question type {qtype!r} (known types: {', '.join(KNOWN_TYPES)})"
            )
        paraphrases = entry["paraphrases"]
        if isinstance(paraphrases, str) or not isinstance(paraphrases, list) or not paraphrases:
            raise WorkbenchError(f"{where}: 'paraphrases' must be a non-empty list of strings")
        for j, p in enumerate(paraphrases):
            if not isinstance(p, str) or not p.strip():
                raise WorkbenchError(f"{where}: paraphrase {j} must be a non-empty string, got {p!r}")
        spp = entry["samples_per_paraphrase"]
        if isinstance(spp, bool) or not isinstance(spp, int) or not 1 <= spp <= MAX_SAMPLES_PER_PARAPHRASE:
            shown = repr(spp) if len(repr(spp)) <= 40 else repr(spp)[:37] + "..."
            raise WorkbenchError(
                f"{where}: 'samples_per_paraphrase' must be a positive integer "
                f"(1 to {MAX_SAMPLES_PER_PARAPHRASE}), got {shown}"
            )
        system = entry.get("system")
        if system is not None and (not isinstance(system, str) or not system.strip()):
            raise WorkbenchError(f"{where}: 'system' must be a non-empty string, got {system!r}")
        judge = entry.get("judge")
        if judge is not None and not isinstance(judge, str):
            raise WorkbenchError(f"{where}: 'judge' must be a string, got {judge!r}")
        prompts = entry.get("judge_prompts")
        if prompts is None:
            if qtype in _NEEDS_JUDGE_PROMPTS:
                raise WorkbenchError(f"{where}: missing key 'judge_prompts' (required for type {qtype!r})")
            prompts = dict(JUDGE_PROMPTS)  # a plain free_form entry is judged with the workbench's prompts
        if not isinstance(prompts, dict):
            raise WorkbenchError(f"{where}: 'judge_prompts' must be a mapping, got {type(prompts).__name__}")
        for metric, template in prompts.items():
            if not isinstance(template, str):
                raise WorkbenchError(f"{where}: judge prompt {metric!r} must be a string")
            if "{answer}" not in template:
                raise WorkbenchError(f"{where}: judge prompt {metric!r} has no '{{answer}}' placeholder")
        extra = {k: v for k, v in entry.items() if k not in _REQUIRED and k not in _OPTIONAL}
        questions.append(
            EvalQuestion(
                id=qid,
                type=qtype,
                paraphrases=tuple(paraphrases),
                samples_per_paraphrase=spp,
                system=system,
                judge=judge,
                judge_prompts={str(k): v for k, v in prompts.items()},
                extra=extra,
            )
        )
    return questions


def load_eval_yaml(path: str | os.PathLike[str]) -> list[EvalQuestion]:
    """Read and validate an evaluation-question YAML file.

    Raises :class:`WorkbenchError` naming the file, the entry (index, id and line) and the key or
    value at fault: YAML syntax errors, missing keys, an unknown ``type`` (with the known ones),
    duplicate ids, empty paraphrases, and judge prompts without an ``{answer}`` placeholder.
    """
    name = display(path)
    text = read_text(path)
    data = parse_yaml(text, str(name))
    return parse_eval_entries(data, name, _entry_lines(text))
