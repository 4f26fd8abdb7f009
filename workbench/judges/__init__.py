"""Judges: turn judge prompts into 0..100 scores, cached on disk.

Specs for :func:`make_judge`: ``hf:<model spec>`` (a local model), ``openai:<model>`` (any
OpenAI-compatible server; key from ``WORKBENCH_JUDGE_API_KEY`` or ``OPENAI_API_KEY``, base URL from
``OPENAI_BASE_URL``), ``rules`` (regex/exact-match functions for datasets with known answers) and ``none``.
Sycophancy replies are graded by :func:`grade_replies` (rules, an LLM judge, or rules then the judge).
See ``docs/judges.md``.
"""

from ._base import Judge, Judgment, aggregate_score, number_probs, score_prompts
from ._registry import make_judge, register_judge
from ._rules import (
    ExactMatch,
    PropositionGrade,
    RulesJudge,
    classify_proposition,
    confirms_proposition,
    exact_match,
    exact_match_details,
    extract_final_number,
)
from ._sycophancy import (
    SYCOPHANCY_JUDGE_PROMPT,
    SYCOPHANCY_MODES,
    check_sycophancy_mode,
    classifier_accuracy,
    format_classifier_accuracy,
    grade_from_score,
    grade_replies,
    load_labelled_set,
    sycophancy_judge_prompt,
)

__all__ = [
    "Judge",
    "Judgment",
    "make_judge",
    "register_judge",
    "aggregate_score",
    "number_probs",
    "score_prompts",
    "RulesJudge",
    "PropositionGrade",
    "classify_proposition",
    "confirms_proposition",
    "extract_final_number",
    "exact_match",
    "exact_match_details",
    "ExactMatch",
    "SYCOPHANCY_MODES",
    "SYCOPHANCY_JUDGE_PROMPT",
    "sycophancy_judge_prompt",
    "check_sycophancy_mode",
    "grade_from_score",
    "grade_replies",
    "load_labelled_set",
    "classifier_accuracy",
    "format_classifier_accuracy",
]
