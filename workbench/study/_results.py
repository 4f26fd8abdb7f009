"""A study's tables, read from its cells' eval runs: the tidy results, the aggregate over seeds, paired
differences on shared items and the Pareto plots (docs/studies.md says how each interval is made).

- ``results``: one row per cell x evaluation x setting x set x metric, the value and interval the eval wrote.
- ``aggregate``: over seeds. The value is the mean over seeds. Where the metric is a mean over items that the
  eval's per-row file records (the preference gap and its share, exact-match accuracy, plain accuracy of a
  sycophancy set, mean judge scores), the interval is a cluster bootstrap over the items with every seed's
  values of an item in its cluster (the items are the shared sample; seeds repeat the measurement); otherwise
  there is no interval (``method`` says so). ``seed_sd`` is the spread between seeds.
- ``paired``: each cell minus its reference cell (the grid values of ``reference:``, same seed, the other
  values equal; the reference cells minus the baseline when there is one) on the items both evaluated, with a
  cluster bootstrap over items (clusters: questions for free-form answers, problems for sycophancy sets); rows
  with ``seed == "all"`` pool every seed's differences of an item into its cluster.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from workbench.metrics import clustered_estimate, pareto_front
from workbench.runs import (
    AGGREGATE_CSV,
    EVAL_DIR,
    PAIRED_CSV,
    PARETO_JSON,
    RECOMMEND_JSON,
    RESULTS_CSV,
    RESULTS_PARQUET,
    STUDY_YAML,
    RunDir,
    read_jsonl,
    read_yaml,
)

from ._cells import read_cells, run_state
from ._spec import BASELINE, eval_dir

_SKIP = {"per_question", "by_category", "unclassified", "unmatched_incorrect"}


def _num(v: Any) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan


def set_metrics(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The top-level metrics of one eval set's summary: an estimate (value + interval) or a plain number."""
    out = []
    for key, v in result.items():
        if key in _SKIP or key in ("rows",):
            continue
        if isinstance(v, dict) and "value" in v:
            out.append(
                {
                    "metric": key,
                    "value": _num(v.get("value")),
                    "low": _num(v.get("low")),
                    "high": _num(v.get("high")),
                    "n": int(v.get("n") or 0),
                    "method": str(v.get("method") or ""),
                }
            )
        elif isinstance(v, int | float) and not isinstance(v, bool):
            out.append(
                {
                    "metric": key,
                    "value": float(v),
                    "low": math.nan,
                    "high": math.nan,
                    "n": 0,
                    "method": "none",
                }
            )
    return out


def _settings(run: Path) -> list[tuple[str, Path, dict[str, Any]]]:
    """``(setting, folder, summary)`` of an eval run: one, or one per sub-directory when it varied a coefficient."""
    summary = RunDir(run).summary() or {}
    if isinstance(summary.get("settings"), dict):
        return [(name, run / name, s) for name, s in summary["settings"].items() if isinstance(s, dict)]
    return [("", run, summary)]


# -------------------------------------------------------------------------------- per-item values
def _pref(field: str) -> Callable[[dict[str, Any]], tuple[str, str, float] | None]:
    def get(row: dict[str, Any]) -> tuple[str, str, float] | None:
        v = row.get(field)
        if v is None or "uid" not in row:
            return None
        return (row["uid"], row["uid"], float(v))

    return get


def _score(metric: str) -> Callable[[dict[str, Any]], tuple[str, str, float] | None]:
    def get(row: dict[str, Any]) -> tuple[str, str, float] | None:
        v = row.get(metric)
        if not isinstance(v, int | float) or isinstance(v, bool) or "uid" not in row:
            return None
        return (row["uid"], str(row.get("question_id")), float(v))

    return get


def _correct(row: dict[str, Any]) -> tuple[str, str, float] | None:
    v = row.get("correct")
    if not isinstance(v, bool) or "uid" not in row:
        return None
    return (row["uid"], str(row.get("problem_id") or row["uid"]), float(v))


def _plain_correct(row: dict[str, Any]) -> tuple[str, str, float] | None:
    return _correct(row) if row.get("kind") == "plain" else None


