"""The ``monitor:`` block of a training config: what to measure, how often, and the alert rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from workbench.settings import from_mapping, setting, to_mapping
from workbench.training import DataSource

from .._vector import STATISTICS  # the one list of persona-vector statistics

DEFAULT_EVERY = 20
RULES = ("rise_sd", "rise_abs", "above", "below")
ACTIONS = ("warn", "stop")


@dataclass
class VectorProbe:
    """A persona vector to project onto, at some layers."""

    path: str = setting(help="persona_vector .safetensors artifact (made for the trained model)")
    layers: list[int] = setting(help="layers l: site blocks.{l}.hook_resid_post", default_factory=list)
    statistic: str = setting("response_avg", help="which vector of the file", choices=STATISTICS)
    name: str | None = setting(None, help="name in the signal names (default: the vector's trait)")

    def __post_init__(self) -> None:
        if not self.layers:
            raise ValueError("'layers' needs at least one layer, e.g. [12]")
        if any(isinstance(x, bool) or x < 0 for x in self.layers):
            raise ValueError(f"'layers' must be non-negative integers, got {self.layers}")
        if self.name is not None and ("/" in self.name or not self.name.strip()):
            raise ValueError(f"'name' must be a non-empty word without '/', got {self.name!r}")


@dataclass
class AlertRule:
    """One threshold: ``signal`` (a name or a glob such as ``proj/evil/*``) against its start-of-training value."""

    signal: str = setting(help="signal name or glob pattern (proj/evil/L12, proj/*, pref_gap, indomain_loss)")
    rule: str = setting(
        "rise_sd",
        help="rise_sd: value > start + k * sd (sd: spread over the probe examples at the start); "
        "rise_abs: value > start + value; above / below: value beyond the fixed 'value'",
        choices=RULES,
    )
    k: float = setting(3.0, help="standard deviations, for rise_sd")
    value: float | None = setting(None, help="the threshold for rise_abs (a positive rise), above and below")
    action: str = setting("warn", help="warn: log line + alerts.jsonl; stop: also end the run with a checkpoint",
                     choices=ACTIONS)  # fmt: skip
    consecutive: int = setting(1, help="measurements in a row beyond the threshold before the alert fires")

    def __post_init__(self) -> None:
        if not self.signal.strip():
            raise ValueError("'signal' must name a signal or a glob pattern")
        if self.rule == "rise_sd" and not (self.k > 0):
            raise ValueError(f"'k' must be positive for rise_sd, got {self.k}")
        if self.rule in ("rise_abs", "above", "below") and self.value is None:
            raise ValueError(f"rule '{self.rule}' needs a 'value'")
        if self.rule == "rise_abs" and self.value is not None and self.value <= 0:
            raise ValueError(f"'value' must be a positive rise for rise_abs, got {self.value}")
        if self.consecutive < 1:
            raise ValueError(f"'consecutive' must be >= 1, got {self.consecutive}")

    @property
    def rule_id(self) -> str:
        """A stable description, so an alert fires once per (rule, signal) even across ``--resume``."""
        param = f"k={self.k:g}" if self.rule == "rise_sd" else f"value={self.value:g}"
        return f"{self.signal}|{self.rule}|{param}|{self.action}"


@dataclass
class MonitorSettings:
    """The ``monitor:`` block of a training config."""

    every: int = setting(
        DEFAULT_EVERY, help="measure every N optimizer steps (and before the first, after the last)"
    )
    vectors: list[VectorProbe] = setting(
        help="persona vectors and layers to project onto", default_factory=list
    )
    reference: DataSource | None = setting(
        help="teacher-forced reference answers (chat rows: the last assistant turn; pairs: the aligned "
        "answer); null: no reference projections",
        default_factory=lambda: DataSource(name="contrastive_pairs", n=16, seed=0),
    )
    generate: int = setting(4, help="greedy generations from the first N reference prompts (0: none)")
    max_new_tokens: int = setting(16, help="tokens per greedy generation")
    pairs: DataSource | None = setting(
        help="general-domain (question, aligned, misaligned) pairs for pref_gap; null: none",
        default_factory=lambda: DataSource(name="contrastive_pairs", n=16, seed=1),
    )
    indomain: DataSource | None = setting(
        None,
        help="held-out in-domain chat rows (null: the run's eval_data, else rows of the first shipped "
        "training generator drawn with seed + 1 and not in the training set)",
    )
    indomain_n: int = setting(8, help="in-domain rows to use (0: no in-domain signals)")
    batch_size: int = setting(16, help="sequences per forward pass")
    alerts: list[AlertRule] = setting(help="threshold rules (see docs/monitor.md)", default_factory=list)

    def __post_init__(self) -> None:
        for key in ("every", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ValueError(f"'{key}' must be >= 1, got {getattr(self, key)}")
        for key in ("generate", "indomain_n"):
            if getattr(self, key) < 0:
                raise ValueError(f"'{key}' must be >= 0, got {getattr(self, key)}")
        names = [v.name for v in self.vectors if v.name]
        if len(set(names)) != len(names):
            raise ValueError(f"vector names must be distinct, got {names}")

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, where: str = "config") -> MonitorSettings:
        """Validate a ``monitor:`` block; errors name the key (``monitor.alerts.0.rule``)."""
        return from_mapping(cls, data or {}, where, prefix="monitor.")

    def to_dict(self) -> dict[str, Any]:
        return to_mapping(self)
