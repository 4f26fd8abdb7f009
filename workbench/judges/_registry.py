"""``make_judge(spec)``: judge specs -> judge objects, one registered factory per backend."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from .._errors import WorkbenchError
from ._base import Judge, NoneJudge

JudgeFactory = Callable[..., Judge]
_FACTORIES: dict[str, tuple[JudgeFactory, bool, str]] = {}


def register_judge(prefix: str, factory: JudgeFactory, *, takes_argument: bool, form: str) -> None:
    """Register a backend: ``factory(argument, cache_dir=..., **options)`` (``argument`` only when
    ``takes_argument``) builds the judge for specs ``prefix`` or ``prefix:<argument>``. Duplicate prefixes
    are rejected."""
    if prefix in _FACTORIES:
        raise ValueError(f"judge backend '{prefix}' is already registered")
    _FACTORIES[prefix] = (factory, takes_argument, form)


def judge_spec_forms() -> list[str]:
    return [form for _, _, form in _FACTORIES.values()]


def make_judge(spec: str, cache_dir: str | os.PathLike[str] | None = None, **options: Any) -> Judge:
    """Build a judge from its spec: ``hf:<model spec>``, ``openai:<model>``, ``rules`` or ``none``.

    ``cache_dir``: where judgments are cached (append-only JSONL, one file per judge); ``None`` caches in
    memory only. ``options`` go to the backend (``batch_size`` for hf; ``concurrency``, ``retries``,
    ``base_delay``, ``timeout`` for openai).
    """
    text = (spec or "").strip()
    prefix, sep, argument = text.partition(":")
    entry = _FACTORIES.get(prefix)
    if entry is None or (entry[1] and not argument.strip()) or (not entry[1] and sep):
        raise WorkbenchError(f"unknown judge spec '{spec}'; accepted: {', '.join(judge_spec_forms())}")
    factory, takes_argument, _ = entry
    if takes_argument:
        return factory(argument.strip(), cache_dir=cache_dir, **options)
    return factory(cache_dir=cache_dir, **options)


def _hf(argument: str, **kw: Any) -> Judge:
    from ._hf import HFJudge

    return HFJudge(argument, **kw)


def _openai(argument: str, **kw: Any) -> Judge:
    from ._openai import OpenAIJudge

    return OpenAIJudge(argument, **kw)


def _rules(**kw: Any) -> Judge:
    from ._rules import RulesJudge

    return RulesJudge(**kw)


register_judge("hf", _hf, takes_argument=True, form="'hf:<model spec>' (e.g. hf:smollm2-135m)")
register_judge("openai", _openai, takes_argument=True, form="'openai:<model>' (e.g. openai:gpt-4o-mini)")
register_judge("rules", _rules, takes_argument=False, form="'rules'")
register_judge("none", lambda **kw: NoneJudge(**kw), takes_argument=False, form="'none'")
