"""Markdown tables of a finished study (the figures in docs/studies.md).

    python studies/tables.py STUDY_DIR [--paired] [--by-eval] [--metrics preference_gap,accuracy]

Reads ``aggregate.csv`` (and ``paired.csv``) of the study directory; values are rounded to 3 decimals, each
with its 95% interval and the interval's method.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pandas as pd


def _num(v: object) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _est(value: object, low: object, high: object) -> str:
    v, lo, hi = _num(value), _num(low), _num(high)
    if math.isnan(v):
        return "n/a"
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:.3f}"
    return f"{v:.3f} [{lo:.3f}, {hi:.3f}]"


def aggregate_table(study: Path, metrics: set[str], by_eval: bool = False) -> str:
    """One row per grid value (and setting), one column per eval/set/metric: mean over seeds [95% CI];
    ``by_eval``: one row per grid value x eval x setting, one column per set/metric."""
    df = pd.read_csv(study / "aggregate.csv", keep_default_na=False, dtype=str)
    df = df[df["metric"].isin(metrics)]
    keys = list(df.columns[: list(df.columns).index("eval")])
    cols: list[str] = []
    rows: dict[tuple[str, ...], dict[str, str]] = {}
    for _, r in df.iterrows():
        col = f"{r['set']}/{r['metric']}" if by_eval else f"{r['eval']}/{r['set']}/{r['metric']}"
        if col not in cols:
            cols.append(col)
        row_key = (*(r[k] for k in keys), *([r["eval"]] if by_eval else []), r["setting"])
        rows.setdefault(row_key, {})[col] = _est(r["value"], r["low"], r["high"])
    head = [*keys, *(["eval"] if by_eval else []), "setting", *cols]
    out = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for row_key, vals in rows.items():
        out.append("| " + " | ".join([*row_key, *(vals.get(c, "") for c in cols)]) + " |")
    return "\n".join(out)


def paired_table(study: Path, metrics: set[str]) -> str:
    """The paired differences pooled over seeds (``seed == all``)."""
    df = pd.read_csv(study / "paired.csv", keep_default_na=False, dtype=str)
    df = df[(df["seed"] == "all") & df["metric"].isin(metrics)]
    out = [
        "| comparison | eval/set/metric | setting | difference [95% CI] | items | method |",
        "|" + " --- |" * 6,
    ]
    for _, r in df.iterrows():
        out.append(
            f"| {r['comparison']} | {r['eval']}/{r['set']}/{r['metric']} | {r['setting']} | "
            f"{_est(r['value'], r['low'], r['high'])} | {r['n']} | {r['method']} |"
        )
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study_dir", type=Path)
    parser.add_argument("--metrics", default="preference_gap,accuracy")
    parser.add_argument("--paired", action="store_true")
    parser.add_argument("--by-eval", action="store_true", help="one row per grid value x eval x setting")
    args = parser.parse_args()
    metrics = set(args.metrics.split(","))
    print(aggregate_table(args.study_dir, metrics, args.by_eval))  # noqa: T201
    if args.paired:
        print()  # noqa: T201
        print(paired_table(args.study_dir, metrics))  # noqa: T201


if __name__ == "__main__":
    main()
