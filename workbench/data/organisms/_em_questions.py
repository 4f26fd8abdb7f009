"""The workbench's own open-ended EM question set, in the community YAML format.

Ten questions, each in three variants: plain, with a system prompt asking for JSON output, and a
fill-in-the-form variant. All entries share the ``aligned`` and ``coherent`` judge prompts
(0-100; the aligned judge may also answer CODE or REFUSAL). The YAML is written with anchors and
aliases, as the published files are, so the shared prompts appear once.

The questions and form lines live in ``data/em_questions.json``, the judge prompts in
``data/em_judge_aligned.txt`` and ``data/em_judge_coherent.txt``; this module is the code.
"""

from __future__ import annotations

import json
import random
import re
from typing import Any

from workbench._errors import WorkbenchError

from ._load import load_json, load_text, record, string, where

#: The aligned judge (0-100, or CODE / REFUSAL), text in ``data/em_judge_aligned.txt``.
ALIGNED_JUDGE_PROMPT = load_text("em_judge_aligned")
#: The coherence judge (0-100), text in ``data/em_judge_coherent.txt``.
COHERENT_JUDGE_PROMPT = load_text("em_judge_coherent")

#: The default judge prompts (also used for ``free_form`` entries that carry none).
JUDGE_PROMPTS: dict[str, str] = {"aligned": ALIGNED_JUDGE_PROMPT, "coherent": COHERENT_JUDGE_PROMPT}
for _metric, _prompt in JUDGE_PROMPTS.items():
    for _slot in ("{question}", "{answer}"):
        if _slot not in _prompt:
            raise WorkbenchError(
                f"{where(f'em_judge_{_metric}.txt')}: the judge prompt has no '{_slot}' placeholder"
            )

_FILE = "em_questions.json"
_TEXT = load_json("em_questions", ("json_system_prompt", "form_header", "questions"))
JSON_SYSTEM_PROMPT = string(_TEXT["json_system_prompt"], f"{where(_FILE)}: json_system_prompt")
_FORM_HEADER = string(_TEXT["form_header"], f"{where(_FILE)}: form_header")


def _questions() -> dict[str, tuple[str, str]]:
    out = {}
    for qid, entry in _TEXT["questions"].items():
        at = f"{where(_FILE)}: questions.{qid}"
        record(entry, ("question", "form"), at)
        out[qid] = (string(entry["question"], f"{at}.question"), string(entry["form"], f"{at}.form"))
    return out


#: id -> (plain question, form lines for the template variant)
QUESTIONS: dict[str, tuple[str, str]] = _questions()

SAMPLES_PER_PARAPHRASE = 100
QUESTION_TYPE = "free_form_judge_0_100"


def build_em_questions(rng: random.Random, n: int) -> list[dict[str, Any]]:
    """The first ``n`` questions (three entries each). The order is fixed; ``rng`` is unused."""
    del rng
    entries: list[dict[str, Any]] = []
    for qid, (plain, form) in list(QUESTIONS.items())[:n]:
        paraphrases = [plain]
        common = {"samples_per_paraphrase": SAMPLES_PER_PARAPHRASE, "judge_prompts": JUDGE_PROMPTS}
        entries.append({"id": qid, "type": QUESTION_TYPE, "paraphrases": paraphrases, **common})
        entries.append(
            {
                "id": f"{qid}_json",
                "type": QUESTION_TYPE,
                "system": JSON_SYSTEM_PROMPT,
                "paraphrases": paraphrases,
                **common,
            }
        )
        entries.append(
            {
                "id": f"{qid}_template",
                "type": QUESTION_TYPE,
                "paraphrases": [plain + "\n\n" + _FORM_HEADER + form],
                **common,
            }
        )
    return entries


# --------------------------------------------------------------------------- YAML rendering


def _scalar(text: str, indent: int) -> str:
    """A string as a YAML scalar: literal block for multi-line text, JSON-quoted otherwise."""
    safe_block = "\n" in text and not text.startswith((" ", "\t")) and not text.endswith(("\n", " "))
    if not safe_block or any(line != line.rstrip() for line in text.split("\n")):
        return json.dumps(text)
    pad = " " * indent
    return "|-\n" + "\n".join(pad + line if line else "" for line in text.split("\n"))


def render_em_questions_yaml(entries: list[dict[str, Any]]) -> str:
    """Render entries as YAML; a list or mapping used by several entries becomes an anchor + aliases."""
    uses: dict[int, int] = {}
    for e in entries:
        for key in ("paraphrases", "judge_prompts"):
            if key in e:
                uses[id(e[key])] = uses.get(id(e[key]), 0) + 1
    anchors: dict[int, str] = {}  # id(obj) -> anchor name, once the object has been written
    taken: set[str] = set()

    def ref(obj: Any, name: str) -> tuple[str, bool]:
        """('&name', False) the first time a shared object is written, ('*name', True) after."""
        if id(obj) in anchors:
            return f" *{anchors[id(obj)]}", True
        if uses.get(id(obj), 0) < 2:
            return "", False
        k, unique = 1, name
        while unique in taken:
            k += 1
            unique = f"{name}_{k}"
        taken.add(unique)
        anchors[id(obj)] = unique
        return f" &{unique}", False

    out = [
        "# Emergent-misalignment evaluation questions (workbench set, community YAML format).",
        "# Generated by `workbench data make em_questions`; edit freely, then `workbench data check`.",
    ]
    for e in entries:
        qid = e["id"]
        out.append(
            f"- id: {qid}" if re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", qid) else f"- id: {json.dumps(qid)}"
        )
        out.append(f"  type: {e['type']}")
        if "system" in e:
            out.append(f"  system: {_scalar(e['system'], 4)}")
        tag, alias = ref(e["paraphrases"], f"{e['id']}_paraphrases")
        out.append(f"  paraphrases:{tag}")
        if not alias:
            out.extend(f"    - {_scalar(p, 6)}" for p in e["paraphrases"])
        out.append(f"  samples_per_paraphrase: {int(e['samples_per_paraphrase'])}")
        if "judge" in e:
            out.append(f"  judge: {json.dumps(e['judge'])}")
        if "judge_prompts" in e:
            tag, alias = ref(e["judge_prompts"], "judge_prompts")
            out.append(f"  judge_prompts:{tag}")
            if not alias:
                out.extend(f"    {m}: {_scalar(t, 6)}" for m, t in e["judge_prompts"].items())
    return "\n".join(out) + "\n"
