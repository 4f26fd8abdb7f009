"""The shipped studies end to end on the embedded model: each CI version (``studies/ci/*.yaml``, the full
study's structure at 2 training steps) runs through ``workbench study run --workers 2`` and leaves every cell
done, the tables with the metrics its evaluations measure, one Pareto point per grid value (and setting) plus
the baseline, paired differences against the reference cell, and ``report.html`` beside ``plotly.min.js``."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from workbench.html import PLOTLY_JS
from workbench.runs import (
    AGGREGATE_CSV,
    PAIRED_CSV,
    PARETO_JSON,
    REPORT_HTML,
    RESULTS_CSV,
    RESULTS_PARQUET,
)
from workbench.study import cell_states, load_study

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CI = REPO / "studies" / "ci"

# study -> (eval, set) -> metrics every cell that runs that eval must report
EXPECTED = {
    "defenses": {
        ("em", "general"): {"preference_gap", "share_preferring_misaligned"},
        ("em", "indomain_medical_pairs"): {"preference_gap", "share_preferring_misaligned"},
    },
    "selective_generalization": {
        ("em", "sycophancy_gcd_pairs"): {"preference_gap", "share_preferring_misaligned"},
        ("em", "capability_exact"): {"accuracy"},
    },
    "gating": {
        ("em", "general"): {"preference_gap"},
        ("em", "indomain_medical_pairs"): {"preference_gap"},
        ("em", "coherence_pairs"): {"preference_gap"},
        ("sweep", "coherence_pairs"): {"preference_gap"},
        ("transfer", "coherence_pairs"): {"preference_gap"},
    },
}
# study -> Pareto plot -> the point labels it must have (one per grid value and setting, plus the baseline)
POINTS = {
    "defenses": [
        {"base", "defenses=none", "defenses=preventive_steering", "defenses=interleave_plus"},
    ],
    "selective_generalization": [{"base", "defenses=none", "defenses=kl", "defenses=olora"}],
    "gating": [
        {"base (from eval em)", "gates=gated [gate_alpha_1]", "gates=gated [gate_alpha_-1]"},
        {"base (from eval em)", "gates=none"},  # one gate alpha: no sub-directory, no setting
    ],
}


def _run(study: Path, out: Path, home: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HOME": str(home),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
    }
    cmd = [sys.executable, "-m", "workbench", "study", "run", str(study), "--out", str(out)]
    return subprocess.run(
        [*cmd, "--workers", "2", "--threads", "1"],
        cwd=REPO,  # grid values name studies/assets/... relative to the repository root
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_ci_study_runs_end_to_end(name, tmp_path):
    out = tmp_path / "study"
    proc = _run(CI / f"{name}.yaml", out, tmp_path / "home")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    check_study_dir(name, out)


def check_study_dir(name: str, out: Path) -> None:
    """Every cell done; the tables, Pareto plots and report of the CI study ``name`` in ``out`` complete."""
    study = load_study(CI / f"{name}.yaml")
    states = cell_states(out)
    assert len(states) == 1 + len(study.seeds) * math.prod(len(v) for v in study.grid.values())
    assert set(states.values()) == {"done"}, states

    results = pd.read_csv(out / RESULTS_CSV, keep_default_na=False)
    assert list(results.columns[:1]) == ["cell"] and list(results.columns[1 : 1 + len(study.grid)]) == list(
        study.grid
    )
    parquet = pd.read_parquet(out / RESULTS_PARQUET)
    assert len(parquet) == len(results)
    for (ename, set_name), metrics in EXPECTED[name].items():
        rows = results[(results["eval"] == ename) & (results["set"] == set_name)]
        cells_with_eval = {c for c in states if rows["cell"].eq(c).any()}
        assert cells_with_eval, f"no results for {ename}/{set_name}"
        for cell in cells_with_eval:
            got = set(rows[rows["cell"] == cell]["metric"])
            assert metrics <= got, f"{cell} {ename}/{set_name}: {sorted(got)}"
        gaps = rows[rows["metric"] == "preference_gap"]
        for _, r in gaps.iterrows():  # a real bootstrap interval around a finite value
            value, low, high = float(r["value"]), float(r["low"]), float(r["high"])
            assert math.isfinite(value) and low <= value <= high

    agg = pd.read_csv(out / AGGREGATE_CSV, keep_default_na=False)
    fine_tuned = agg[agg[study.grid_keys[0]] != "base"]
    assert set(fine_tuned["n_seeds"].astype(int)) == {len(study.seeds)}
    assert (fine_tuned["cells"].str.count(";") == len(study.seeds) - 1).all()

    paired = pd.read_csv(out / PAIRED_CSV, keep_default_na=False)
    ((key, ref_label),) = study.reference.items()
    others = {label for label, _ in study.grid[key]} - {ref_label}
    comparisons = set(paired["comparison"])
    for label in others:
        assert f"{key}={label} - {key}={ref_label}" in comparisons, sorted(comparisons)
    pooled = paired[paired["seed"].astype(str) == "all"]
    assert not pooled.empty and (pooled["n"].astype(int) > 0).all()

    plots = json.loads((out / PARETO_JSON).read_text())["plots"]
    assert len(plots) == len(study.pareto)
    for plot, labels in zip(plots, POINTS[name], strict=True):
        assert {p["label"] for p in plot["points"]} == labels
        assert all(p["x"] is not None and p["y"] is not None for p in plot["points"])
        assert any(p["on_front"] for p in plot["points"])

    report = (out / REPORT_HTML).read_text()
    assert (out / PLOTLY_JS).is_file() and f'src="{PLOTLY_JS}"' in report
    assert report.count('class="plotly-graph-div"') >= len(study.pareto)