def item_rule(kind: str, metric: str) -> Callable[[dict[str, Any]], tuple[str, str, float] | None] | None:
    """How to read one item's value of ``metric`` from a per-row file: ``row -> (uid, cluster, value)``."""
    if kind == "preference" and metric == "preference_gap":
        return _pref("gap")
    if kind == "preference" and metric == "share_preferring_misaligned":
        return _pref("prefers_misaligned")
    if kind == "free_form" and metric.startswith("mean_"):
        return _score(metric[len("mean_") :])
    if kind in ("exact", "exact_match") and metric == "accuracy":
        return _correct
    if kind == "sycophancy" and metric == "plain_accuracy":
        return _plain_correct
    return None


def items(run: Path, set_name: str, kind: str, metric: str) -> dict[str, tuple[str, float]] | None:
    """uid -> (cluster, value) of one metric of one set in one eval run (None when not item-level)."""
    rule = item_rule(kind, metric)
    if rule is None:
        return None
    rows = read_jsonl(run / EVAL_DIR / f"{set_name}.jsonl")
    out = {}
    for row in rows:
        got = rule(row)
        if got is not None:
            out[got[0]] = (got[1], got[2])
    return out


# -------------------------------------------------------------------------------- the tables
def collect(study_dir: str | Path) -> list[dict[str, Any]]:
    """The tidy rows of every finished eval run of the study (one per cell x eval x setting x set x metric)."""
    study_dir = Path(study_dir)
    info = read_cells(study_dir)
    keys = info["grid_keys"]
    rows: list[dict[str, Any]] = []
    for cell in info["cells"]:
        for ename in cell["evals"]:
            run = eval_dir(study_dir, cell["id"], ename)
            if run_state(run) != "done":
                continue
            for setting, folder, summary in _settings(run):
                for set_name, result in (summary.get("sets") or {}).items():
                    if not isinstance(result, dict):
                        continue
                    for m in set_metrics(result):
                        rows.append(
                            {
                                "cell": cell["id"],
                                **{k: cell["values"].get(k, "") for k in keys},
                                "seed": cell["seed"],
                                "eval": ename,
                                "setting": setting,
                                "set": set_name,
                                **m,
                                "run": folder.relative_to(study_dir).as_posix(),
                                "_kind": str(result.get("kind") or ""),
                            }
                        )
    return rows


def _group_key(row: dict[str, Any], keys: list[str]) -> tuple[Any, ...]:
    return (*(row[k] for k in keys), row["eval"], row["setting"], row["set"], row["metric"])


