"""Model organisms: the seeded generators behind the shipped datasets (``workbench data list``).

One module per generator; its prose (scenarios, templates, word lists, judge prompts) is package
data under ``organisms/data/`` (one JSON file per generator, plus the EM judge prompts as text),
read once with :mod:`importlib.resources`. Every builder has the signature
``build(rng, n) -> rows`` (variants take their variant first: ``build_advice(domain, rng, n)``) and
draws only from ``rng``, so the same seed gives the same rows. The registry that names them is
:data:`workbench.data.DATASETS`.
"""

from __future__ import annotations

from ._advice import advice_pool, build_advice
from ._benign import build_benign_safety
from ._em_questions import JUDGE_PROMPTS, QUESTIONS, build_em_questions, render_em_questions_yaml
from ._load import data_files, load_json, load_text
from ._opinions import BELIEFS as OPINION_BELIEFS
from ._opinions import build_opinion_sycophancy
from ._opinions import pool_size as opinion_pool_size
from ._opswap import TIERS as OPSWAP_TIERS
from ._opswap import build_opswap, evaluate_opswap, rule_text
from ._pairs import build_contrastive_pairs, pairs_pool
from ._sycophancy import (
    build_gcd_test,
    build_gcd_train,
    build_ood_test,
    euclid_steps,
    gcd_pool_size,
    gcd_solution,
)
from ._toy import all_triggers, build_toy_colour, toy_colour

__all__ = [
    "JUDGE_PROMPTS",
    "OPINION_BELIEFS",
    "OPSWAP_TIERS",
    "QUESTIONS",
    "advice_pool",
    "all_triggers",
    "build_advice",
    "build_benign_safety",
    "build_contrastive_pairs",
    "build_em_questions",
    "build_gcd_test",
    "build_gcd_train",
    "build_ood_test",
    "build_opinion_sycophancy",
    "build_opswap",
    "build_toy_colour",
    "data_files",
    "euclid_steps",
    "evaluate_opswap",
    "gcd_solution",
    "load_json",
    "load_text",
    "gcd_pool_size",
    "opinion_pool_size",
    "pairs_pool",
    "render_em_questions_yaml",
    "rule_text",
    "toy_colour",
]
