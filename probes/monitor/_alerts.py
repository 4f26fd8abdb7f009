"""Alert rules applied to monitor rows: a signal against its start-of-training value or a fixed threshold."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Sequence
from typing import Any, TypeGuard

from ._settings import AlertRule

META_KEYS = ("step", "sd", "n", "monitor_seconds", "train_seconds")
"""Keys of a monitor row that are not signals."""
MIN_SD_EXAMPLES = 4
"""``rise_sd`` needs a start-of-training spread over at least this many probe examples."""


def signal_names(row: dict[str, Any]) -> list[str]:
    """The signals of a monitor row (numeric values that are not bookkeeping)."""
    return [
        k
        for k, v in row.items()
        if k not in META_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def finite(x: Any) -> TypeGuard[float]:
    """A finite number (bools are not numbers here)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def rule_threshold(rule: AlertRule, baseline: dict[str, Any], signal: str) -> float | None:
    """The value beyond which ``signal`` trips ``rule``, from the start-of-training row (None: undefined)."""
    if rule.rule in ("above", "below"):
        return float(rule.value)  # type: ignore[arg-type]
    base = baseline.get(signal)
    if not finite(base):
        return None
    if rule.rule == "rise_abs":
        return float(base) + float(rule.value)  # type: ignore[arg-type]
    sd = (baseline.get("sd") or {}).get(signal)
    n = (baseline.get("n") or {}).get(signal, MIN_SD_EXAMPLES)
    if not finite(sd) or n < MIN_SD_EXAMPLES:
        return None  # a spread from one to three examples says little
    return float(base) + rule.k * float(sd)


def _tripped(rule: AlertRule, value: Any, threshold: float) -> bool:
    if not finite(value):
        return False
    return value < threshold if rule.rule == "below" else value > threshold


def evaluate_alerts(
    rules: Sequence[AlertRule], history: Sequence[dict[str, Any]], fired: set[str] | None = None
) -> list[dict[str, Any]]:
    """Alerts that the last row of ``history`` fires (each (rule, signal) fires once; ``fired`` is updated).

    ``history`` is the monitor rows so far, the start-of-training row first. A rule compares each matching
    signal of the last row, and of the ``consecutive - 1`` rows before it, with its threshold (see
    ``rule_threshold``); the baseline of a signal is the first row that has it.
    """
    fired = fired if fired is not None else set()
    if not history:
        return []
    last = history[-1]
    out: list[dict[str, Any]] = []
    for rule in rules:
        for signal in sorted(signal_names(last)):
            if not fnmatch.fnmatchcase(signal, rule.signal):
                continue
            key = f"{rule.rule_id}@{signal}"
            if key in fired:
                continue
            having = [r for r in history if finite(r.get(signal))]
            if not having:
                continue
            threshold = rule_threshold(rule, having[0], signal)
            if threshold is None or len(having) < rule.consecutive:
                continue
            if rule.rule in ("rise_sd", "rise_abs") and len(having) < 2:
                continue  # the baseline row itself never counts as a rise
            window = having[-rule.consecutive :]
            if window[-1] is not last or not all(_tripped(rule, r[signal], threshold) for r in window):
                continue
            fired.add(key)
            value = float(last[signal])
            base = having[0][signal]
            word = "fell below" if rule.rule == "below" else "rose above"
            if rule.rule == "rise_sd":
                how = f"start {base:.4g} + {rule.k:g} sd"
            elif rule.rule == "rise_abs":
                how = f"start {base:.4g} + {rule.value:g}"
            else:
                how = "fixed threshold"
            out.append(
                {
                    "step": int(last["step"]),
                    "signal": signal,
                    "rule": rule.rule,
                    "action": rule.action,
                    "value": value,
                    "threshold": threshold,
                    "baseline": float(base),
                    "rule_id": rule.rule_id,
                    "message": f"{signal} {word} {threshold:.4g} ({how}): {value:.4g} at step {last['step']}",
                }
            )
    return out
