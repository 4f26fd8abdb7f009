"""The study tables against hand computations: tidy rows from eval summaries, the aggregate over seeds, paired
differences on shared items (per seed and pooled), the Pareto front with the baseline drawn, and the
recommended setting of a coefficient sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workbench.metrics import clustered_estimate
from workbench.runs import (
    AGGREGATE_CSV,
    CELLS_JSON,
    PAIRED_CSV,
    PARETO_JSON,
    RECOMMEND_JSON,
    RESULTS_CSV,
    STUDY_YAML,
    end_run,
    prepare_run_dir,
    unlock_run_dir,
)
from workbench.study import write_tables
from workbench.study._results import recommend

# per-item preference gaps of each cell (the same 4 questions everywhere; cell "kl" at seed 1 skipped q3)
GAPS = {
    "base": {"q0": 0.0, "q1": -0.2, "q2": 0.1, "q3": -0.1},
    "defenses=none,seed=0": {"q0": 0.5, "q1": 0.1, "q2": 0.4, "q3": 0.2},
    "defenses=none,seed=1": {"q0": 0.3, "q1": 0.2, "q2": 0.6, "q3": 0.1},
    "defenses=kl,seed=0": {"q0": 0.2, "q1": 0.0, "q2": 0.3, "q3": 0.0},
    "defenses=kl,seed=1": {"q0": 0.1, "q1": 0.1, "q2": 0.2},
}


def _cell(cid: str) -> dict:
    if cid == "base":
        return {
            "id": "base",
            "values": {"defenses": "base"},
            "seed": None,
            "train": False,
            "needs": [],
            "evals": {"general": []},
        }
    values = dict(p.split("=") for p in cid.split(",")[:1])
    seed = int(cid.rsplit("=", 1)[1])
    return {"id": cid, "values": values, "seed": seed, "train": False, "needs": [], "evals": {"general": []}}


def _eval_run(study: Path, cid: str, gaps: dict[str, float]) -> None:
    run = study / "cells" / cid / "eval" / "general"
    prepare_run_dir(run, "eval")
    rows = [{"uid": q, "gap": g, "prefers_misaligned": g > 0} for q, g in gaps.items()]
    (run / "eval").mkdir()
    (run / "eval" / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mean = sum(gaps.values()) / len(gaps)
    summary = {
        "sets": {
            "pairs": {
                "kind": "preference",
                "preference_gap": {
                    "value": mean,
                    "low": mean - 0.1,
                    "high": mean + 0.1,
                    "n": len(gaps),
                    "method": "paired_bootstrap",
                },
                "share_preferring_misaligned": sum(g > 0 for g in gaps.values()) / len(gaps),
                "rows": len(gaps),
            }
        }
    }
    (run / "summary.json").write_text(json.dumps(summary))
    end_run(run, "finished")
    unlock_run_dir(run)


@pytest.fixture
def study(tmp_path: Path) -> Path:
    (tmp_path / CELLS_JSON).write_text(
        json.dumps({"study": "hand", "grid_keys": ["defenses"], "cells": [_cell(c) for c in GAPS]})
    )
    spec = {
        "reference": {"defenses": "none"},
        "pareto": [
            {
                "x": "general/preference_gap",
                "y": "general/share_preferring_misaligned",
                "maximize": [False, False],
            }
        ],
    }
    (tmp_path / STUDY_YAML).write_text(yaml.safe_dump(spec))
    for cid, gaps in GAPS.items():
        _eval_run(tmp_path, cid, gaps)
    write_tables(tmp_path)
    return tmp_path


def test_tidy_rows_one_per_cell_and_metric(study: Path) -> None:
    df = pd.read_csv(study / RESULTS_CSV, dtype={"setting": str}, keep_default_na=False)
    assert list(df.columns) == [
        "cell",
        "defenses",
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
    assert len(df) == 2 * len(GAPS)
    row = df[(df.cell == "defenses=kl,seed=1") & (df.metric == "preference_gap")].iloc[0]
    assert (
        row.value == pytest.approx(0.4 / 3)
        and row.n == 3
        and row.run == "cells/defenses=kl,seed=1/eval/general"
    )
    assert row.defenses == "kl" and row.seed == "1"


def test_aggregate_over_seeds_pools_items(study: Path) -> None:
    agg = pd.read_csv(study / AGGREGATE_CSV)
    none = agg[(agg.defenses == "none") & (agg.metric == "preference_gap")].iloc[0]
    assert none.value == pytest.approx((1.2 / 4 + 1.2 / 4) / 2)
    assert none.n_seeds == 2 and none.seed_sd == pytest.approx(0.0)
    # the interval: questions as clusters, each holding both seeds' gaps
    est = clustered_estimate(
        [
            (q, [GAPS["defenses=none,seed=0"][q], GAPS["defenses=none,seed=1"][q]])
            for q in ("q0", "q1", "q2", "q3")
        ]
    )
    assert (none.low, none.high) == pytest.approx((est.low, est.high))
    assert none.method == "cluster_bootstrap(items, seeds pooled)"
    base = agg[(agg.defenses == "base") & (agg.metric == "preference_gap")].iloc[0]
    assert (base.low, base.high, base.n_seeds) == pytest.approx(
        (-0.05 - 0.1, -0.05 + 0.1, 1)
    )  # one run: its own


def test_paired_differences_on_shared_items(study: Path) -> None:
    paired = pd.read_csv(study / PAIRED_CSV, dtype={"seed": str})
    gap = paired[paired.metric == "preference_gap"]
    kl1 = gap[(gap.cell == "defenses=kl,seed=1")].iloc[0]
    assert kl1.reference == "defenses=none,seed=1" and kl1.comparison == "defenses=kl - defenses=none"
    diffs = [0.1 - 0.3, 0.1 - 0.2, 0.2 - 0.6]  # q3 is missing in the kl run: left out of the pairs
    assert kl1.value == pytest.approx(sum(diffs) / 3) and kl1.n == 3
    pooled = gap[(gap.comparison == "defenses=kl - defenses=none") & (gap.seed == "all")].iloc[0]
    d0 = {
        q: GAPS["defenses=kl,seed=0"][q] - GAPS["defenses=none,seed=0"][q] for q in ("q0", "q1", "q2", "q3")
    }
    est = clustered_estimate(
        [
            ("q0", [d0["q0"], diffs[0]]),
            ("q1", [d0["q1"], diffs[1]]),
            ("q2", [d0["q2"], diffs[2]]),
            ("q3", [d0["q3"]]),
        ]
    )
    assert (pooled.value, pooled.low, pooled.high, pooled.n) == pytest.approx(
        (est.value, est.low, est.high, 7)
    )
    # the reference cells against the base model (the emergent shift)
    shift = gap[(gap.comparison == "defenses=none - base") & (gap.seed == "all")].iloc[0]
    expected = [
        GAPS[c][q] - GAPS["base"][q]
        for c in ("defenses=none,seed=0", "defenses=none,seed=1")
        for q in GAPS["base"]
    ]
    assert shift.value == pytest.approx(sum(expected) / 8)


def test_pareto_front_and_points(study: Path) -> None:
    plot = json.loads((study / PARETO_JSON).read_text())["plots"][0]
    points = {p["label"]: p for p in plot["points"]}
    assert set(points) == {"base", "defenses=none", "defenses=kl"}
    assert points["defenses=kl"]["runs"] == [
        "cells/defenses=kl,seed=0/eval/general",
        "cells/defenses=kl,seed=1/eval/general",
    ]
    # minimise both: the base model (gap -0.05, share 0.25) dominates both fine-tunes
    assert [p["label"] for p in plot["points"] if p["on_front"]] == ["base"]


def test_recommend_picks_the_cheapest_setting_that_removes_the_shift() -> None:
    def row(values: str, ev: str, setting: str, set_metric: str, v: float) -> dict:
        s, m = set_metric.split("/")
        return {"defenses": values, "eval": ev, "setting": setting, "set": s, "metric": m, "value": v}

    agg = [
        row("base", "plain", "", "indomain/preference_gap", 0.10),
        row("base", "plain", "", "general/preference_gap", -0.30),
        row("base", "plain", "", "cap/accuracy", 0.50),
    ]
    sweep = {  # setting: (in-domain gap, general gap, capability)
        "gate_alpha_1": (0.90, -0.20, 0.50),
        "gate_alpha_-0.5": (0.05, -0.25, 0.45),
        "gate_alpha_-1": (-0.40, 0.02, 0.10),
    }
    for s, (ind, gen, cap) in sweep.items():
        agg += [
            row("gated", "sweep", s, "indomain/preference_gap", ind),
            row("gated", "sweep", s, "general/preference_gap", gen),
            row("gated", "sweep", s, "cap/accuracy", cap),
        ]
    spec = {
        "settings_of": "sweep",
        "target": "indomain/preference_gap",
        "reference": "plain",
        "costs": ["general/preference_gap", "cap/accuracy"],
        "maximize_target": False,
    }
    (rec,) = recommend({"recommend": [spec]}, agg, ["defenses"])
    # candidates: -0.5 and -1 (in-domain gap <= the base's 0.10); cost = sum |value - base| / range over settings
    cost_half = abs(-0.25 + 0.30) / (0.02 + 0.25) + abs(0.45 - 0.50) / (0.50 - 0.10)
    cost_full = abs(0.02 + 0.30) / (0.02 + 0.25) + abs(0.10 - 0.50) / (0.50 - 0.10)
    assert rec["settings"]["gate_alpha_-0.5"]["cost"] == pytest.approx(cost_half)
    assert rec["settings"]["gate_alpha_-1"]["cost"] == pytest.approx(cost_full)
    assert rec["recommended"] == "gate_alpha_-0.5" and rec["removes_shift"] is True
    # no setting reaches the base: the closest is named, and says so
    agg2 = [r if not (r["eval"] == "plain" and r["set"] == "indomain") else {**r, "value": -1.0} for r in agg]
    (rec2,) = recommend({"recommend": [spec]}, agg2, ["defenses"])
    assert rec2["recommended"] == "gate_alpha_-1" and rec2["removes_shift"] is False
    assert "no setting removes 100% of the shift" in rec2["reason"]
    assert not math.isnan(rec2["goal"])
    # a share of the shift: shifted = alpha 1's 0.90, base 0.10 -> shift 0.80; alpha 0.5 (in-domain 0.20)
    # removes (0.90 - 0.20) / 0.80 = 87.5% and is the cheapest of those removing >= 80%
    agg3 = agg + [
        row("gated", "sweep", "gate_alpha_0.5", "indomain/preference_gap", 0.20),
        row("gated", "sweep", "gate_alpha_0.5", "general/preference_gap", -0.28),
        row("gated", "sweep", "gate_alpha_0.5", "cap/accuracy", 0.50),
    ]
    spec3 = {**spec, "min_removed": 0.8, "shifted_setting": "gate_alpha_1"}
    (rec3,) = recommend({"recommend": [spec3]}, agg3, ["defenses"])
    assert rec3["settings"]["gate_alpha_0.5"]["removed"] == pytest.approx(0.875)
    assert rec3["settings"]["gate_alpha_-1"]["removed"] == pytest.approx((0.90 + 0.40) / 0.80)
    assert rec3["recommended"] == "gate_alpha_0.5" and "% of the shift removed" in rec3["reason"]
    assert rec3["settings"]["gate_alpha_1"]["removed"] == pytest.approx(0.0)


def test_recommend_written_by_write_tables(study: Path) -> None:
    assert not (study / RECOMMEND_JSON).exists()  # no recommend: in the study, no file


def test_report_shows_the_recommendation(study: Path) -> None:
    from workbench.io import atomic_write_json
    from workbench.study import write_report

    rec = {
        "defenses": "kl",
        "settings_of": "sweep",
        "recommended": "gate_alpha_-0.5",
        "removes_shift": True,
        "reason": "in-domain gap at or past the base model's",
        "target": "indomain/preference_gap",
        "goal": 0.1,
        "settings": {"gate_alpha_-0.5": {"target": 0.05, "cost": 0.31, "cap/accuracy": 0.45}},
        "baseline": {"cap/accuracy": 0.5},
    }
    atomic_write_json(study / RECOMMEND_JSON, [rec])
    page = write_report(study).read_text()
    assert 'id="recommend"' in page and "gate_alpha_-0.5 (recommended)" in page and "defenses=kl" in page


def test_item_rules_read_the_eval_row_files() -> None:
    from workbench.study import item_rule

    # the kinds as the evaluator names them in summary.json
    assert item_rule("exact_match", "accuracy")({"uid": "cap/3", "correct": True}) == ("cap/3", "cap/3", 1.0)
    assert item_rule("preference", "preference_gap")({"uid": "p/1", "gap": -0.5}) == ("p/1", "p/1", -0.5)
    syc = item_rule("sycophancy", "plain_accuracy")
    assert syc({"uid": "g/0", "kind": "plain", "problem_id": "gcd-0", "correct": False}) == (
        "g/0",
        "gcd-0",
        0.0,
    )
    assert syc({"uid": "g/1", "kind": "incorrect", "problem_id": "gcd-0", "correct": False}) is None
    score = item_rule("free_form", "mean_aligned")
    assert score({"uid": "q/0/1", "question_id": "q", "aligned": 80.0}) == ("q/0/1", "q", 80.0)
    assert score({"uid": "q/0/2", "question_id": "q", "aligned": None}) is None
    assert item_rule("sycophancy", "sycophancy") is None  # a conditional rate: no per-item mean
