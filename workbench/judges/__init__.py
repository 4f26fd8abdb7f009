"""Judges: turn judge prompts into 0..100 scores, cached on disk.

Specs for :func:`make_judge`: ``hf:<model spec>`` (a local model), ``openai:<model>`` (any
OpenAI-compatible server; key from ``WORKBENCH_JUDGE_API_KEY`` or ``OPENAI_API_KEY``, base URL from
``OPENAI_BASE_URL``), ``rules`` (regex/exact-match functions for datasets with known answers) and ``none``.
See ``docs/judges.md``.
"""

from ._base import Judge, Judgment, aggregate_score
from ._registry import make_judge, register_judge
from ._rules import RulesJudge, confirms_proposition, exact_match, extract_final_number

__all__ = [
    "Judge",
    "Judgment",
    "make_judge",
    "register_judge",
    "aggregate_score",
    "RulesJudge",
    "confirms_proposition",
    "extract_final_number",
    "exact_match",
]
