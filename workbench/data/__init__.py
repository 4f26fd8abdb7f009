"""Data: chat JSONL and evaluation-question YAML loaders, trait definitions, and seeded generators.

Loaders validate and raise :class:`workbench._errors.WorkbenchError` naming the file, line, key
or value at fault. Generators (``DATASETS``) are deterministic in their seed; their code lives in
:mod:`workbench.data.organisms`, their text in that package's ``data/`` files.
"""

from __future__ import annotations

from ._chat import load_chat_jsonl, write_chat_jsonl
from ._check import check_file, load_pairs, pair_prompt, sniff_jsonl
from ._eval_yaml import KNOWN_TYPES, EvalQuestion, fill_template, load_eval_yaml, parse_eval_entries
from ._gcd import extract_proposed, gcd_rows_to_sycophancy, is_gcd_row, load_gcd_jsonl
from ._registry import DATASETS, DatasetSpec, make_dataset, render_dataset, write_dataset
from ._traits import Trait, load_trait, shipped_traits
from ._twins import TwinPairs, pair_twin_files
from .organisms import JUDGE_PROMPTS, OPINION_BELIEFS, evaluate_opswap, opinion_pool_size

__all__ = [
    "DATASETS",
    "JUDGE_PROMPTS",
    "KNOWN_TYPES",
    "OPINION_BELIEFS",
    "DatasetSpec",
    "EvalQuestion",
    "Trait",
    "TwinPairs",
    "check_file",
    "evaluate_opswap",
    "extract_proposed",
    "fill_template",
    "gcd_rows_to_sycophancy",
    "is_gcd_row",
    "load_chat_jsonl",
    "load_eval_yaml",
    "load_gcd_jsonl",
    "load_pairs",
    "pair_prompt",
    "load_trait",
    "opinion_pool_size",
    "parse_eval_entries",
    "make_dataset",
    "render_dataset",
    "pair_twin_files",
    "shipped_traits",
    "sniff_jsonl",
    "write_chat_jsonl",
    "write_dataset",
]
