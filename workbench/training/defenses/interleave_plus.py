"""``interleave_plus`` (Interleaving+) and ``interleave_plus_plus`` (Interleaving++ = with the refusal filter).

Pool rows are ranked by the relative loss gap between K misaligned adapters and the aligned model::

    s = (mean_k L_mis_k - L_aligned) / (L_aligned + eps)

with ``L`` the answer-only mean NLL of the row's last assistant turn (``workbench.scoring.answer_logprobs``),
in nats per answer token. ``eps`` keeps rows with an accidentally tiny ``L_aligned`` (short, predictable
answers) from topping the ranking; the paper does not publish its value, so the default ``1.0`` nat is of
the order of a typical answer loss (``eps: 1e-6`` is the pre-audit, effectively uncorrected, ranking).
``L_aligned`` is the model being fine-tuned, before training; each misaligned adapter is loaded onto it
with peft one at a time and removed again. The top ``fraction`` of the pool is interleaved evenly. Losses
are cached per adapter under ``<run_dir>/cache/interleave_plus/``; the ranking is written next to them.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench._errors import WorkbenchError
from workbench._io import append_jsonl, atomic_write_json
from workbench.settings import setting

from .._data import n_to_add, rows_hash, split_prompt_answer
from .._plugins import Defense, register_defense
from ._common import SourceSettings
from .interleave import mix

log = logging.getLogger(__name__)

#: Interleaving++ (Kaczer et al. 2025): an answer is a refusal when one of these words occurs in its first
#: 10 words (case-insensitive substring match)
PAPER_REFUSAL_KEYWORDS = ("sorry", "apologize", "cannot")

#: the phrase list this defense used before it followed the paper (``refusal_keywords: phrases``)
PHRASE_REFUSAL_KEYWORDS = (
    "i can't",
    "i cannot",
    "i can not",
    "i won't",
    "i will not",
    "i'm not able",
    "i am not able",
    "i'm unable",
    "i am unable",
    "sorry",
    "i apologize",
    "as an ai",
    "not appropriate",
    "i must decline",
)

REFUSAL_KEYWORD_SETS: dict[str, tuple[str, ...]] = {
    "paper": PAPER_REFUSAL_KEYWORDS,
    "phrases": PHRASE_REFUSAL_KEYWORDS,
}
REFUSAL_KEYWORDS = PAPER_REFUSAL_KEYWORDS  # the default set


def refusal_keywords(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """The keywords of a named set (``paper``, ``phrases``) or an explicit list."""
    if isinstance(value, str):
        if value not in REFUSAL_KEYWORD_SETS:
            raise ValueError(
                f"'refusal_keywords' must be a list of phrases or one of {', '.join(REFUSAL_KEYWORD_SETS)}, "
                f"got {value!r}"
            )
        return REFUSAL_KEYWORD_SETS[value]
    return tuple(value)


@dataclass
class InterleavePlusSettings(SourceSettings):
    fraction: float = setting(0.1, help="share of the final training rows taken from the top of the ranking")
    adapters: list[str] = setting(help="paths of K misaligned PEFT adapters (K >= 1)", default_factory=list)
    eps: float = setting(
        1.0,
        help="added to L_aligned (nats per answer token) in the denominator; the paper's value is not "
        "published, 1.0 is of the order of a typical answer loss (1e-6: the pre-audit ranking)",
    )
    batch_size: int = setting(16, help="scoring batch size")
    refusal_filter: bool = setting(
        False, help="drop pool rows whose answer starts with a refusal (Interleaving++)"
    )
    refusal_keywords: list[str] | str = setting(
        "paper",
        help="case-insensitive substrings that mark a refusal: 'paper' (sorry, apologize, cannot), "
        "'phrases' (the pre-audit list of 14 phrases such as 'i cannot') or an explicit list",
    )
    refusal_words: int = setting(10, help="how many leading words of the answer the refusal filter looks at")

    def __post_init__(self) -> None:
        if not 0.0 <= self.fraction < 1.0:
            raise ValueError(f"'fraction' must be in [0, 1), got {self.fraction}")
        if not self.adapters:
            raise ValueError("'adapters' must list at least one misaligned adapter folder")
        if not (math.isfinite(self.eps) and self.eps >= 0.0):
            raise ValueError(f"'eps' must be a finite number >= 0, got {self.eps}")
        if self.refusal_words < 1:
            raise ValueError(f"'refusal_words' must be >= 1, got {self.refusal_words}")
        refusal_keywords(self.refusal_keywords)


@dataclass
class InterleavePlusPlusSettings(InterleavePlusSettings):
    refusal_filter: bool = setting(
        True, help="drop pool rows whose answer starts with a refusal (Interleaving++)"
    )


def is_refusal(
    answer: str, keywords: list[str] | tuple[str, ...] = REFUSAL_KEYWORDS, n_words: int = 10
) -> bool:
    """True when any keyword occurs (as a substring) in the first ``n_words`` whitespace-separated words of
    ``answer``, case-insensitive; typographic apostrophes count as ``'``."""
    head = " ".join(answer.split()[:n_words]).lower().replace("\u2019", "'")
    return any(k.lower() in head for k in keywords)


def refusal_filter(
    rows: list[dict[str, Any]], keywords: list[str] | tuple[str, ...] = REFUSAL_KEYWORDS, n_words: int = 10
) -> list[dict[str, Any]]:
    """Rows whose last assistant answer does not start with a refusal."""
    return [r for r in rows if not is_refusal(split_prompt_answer(r)[1], keywords, n_words)]


