"""A study directory built by hand, file by file, following the study directory contract (what
``workbench study run`` writes): ``study.yaml``, ``cells.json``, the cells' run directories (manifests made
with ``workbench.runs.prepare_run_dir`` / ``end_run``), ``results.csv``, ``aggregate.csv``, ``paired.csv`` and
``pareto.json``.

The numbers come from per-item scores drawn with a fixed seed (``N_ITEMS`` items per evaluation set, the same
items for every cell), so the tables are computed the way a study computes them: a cell's value is the mean
over items with a normal 95% interval, the aggregate is the mean over seeds, a paired difference is the mean
of per-item differences against the reference cell of the same seed (and pooled over seeds), and the Pareto
front comes from ``workbench.metrics.pareto_front``. Shared by the report test, the explorer page test and the
browser test.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

N_ITEMS = 24
SEEDS = (0, 1)
GRID_KEYS = ("defenses", "optim.lr")
LABELS = {"defenses": ["none", "kl"], "optim.lr": ["0.0001", "0.0003"]}
HOSTILE = "<script>alert('x')</script>"
"""A grid label from user YAML that must never reach a page as markup."""
EVALS = {
    # eval name -> (settings, [(set, metric)])
    "general": (
        [""],
        [("contrastive_pairs", "preference_gap"), ("contrastive_pairs", "share_preferring_misaligned")],
    ),
    "indomain": ([""], [("heldout", "preference_gap")]),
    "gates": (["gate_alpha=-1.0", "gate_alpha=0.0"], [("contrastive_pairs", "preference_gap")]),
}
EVAL_ARGS = {
    "general": ["--preference", "contrastive_pairs"],
    "indomain": ["--preference", "heldout.jsonl"],
    "gates": ["--preference", "contrastive_pairs", "--gates", "gates.safetensors", "--gate-alpha", "-1",
              "--gate-alpha", "0"],
}  # fmt: skip
"""``cells.json`` stores each evaluation as its ``workbench eval`` arguments (name -> list)."""
TRAIN_ONLY_EVALS = ("gates",)  # evaluations that need the cell's training run (not run on the baseline)
PARETO = [
    {"x": "indomain/heldout/preference_gap", "y": "general/contrastive_pairs/preference_gap",
     "maximize": [False, False]},
    {"x": "indomain/heldout/preference_gap", "y": "general/contrastive_pairs/share_preferring_misaligned",
     "maximize": [False, False]},
]  # fmt: skip
METHOD = "normal(items)"
REFERENCE = {"defenses": "none"}


def slug(text: str) -> str:
    """A cell id as the study engine makes one (characters outside ``[A-Za-z0-9._=,+-]`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("._") or "cell"


def cell_id(values: dict[str, str], seed: int | None) -> str:
    if seed is None:
        return "base"
    return slug(",".join([f"{k}={v}" for k, v in values.items()] + [f"seed={seed}"]))


def _setting_dir(setting: str) -> str:
    if not setting:
        return ""
    key, value = setting.split("=")
    return f"{key}_{float(value):g}"


def _effect(values: dict[str, str], eval_name: str, setting: str, metric: str) -> float:
    """The true mean of a cell's per-item scores: fine-tuning raises misalignment, KL and gates lower it."""
    if values.get("defenses") == "base":
        shift = 0.0
    else:
        shift = {"none": 0.6, "kl": 0.25}.get(values["defenses"], 0.4)
        shift *= 1.0 + 2000.0 * (float(values["optim.lr"]) - 0.0001)
    if eval_name == "indomain":
        shift *= 1.8
    if setting == "gate_alpha=-1.0":
        shift *= 0.3
    if metric == "share_preferring_misaligned":
        return 0.3 + 0.35 * shift
    return -0.4 + shift


def _scores(values: dict[str, str], seed: int | None, eval_name: str, setting: str, set_name: str,
            metric: str) -> np.ndarray:  # fmt: skip
    """``N_ITEMS`` per-item scores; item difficulty is shared by all cells (so differences are paired)."""
    key = f"{eval_name}|{set_name}|{metric}"
    items = np.random.default_rng(sum(map(ord, key))).normal(0.0, 0.5, N_ITEMS)
    noise = np.random.default_rng([sum(map(ord, cell_id(values, seed) + key + setting)), 7])
    scores = _effect(values, eval_name, setting, metric) + items + noise.normal(0.0, 0.15, N_ITEMS)
    if metric == "share_preferring_misaligned":
        scores = (scores > 0.5).astype(float)
    return scores


def _interval(x: np.ndarray) -> tuple[float, float, float]:
    mean = float(np.mean(x))
    half = 1.96 * float(np.std(x, ddof=1)) / math.sqrt(len(x))
    return mean, mean - half, mean + half


def _run(path: Path, command: str, status: str, summary: dict[str, Any] | None = None) -> None:
    """A run directory with a real manifest (``prepare_run_dir``, then ``end_run`` with ``status``)."""
    from workbench.evaluation import write_summary
    from workbench.runs import end_run, prepare_run_dir, unlock_run_dir, write_config

    prepare_run_dir(path, command)
    write_config(path, {"command": command, "model": "random:tiny-llama"})
    if summary is not None:
        write_summary(path, summary)
    end_run(path, status)
    unlock_run_dir(path)


def build_study(root: Path, *, hostile: bool = False) -> Path:
    """Write a finished study (2 x 2 grid, 2 seeds, a baseline, 3 evaluations) into ``root``; returns it.

    ``hostile`` adds the defenses label ``HOSTILE`` (a ``<script>`` tag) as a third grid value.
    """
    import pandas as pd

    from workbench.metrics import pareto_front
    from workbench.runs import (
        AGGREGATE_CSV,
        CELLS_DIR,
        CELLS_JSON,
        EVAL_DIR,
        PAIRED_CSV,
        PARETO_JSON,
        RESULTS_CSV,
        RESULTS_PARQUET,
        STUDY_YAML,
        end_run,
        prepare_run_dir,
        unlock_run_dir,
        write_config,
    )

    labels = {k: list(v) for k, v in LABELS.items()}
    if hostile:
        labels["defenses"].append(HOSTILE)
    root = Path(root)
    prepare_run_dir(root, "study")
    write_config(root, {"command": "study", "name": "defenses-tiny"})
    study = {
        "name": "defenses-tiny",
        "description": "KL regularisation against no defense, two learning rates, two seeds",
        "train": {"model": "random:tiny-llama", "data": [{"make": "advice_medical", "n": 40}]},
        "grid": {"defenses": {lab: {} for lab in labels["defenses"]}, "optim.lr": [1e-4, 3e-4]},
        "seeds": list(SEEDS),
        "baseline": True,
        "evals": {"general": {"preference": "contrastive_pairs"}, "indomain": {"preference": "heldout"},
                  "gates": {"preference": "contrastive_pairs", "gate_alpha": [-1, 0]}},
        "reference": REFERENCE,
        "pareto": [{"x": "indomain/preference_gap", "y": "general/preference_gap", "maximize": [False, False]},
                   {"x": "indomain/preference_gap", "y": "general/share_preferring_misaligned",
                    "maximize": [False, False]}],
    }  # fmt: skip
    (root / STUDY_YAML).write_text(yaml.safe_dump(study, sort_keys=False), encoding="utf-8")

    cells: list[dict[str, Any]] = [
        {"id": "base", "values": {k: "base" for k in GRID_KEYS}, "seed": None, "train": False, "needs": [],
         "evals": {e: EVAL_ARGS[e] for e in EVALS if e not in TRAIN_ONLY_EVALS}}
    ]  # fmt: skip
    for combo in itertools.product(*(labels[k] for k in GRID_KEYS)):
        values = dict(zip(GRID_KEYS, combo, strict=True))
        for seed in SEEDS:
            cells.append({"id": cell_id(values, seed), "values": values, "seed": seed, "train": True,
                          "needs": [], "evals": dict(EVAL_ARGS)})  # fmt: skip
    (root / CELLS_JSON).write_text(
        json.dumps({"study": study["name"], "grid_keys": list(GRID_KEYS), "cells": cells}, indent=1),
        encoding="utf-8",
    )

    results, scores = [], {}
    for cell in cells:
        cdir = root / CELLS_DIR / cell["id"]
        if cell["train"]:
            _run(cdir / "train", "train", "finished")
        for ename in cell["evals"]:
            settings, measured = EVALS[ename]
            edir = cdir / EVAL_DIR / ename
            sets: dict[str, dict[str, Any]] = {}
            for setting in settings:
                run_rel = Path(CELLS_DIR, cell["id"], EVAL_DIR, ename, _setting_dir(setting)).as_posix()
                for set_name, metric in measured:
                    x = _scores(cell["values"], cell["seed"], ename, setting, set_name, metric)
                    scores[(cell["id"], ename, setting, set_name, metric)] = x
                    value, low, high = _interval(x)
                    sets.setdefault(set_name, {})[metric] = {"value": value, "low": low, "high": high,
                                                             "n": N_ITEMS, "method": METHOD}  # fmt: skip
                    results.append({"cell": cell["id"], **cell["values"], "seed": cell["seed"], "eval": ename,
                                    "setting": setting, "set": set_name, "metric": metric, "value": value,
                                    "low": low, "high": high, "n": N_ITEMS, "method": METHOD,
                                    "run": run_rel})  # fmt: skip
            _run(edir, "eval", "finished", {"model": "random:tiny-llama", "judge": "none", "sets": sets})
            for setting in settings:
                if setting:
                    (edir / _setting_dir(setting)).mkdir(exist_ok=True)
    res = pd.DataFrame(results)
    res["seed"] = res["seed"].astype("Int64")
    res.to_csv(root / RESULTS_CSV, index=False)
    res.to_parquet(root / RESULTS_PARQUET, index=False)

    # over seeds
    keys = [*GRID_KEYS, "eval", "setting", "set", "metric"]
    agg_rows = []
    for key, g in res.groupby(keys, sort=False):
        agg_rows.append({**dict(zip(keys, key, strict=True)), "value": g["value"].mean(),
                         "low": g["low"].mean(), "high": g["high"].mean(), "n_seeds": len(g),
                         "seed_sd": float(g["value"].std(ddof=1)) if len(g) > 1 else float("nan"),
                         "method": f"mean over seeds of {METHOD}", "cells": ";".join(g["cell"]),
                         "runs": ";".join(g["run"])})  # fmt: skip
    agg = pd.DataFrame(agg_rows)
    agg.to_csv(root / AGGREGATE_CSV, index=False)

    # each trained cell minus the cell with defenses=none (same lr, same seed), on the same items
    paired = []
    by_id = {c["id"]: c for c in cells}
    for cell in cells[1:]:
        if all(cell["values"][k] == v for k, v in REFERENCE.items()):
            continue
        ref_values = {**cell["values"], **REFERENCE}
        pairs: dict[tuple[str, str, str, str], list[tuple[str, str, np.ndarray]]] = {}
        for (cid, ename, setting, set_name, metric), x in scores.items():
            if cid != cell["id"]:
                continue
            ref = cell_id(ref_values, cell["seed"])
            d = x - scores[(ref, ename, setting, set_name, metric)]
            pairs.setdefault((ename, setting, set_name, metric), []).append((cid, ref, d))
        for (ename, setting, set_name, metric), found in pairs.items():
            for cid, ref, d in found:
                value, low, high = _interval(d)
                paired.append({"cell": cid, "reference": ref, "seed": by_id[cid]["seed"],
                               "values": by_id[cid]["values"], "eval": ename, "setting": setting,
                               "set": set_name, "metric": metric, "value": value, "low": low, "high": high,
                               "n": len(d), "method": f"paired {METHOD}"})  # fmt: skip
    # pooled over seeds: every item of every seed
    pooled = {}
    for row in paired:
        k = (tuple(row["values"].items()), row["eval"], row["setting"], row["set"], row["metric"])
        pooled.setdefault(k, []).append(row)
    for (_, ename, setting, set_name, metric), rows in pooled.items():
        d = np.concatenate([scores[(r["cell"], ename, setting, set_name, metric)]
                            - scores[(r["reference"], ename, setting, set_name, metric)] for r in rows])  # fmt: skip
        value, low, high = _interval(d)
        paired.append({"cell": ";".join(r["cell"] for r in rows), "reference": ";".join(r["reference"] for r in rows),
                       "seed": "all", "values": rows[0]["values"], "eval": ename, "setting": setting,
                       "set": set_name, "metric": metric, "value": value, "low": low, "high": high,
                       "n": len(d), "method": f"paired {METHOD}, pooled over seeds"})  # fmt: skip
    table = []
    for row in paired:
        values = row.pop("values")
        changed = [k for k in GRID_KEYS if k in REFERENCE]
        comparison = " - ".join(",".join(f"{k}={v}" for k, v in vs.items() if k in changed)
                                for vs in (values, {**values, **REFERENCE}))  # fmt: skip
        table.append({"cell": row.pop("cell"), "reference": row.pop("reference"), "comparison": comparison,
                      **values, **row})  # fmt: skip
    pd.DataFrame(table).to_csv(root / PAIRED_CSV, index=False)

    # Pareto plots: one point per grid combination (mean over seeds) and the baseline
    plots = []
    for spec in PARETO:
        pts: dict[tuple[str, ...], dict[str, Any]] = {}
        for axis in ("x", "y"):
            ename, set_name, metric = spec[axis].split("/")
            sub = agg[(agg["eval"] == ename) & (agg["set"] == set_name) & (agg["metric"] == metric)]
            for _, r in sub.iterrows():
                combo = tuple(str(r[k]) for k in GRID_KEYS)
                label = (
                    "base"
                    if combo[0] == "base"
                    else ",".join(f"{k}={v}" for k, v in zip(GRID_KEYS, combo, strict=True))
                )
                p = pts.setdefault(combo, {"label": label, "values": dict(zip(GRID_KEYS, combo, strict=True)),
                                           "cells": r["cells"].split(";"), "runs": []})  # fmt: skip
                p["runs"] += r["runs"].split(";")
                p[axis], p[f"{axis}_low"], p[f"{axis}_high"] = (
                    float(r["value"]),
                    float(r["low"]),
                    float(r["high"]),
                )
        points = list(pts.values())
        front = set(pareto_front([(p["x"], p["y"]) for p in points], maximize=tuple(spec["maximize"])))
        for i, p in enumerate(points):
            p["on_front"] = i in front
        plots.append({
            "title": f"{spec['y']} against {spec['x']}",
            "x": {"key": spec["x"], "label": spec["x"], "maximize": spec["maximize"][0]},
            "y": {"key": spec["y"], "label": spec["y"], "maximize": spec["maximize"][1]},
            "points": points,
        })  # fmt: skip
    (root / PARETO_JSON).write_text(json.dumps({"plots": plots}, indent=1), encoding="utf-8")
    end_run(root, "finished")
    unlock_run_dir(root)
    return root


def set_run_status(run_dir: Path, status: str) -> None:
    """Rewrite a run's manifest status (``running`` without a held lock reads ``interrupted``)."""
    path = Path(run_dir) / "run.json"
    manifest = json.loads(path.read_text(encoding="utf-8"))
    manifest["status"] = status
    path.write_text(json.dumps(manifest), encoding="utf-8")