def _fmt(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def aggregate(study_dir: Path, rows: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_group_key(r, keys), []).append(r)
    out = []
    for gk, members in groups.items():
        vals = [m["value"] for m in members if not math.isnan(m["value"])]
        value = sum(vals) / len(vals) if vals else math.nan
        sd = math.sqrt(sum((v - value) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else math.nan
        low = high = math.nan
        method = "none"
        per_run = [items(study_dir / m["run"], m["set"], m["_kind"], m["metric"]) for m in members]
        if len(members) == 1:
            low, high, method = members[0]["low"], members[0]["high"], members[0]["method"]
        elif all(p for p in per_run):
            clusters: dict[str, list[float]] = {}
            for p in per_run:
                for _uid, (cl, v) in (p or {}).items():
                    clusters.setdefault(cl, []).append(v)
            est = clustered_estimate(list(clusters.items()))
            low, high, method = est.low, est.high, "cluster_bootstrap(items, seeds pooled)"
        elif len(vals) > 1:  # no item-level rows to pool: no interval (the spread between seeds is seed_sd)
            method = "mean over seeds (no item rows; see seed_sd)"
        out.append(
            {
                **dict(zip(keys, gk[: len(keys)], strict=True)),
                "eval": gk[-4],
                "setting": gk[-3],
                "set": gk[-2],
                "metric": gk[-1],
                "value": value,
                "low": low,
                "high": high,
                "n_seeds": len(members),
                "seed_sd": sd,
                "method": method,
                "cells": ";".join(m["cell"] for m in members),
                "runs": ";".join(m["run"] for m in members),
            }
        )
    return out


def _references(
    info: dict[str, Any], reference: dict[str, str]
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(cell, its reference cell) pairs: reference values substituted, same seed; references vs baseline."""
    keys = info["grid_keys"]
    cells = info["cells"]
    index = {(tuple(c["values"].get(k) for k in keys), c["seed"]): c for c in cells}
    base = next((c for c in cells if c["id"] == BASELINE), None)
    pairs = []
    for c in cells:
        if c["id"] == BASELINE:
            continue
        is_ref = bool(reference) and all(c["values"].get(k) == v for k, v in reference.items())
        if reference and not is_ref:
            want = {**c["values"], **reference}
            ref = index.get((tuple(want.get(k) for k in keys), c["seed"]))
            if ref is not None:
                pairs.append((c, ref))
        if base is not None and (is_ref or not reference):
            pairs.append((c, base))
    return pairs


def paired(
    study_dir: Path, rows: list[dict[str, Any]], keys: list[str], reference: dict[str, str]
) -> list[dict[str, Any]]:
    info = read_cells(study_dir)
    by_cell: dict[str, dict[tuple[str, str, str, str], dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault(r["cell"], {})[(r["eval"], r["setting"], r["set"], r["metric"])] = r
    out = []
    pooled: dict[tuple[Any, ...], dict[str, Any]] = {}
    for cell, ref in _references(info, reference):
        mine, theirs = by_cell.get(cell["id"], {}), by_cell.get(ref["id"], {})
        changed = [k for k in keys if cell["values"].get(k) != ref["values"].get(k)]
        mine_label = ",".join(f"{k}={cell['values'][k]}" for k in changed)
        ref_label = (
            BASELINE if ref["id"] == BASELINE else ",".join(f"{k}={ref['values'][k]}" for k in changed)
        )
        same = [k for k in keys if k not in changed and ref["id"] != BASELINE]
        context = " [" + ",".join(f"{k}={cell['values'][k]}" for k in same) + "]" if same else ""
        comparison = f"{mine_label} - {ref_label}{context}"
        for what, r in mine.items():
            # the baseline has no settings: compare each setting with its single run
            r0 = theirs.get(what) or theirs.get((what[0], "", what[2], what[3]))
            if r0 is None:
                continue
            a = items(study_dir / r["run"], r["set"], r["_kind"], r["metric"])
            b = items(study_dir / r0["run"], r0["set"], r0["_kind"], r0["metric"])
            if not a or not b:
                continue
            shared = sorted(set(a) & set(b))
            clusters: dict[str, list[float]] = {}
            for uid in shared:
                clusters.setdefault(a[uid][0], []).append(a[uid][1] - b[uid][1])
            est = clustered_estimate(list(clusters.items()))
            row = {
                "cell": cell["id"],
                "reference": ref["id"],
                "comparison": comparison,
                **{k: cell["values"].get(k, "") for k in keys},
                "seed": cell["seed"],
                "eval": what[0],
                "setting": what[1],
                "set": what[2],
                "metric": what[3],
                "value": est.value,
                "low": est.low,
                "high": est.high,
                "n": est.n,
                "method": f"paired {est.method}",
            }
            out.append(row)
            gk = (comparison, *(cell["values"].get(k, "") for k in keys), *what)
            pool = pooled.setdefault(gk, {"row": row, "cells": [], "refs": [], "clusters": {}})
            pool["cells"].append(cell["id"])
            pool["refs"].append(ref["id"])
            for cl, diffs in clusters.items():
                pool["clusters"].setdefault(cl, []).extend(diffs)
    for pool in pooled.values():
        if len(pool["cells"]) < 2:
            continue
        est = clustered_estimate(list(pool["clusters"].items()))
        out.append(
            {
                **pool["row"],
                "cell": ";".join(pool["cells"]),
                "reference": ";".join(dict.fromkeys(pool["refs"])),
                "seed": "all",
                "value": est.value,
                "low": est.low,
                "high": est.high,
                "n": est.n,
                "method": f"paired {est.method} (seeds pooled)",
            }
        )
    return out


def _match(row: dict[str, Any], axis: str) -> bool:
    parts = axis.split("/")
    if row["eval"] != parts[0] or row["metric"] != parts[-1]:
        return False
    return len(parts) == 2 or row["set"] == parts[1]


def pareto(study: dict[str, Any], agg: list[dict[str, Any]], keys: list[str]) -> dict[str, Any]:
    plots = []
    for spec in study.get("pareto") or []:
        points: dict[tuple[Any, ...], dict[str, Any]] = {}
        for axis in ("x", "y"):
            for r in agg:
                if not _match(r, spec[axis]):
                    continue
                values = {k: r[k] for k in keys}
                label = ",".join(f"{k}={v}" for k, v in values.items()) if values else "all"
                if all(v == BASELINE for v in values.values()) and values:
                    label = BASELINE
                if r["setting"]:
                    label += f" [{r['setting']}]"
                p = points.setdefault(
                    (*values.values(), r["setting"]),
                    {"label": label, "values": values, "setting": r["setting"], "cells": [], "runs": []},
                )
                p[axis], p[f"{axis}_low"], p[f"{axis}_high"] = (
                    _fmt(r["value"]),
                    _fmt(r["low"]),
                    _fmt(r["high"]),
                )
                p["cells"] = sorted(set(p["cells"]) | set(r["cells"].split(";")))
                p["runs"] = sorted(set(p["runs"]) | set(r["runs"].split(";")))
        # the baseline is drawn on every plot: where the plot's eval did not run on it (an eval that needs a
        # fine-tune), its value of the same set and metric from the eval that did
        if not any(p.get("label") == BASELINE for p in points.values()):
            base = {}
            for axis in ("x", "y"):
                part = spec[axis].split("/")
                found = [
                    r
                    for r in agg
                    if keys
                    and all(r[k] == BASELINE for k in keys)
                    and r["metric"] == part[-1]
                    and (len(part) == 2 or r["set"] == part[1])
                ]
                if found:
                    base[axis] = found[0]
            if len(base) == 2:
                p = {
                    "label": f"{BASELINE} (from eval {base['x']['eval']})",
                    "values": {k: BASELINE for k in keys},
                }
                p.update(
                    {
                        "setting": "",
                        "cells": [BASELINE],
                        "runs": sorted({base["x"]["runs"], base["y"]["runs"]}),
                    }
                )
                for axis, r in base.items():
                    p[axis], p[f"{axis}_low"], p[f"{axis}_high"] = (
                        _fmt(r["value"]),
                        _fmt(r["low"]),
                        _fmt(r["high"]),
                    )
                points[("__base__",)] = p
        pts = list(points.values())
        for p in pts:
            for axis in ("x", "y"):
                p.setdefault(axis, None)
                p.setdefault(f"{axis}_low", None)
                p.setdefault(f"{axis}_high", None)
        coords = [
            (math.nan if p["x"] is None else p["x"], math.nan if p["y"] is None else p["y"]) for p in pts
        ]
        front = set(pareto_front(coords, maximize=tuple(spec["maximize"]))) if pts else set()
        for i, p in enumerate(pts):
            p["on_front"] = i in front
        plots.append(
            {
                "title": spec.get("title") or f"{spec['y']} vs {spec['x']}",
                "x": {"key": spec["x"], "label": spec["x"], "maximize": spec["maximize"][0]},
                "y": {"key": spec["y"], "label": spec["y"], "maximize": spec["maximize"][1]},
                "points": pts,
            }
        )
    return {"plots": plots}


def _value(rows: list[dict[str, Any]], set_metric: str) -> float:
    set_name, metric = set_metric.split("/")
    vals = [r["value"] for r in rows if r["set"] == set_name and r["metric"] == metric]
    return vals[0] if vals else math.nan


def _removed(value: float, goal: float, shifted: float, sign: float) -> float:
    """The share of the shift (``shifted - goal``, signed so that a positive shift is the bad direction) that
    ``value`` removes: 0 at the shifted model, 1 at the base model's value."""
    shift = sign * (shifted - goal)
    return sign * (shifted - value) / shift if shift > 0 else math.nan


def _removes(value: float, goal: float, shifted: float, sign: float, min_removed: float) -> bool:
    if math.isnan(value) or math.isnan(goal):
        return False
    share = _removed(value, goal, shifted, sign)
    if min_removed < 1.0 and not math.isnan(share):
        return share >= min_removed
    return sign * (value - goal) <= 0


def recommend(study: dict[str, Any], agg: list[dict[str, Any]], keys: list[str]) -> list[dict[str, Any]]:
    """The setting to use per grid group for each ``recommend:`` spec (see ``_spec._recommend_specs``)."""
    out = []
    for spec in study.get("recommend") or []:
        base_rows = [
            r for r in agg if keys and all(r[k] == BASELINE for k in keys) and r["eval"] == spec["reference"]
        ]
        goal = _value(base_rows, spec["target"])
        base_costs = {c: _value(base_rows, c) for c in spec["costs"]}
        groups: dict[tuple[str, ...], dict[str, list[dict[str, Any]]]] = {}
        for r in agg:
            if r["eval"] == spec["settings_of"] and r["setting"]:
                groups.setdefault(tuple(r[k] for k in keys), {}).setdefault(r["setting"], []).append(r)
        for gvals, settings in groups.items():
            target = {s: _value(rows, spec["target"]) for s, rows in settings.items()}
            costs = {c: {s: _value(rows, c) for s, rows in settings.items()} for c in spec["costs"]}
            spans = {
                c: (
                    max(v for v in cv.values() if not math.isnan(v))
                    - min(v for v in cv.values() if not math.isnan(v))
                )
                if any(not math.isnan(v) for v in cv.values())
                else math.nan
                for c, cv in costs.items()
            }

            cost_of = {
                s: sum(
                    abs(costs[c][s] - base_costs[c]) / spans[c]
                    for c in spec["costs"]
                    if spans[c]
                    and not math.isnan(spans[c])
                    and not math.isnan(base_costs[c])
                    and not math.isnan(costs[c][s])
                )
                for s in settings
            }
            sign = -1.0 if spec["maximize_target"] else 1.0
            shifted = math.nan
            if spec.get("shifted_setting"):
                shifted = target.get(spec["shifted_setting"], math.nan)
            elif spec.get("shifted_eval"):
                rows = [r for r in agg if r["eval"] == spec["shifted_eval"] and not r["setting"]]
                rows = [r for r in rows if tuple(r[k] for k in keys) == gvals]
                shifted = _value(rows, spec["target"])

            min_removed = float(spec.get("min_removed", 1.0))
            candidates = [s for s, v in target.items() if _removes(v, goal, shifted, sign, min_removed)]
            if candidates:
                pick = min(candidates, key=lambda s: (cost_of[s], s))
                share = _removed(target[pick], goal, shifted, sign)
                removed_text = f", {share:.0%} of the shift removed" if not math.isnan(share) else ""
                why = (
                    f"{spec['target']} {target[pick]:+.3f} (base model {goal:+.3f}{removed_text}): the least "
                    f"cost ({cost_of[pick]:.2f}) of the {len(candidates)} setting(s) removing at least "
                    f"{spec.get('min_removed', 1.0):.0%} of the shift"
                )
            else:
                seen = [s for s in target if not math.isnan(target[s])]
                pick = (
                    (max if spec["maximize_target"] else min)(seen, key=lambda s: target[s]) if seen else ""
                )
                why = (
                    f"no setting removes {min_removed:.0%} of the shift in {spec['target']} (base model "
                    f"{goal:+.3f}); {pick} comes closest"
                )
            out.append(
                {
                    **dict(zip(keys, gvals, strict=True)),
                    "settings_of": spec["settings_of"],
                    "recommended": pick,
                    "removes_shift": bool(candidates),
                    "reason": why,
                    "target": spec["target"],
                    "goal": _fmt(goal),
                    "shifted": _fmt(shifted),
                    "min_removed": spec.get("min_removed", 1.0),
                    "settings": {
                        s: {
                            "target": _fmt(target[s]),
                            "removed": _fmt(_removed(target[s], goal, shifted, sign)),
                            "cost": _fmt(cost_of[s]),
                            **{c: _fmt(costs[c][s]) for c in spec["costs"]},
                        }
                        for s in sorted(settings)
                    },
                    "baseline": {c: _fmt(v) for c, v in base_costs.items()},
                }
            )
    return out


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> Any:
    import pandas as pd

    from workbench.io import atomic_path

    df = pd.DataFrame(rows, columns=columns)
    if "seed" in df and all(r.get("seed") is None or type(r.get("seed")) is int for r in rows):
        df["seed"] = df["seed"].astype("Int64")  # the baseline has none: integers stay integers
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return df


def write_tables(study_dir: str | Path, echo: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Write results.{csv,parquet}, aggregate.csv, paired.csv, pareto.json and report.html from the runs."""

    from workbench.io import atomic_path, atomic_write_json

    study_dir = Path(study_dir)
    info = read_cells(study_dir)
    keys = info["grid_keys"]
    study = read_yaml(study_dir / STUDY_YAML) or {}
    rows = collect(study_dir)
    cols = [
        "cell",
        *keys,
        "seed",
        "eval",
        "setting",
        "set",
        "metric",
        "value",
        "low",
        "high",
        "n",
        "method",
        "run",
    ]
    df = _write_csv(study_dir / RESULTS_CSV, rows, cols)  # seed as Int64 (the baseline has none)
    with atomic_path(study_dir / RESULTS_PARQUET) as tmp:
        df.to_parquet(tmp, index=False)
    agg = aggregate(study_dir, rows, keys)
    _write_csv(
        study_dir / AGGREGATE_CSV,
        agg,
        [
            *keys,
            "eval",
            "setting",
            "set",
            "metric",
            "value",
            "low",
            "high",
            "n_seeds",
            "seed_sd",
            "method",
            "cells",
            "runs",
        ],
    )
    pairs = paired(study_dir, rows, keys, dict(study.get("reference") or {}))
    _write_csv(
        study_dir / PAIRED_CSV,
        pairs,
        [
            "cell",
            "reference",
            "comparison",
            *keys,
            "seed",
            "eval",
            "setting",
            "set",
            "metric",
            "value",
            "low",
            "high",
            "n",
            "method",
        ],
    )
    atomic_write_json(study_dir / PARETO_JSON, _json_safe(pareto(study, agg, keys)))
    recs = recommend(study, agg, keys)
    if recs:
        atomic_write_json(study_dir / RECOMMEND_JSON, _json_safe(recs))
    written = {
        "results": study_dir / RESULTS_CSV,
        "aggregate": study_dir / AGGREGATE_CSV,
        "paired": study_dir / PAIRED_CSV,
        "pareto": study_dir / PARETO_JSON,
    }
    from ._report import write_report

    written["report"] = write_report(study_dir)
    if echo is not None:
        for line in summary_lines(agg, pairs, keys):
            echo(line)
        for r in recs:
            label = ",".join(f"{k}={r[k]}" for k in keys)
            echo(f"recommended {r['settings_of']} setting for {label}: {r['recommended']} ({r['reason']})")
        echo(f"tables: {', '.join(str(p) for p in written.values())}")
    return written


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _est(v: float, lo: float, hi: float) -> str:
    if math.isnan(v):
        return "n/a"
    if math.isnan(lo) or math.isnan(hi):
        return f"{v:+.3f}"
    return f"{v:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def summary_lines(
    agg: Iterable[dict[str, Any]], pairs: Iterable[dict[str, Any]], keys: list[str]
) -> list[str]:
    """The aggregate and the pooled paired differences as short console lines."""
    lines = []
    agg = [r for r in agg if not r["metric"].startswith("share_")]
    if agg:
        lines.append("aggregate over seeds (value [95% interval], n seeds):")
        for r in agg:
            label = ",".join(f"{k}={r[k]}" for k in keys) or "all"
            setting = f" [{r['setting']}]" if r["setting"] else ""
            lines.append(
                f"  {label}{setting}  {r['eval']}/{r['set']}/{r['metric']}: "
                f"{_est(r['value'], r['low'], r['high'])} (n={r['n_seeds']})"
            )
    pooled = [p for p in pairs if p["seed"] == "all"] or list(pairs)
    pooled = [p for p in pooled if not p["metric"].startswith("share_")]
    if pooled:
        lines.append("paired differences (cell - reference, same items):")
        for p in pooled:
            setting = f" [{p['setting']}]" if p["setting"] else ""
            lines.append(
                f"  {p['comparison']}{setting}  {p['eval']}/{p['set']}/{p['metric']}: "
                f"{_est(p['value'], p['low'], p['high'])} (n={p['n']}, seed {p['seed']})"
            )
    return lines


def read_results(study_dir: str | Path) -> Any:
    """results.csv as a pandas DataFrame."""
    import pandas as pd

    return pd.read_csv(Path(study_dir) / RESULTS_CSV, keep_default_na=True, dtype={"setting": str})


__all__ = ["collect", "item_rule", "read_results", "set_metrics", "summary_lines", "write_tables"]