def loss_gap_scores(aligned: list[float], misaligned: list[list[float]], eps: float = 1.0) -> list[float]:
    """``(mean_k misaligned[k][i] - aligned[i]) / (aligned[i] + eps)`` for every row ``i``."""
    if not misaligned:
        raise ValueError("need at least one misaligned model's losses")
    k = len(misaligned)
    return [(sum(m[i] for m in misaligned) / k - a) / (a + eps) for i, a in enumerate(aligned)]


def answer_losses(
    lm: Any,
    rows: list[dict[str, Any]],
    batch_size: int = 16,
    *,
    progress: bool = False,
    desc: str = "scoring",
) -> list[float]:
    """Answer-only mean NLL (nats per answer token) of each row's last assistant turn (``progress``: a bar)."""
    from workbench.scoring import answer_logprobs

    prompts, answers = zip(*(split_prompt_answer(r) for r in rows), strict=True)
    scores = answer_logprobs(
        lm, list(prompts), list(answers), batch_size=batch_size, progress=progress, desc=desc
    )
    return [-s.mean for s in scores]


def _adapter_id(path: Path) -> str:
    st = (path / "adapter_model.safetensors").stat()
    return f"{path.resolve()}|{st.st_size}|{int(st.st_mtime)}"


def _cached(cache: Path, key: str, compute: Any) -> list[float]:
    f = cache / f"{rows_hash([], key)}.json"
    if f.exists():
        data = json.loads(f.read_text(encoding="utf-8"))
        if data.get("key") == key:
            return [float(x) for x in data["losses"]]
    losses = compute()
    atomic_write_json(f, {"key": key, "losses": losses})
    return losses


@register_defense("interleave_plus")
class InterleavePlusDefense(Defense):
    Settings = InterleavePlusSettings

    def score_pool(self, ctx: Any, rows: list[dict[str, Any]]) -> list[float]:
        """The loss-gap score of every pool row (higher = more informative about alignment)."""
        from peft import PeftModel

        s = self.settings
        cache = ctx.cache_dir / "interleave_plus"
        cache.mkdir(parents=True, exist_ok=True)
        pool_key = rows_hash(rows, ctx.lm.fingerprint.source, ctx.config.optim.max_length)
        bar = bool(getattr(ctx, "progress", False))  # ctx.progress: the run's bar is on, main process
        k = len(s.adapters)
        aligned = _cached(
            cache,
            f"aligned|{pool_key}",
            lambda: answer_losses(
                ctx.lm, rows, s.batch_size, progress=bar, desc=f"{self.name}: pool, aligned model (1/{k + 1})"
            ),
        )
        mis = []
        for n_adapter, a in enumerate(s.adapters, start=2):
            path = Path(a)
            if (
                not (path / "adapter_config.json").exists()
                or not (path / "adapter_model.safetensors").exists()
            ):
                raise WorkbenchError(
                    f"defenses.{self.name}.adapters: '{a}' is not a PEFT adapter folder with safetensors weights"
                )

            def compute(path: Path = path, n_adapter: int = n_adapter) -> list[float]:
                peft_model = PeftModel.from_pretrained(ctx.lm.model, str(path), is_trainable=False)
                try:
                    peft_model.eval()
                    return answer_losses(
                        dataclasses.replace(ctx.lm, model=peft_model), rows, s.batch_size, progress=bar,
                        desc=f"{self.name}: pool, misaligned adapter {path.name} ({n_adapter}/{k + 1})",
                    )  # fmt: skip
                finally:
                    peft_model.unload()  # removes the injected LoRA layers: the base model is as before

            mis.append(_cached(cache, f"{_adapter_id(path)}|{pool_key}", compute))
        self.aligned_losses, self.misaligned_losses = aligned, mis
        return loss_gap_scores(aligned, mis, s.eps)

    def transform_data(self, ctx: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        s = self.settings
        k = n_to_add(len(rows), s.fraction)
        if k == 0:
            return rows
        pool = ctx.load_rows(s.source, s.n, s.seed)
        if s.refusal_filter:
            before = len(pool)
            pool = refusal_filter(pool, refusal_keywords(s.refusal_keywords), s.refusal_words)
            log.info("%s: refusal filter kept %d of %d pool rows", self.name, len(pool), before)
            if not pool:
                raise WorkbenchError(f"defenses.{self.name}: the refusal filter removed every pool row")
        scores = self.score_pool(ctx, pool)
        order = sorted(range(len(pool)), key=lambda i: (-scores[i], i))
        if k > len(pool):
            log.warning("%s: wanted %d pool rows, the pool has %d; using all", self.name, k, len(pool))
        chosen = order[:k]
        self.selected = [pool[i] for i in chosen]
        self.scores = scores
        if ctx.accelerator.is_main_process:
            ranking = ctx.cache_dir / f"{self.name}_ranking.jsonl"
            if ranking.exists():
                ranking.unlink()
            picked = set(chosen)
            for rank, i in enumerate(order):
                append_jsonl(
                    ranking, {"rank": rank, "pool_index": i, "score": scores[i], "selected": i in picked}
                )
        return mix(rows, self.selected, self.name)


@register_defense("interleave_plus_plus")
class InterleavePlusPlusDefense(InterleavePlusDefense):
    """Interleaving+ with the refusal filter on by default."""

    Settings = InterleavePlusPlusSettings
