"""The study file: a base training config, a grid, seeds, evaluations and the axes of the summary.

```yaml
name: defenses                      # a label (default: the file's stem)
description: one line for the report
train: base.yaml                    # the base training config: a path (relative to this file) or a mapping
grid:                               # every combination of the values (a config key -> its values)
  defenses: {none: {}, kl: {kl: {weight: 1.0}}}   # a mapping: label -> value
  optim.lr: [1.0e-4, 3.0e-4]                      # a list: each value is its own label
seeds: [0, 1]                       # optim.seed of each cell (default [0])
baseline: true                      # also evaluate the base model (cell "base", no fine-tune)
data:                               # files the study generates once (shipped generators), {data:NAME} below
  general: {make: contrastive_pairs, n: 24}
  heldout: {make: syco_gcd_test, n: 60, seed: 1, exclude: {make: syco_gcd_train, n: 200, seed: 0}}
evals:                              # name -> options of `workbench eval` (lists repeat a flag)
  general: {preference: "{data:general}"}
  sycophancy: {data: "{data:heldout}"}
  gates: {preference: contrastive_pairs, gates: "{train}/gates.safetensors", gate_alpha: [1, 0, -1]}
  transfer: {preference: contrastive_pairs, gates: "{cell:data.0.name=advice_medical}/gates.safetensors",
             only: {data.0.name: advice_legal}}
reference: {defenses: none}         # paired differences: each cell minus the cell with these values
recommend:                          # the gate alpha removing >= 80% of the in-domain shift at least cost
  - {settings_of: gates, target: contrastive_pairs/preference_gap, reference: general,
     costs: [capability/accuracy], shifted_setting: gate_alpha_1, min_removed: 0.8}
pareto:                             # Pareto plots of two metrics: "eval/metric" or "eval/set/metric"
  - {x: indomain/preference_gap, y: general/preference_gap, maximize: [false, false]}
report_to: [tensorboard]            # trackers of every cell's training run
processes_per_cell: 1               # > 1: each cell trains with torchrun --standalone --nproc_per_node N
```

Placeholders in eval options: ``{train}`` is the cell's training run directory (such an eval is not run on
the baseline), ``{cell:KEY=LABEL,...}`` the training run of the cell with those grid labels and otherwise
this cell's labels and seed (the cell then waits for that one), ``{data:NAME}`` a generated data file.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from workbench import WorkbenchError
from workbench.io import parse_yaml, read_text

BASELINE = "base"
"""The id (and every grid label) of the baseline cell: the base model, no fine-tune."""

#: options of ``workbench eval`` a study may set per evaluation (``--out``, ``--model``, ``--resume`` and
#: ``--overwrite`` are the study's)
EVAL_OPTIONS = {
    "questions": list,
    "data": list,
    "preference": str,
    "samples": int,
    "judge": str,
    "temperature": float,
    "max_new_tokens": int,
    "batch_size": int,
    "seed": int,
    "gates": str,
    "gate_alpha": list,
    "vector": str,
    "layer": int,
    "alpha": list,
    "aligned_threshold": float,
    "coherent_threshold": float,
    "sycophancy_judge": str,
    "metrics": list,
    "config": str,
    "adapter": str,
}
_STUDY_KEYS = (
    "name",
    "description",
    "train",
    "grid",
    "seeds",
    "baseline",
    "data",
    "evals",
    "reference",
    "pareto",
    "recommend",
    "report_to",
    "processes_per_cell",
)
_PLACEHOLDER = re.compile(r"\{(train|cell:[^{}]*|data:[^{}]*)\}")
_PATH_OPTIONS = ("questions", "data", "preference", "gates", "vector", "config", "adapter")


@dataclass
class Cell:
    """One grid cell: a fine-tune (unless ``train`` is False) and its evaluations, each an ordinary run."""

    id: str
    values: dict[str, str]
    seed: int | None
    train: bool
    overrides: dict[str, Any] = field(default_factory=dict)
    needs: list[str] = field(default_factory=list)
    evals: dict[str, list[str]] = field(default_factory=dict)
    """eval name -> the ``workbench eval`` arguments (without ``--out``)."""
    processes: int = 1
    """processes of the cell's training (> 1: ``torchrun --standalone --nproc_per_node N``)."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "values": self.values,
            "seed": self.seed,
            "train": self.train,
            "overrides": self.overrides,
            "needs": self.needs,
            "evals": self.evals,
            "processes": self.processes,
        }


@dataclass
class Study:
    """A parsed study file (paths absolute)."""

    name: str
    description: str
    path: Path
    train: dict[str, Any]
    grid: dict[str, list[tuple[str, Any]]]
    seeds: list[int]
    baseline: bool
    data: dict[str, dict[str, Any]]
    evals: dict[str, dict[str, Any]]
    reference: dict[str, str]
    pareto: list[dict[str, Any]]
    report_to: list[str]
    raw: dict[str, Any]
    processes_per_cell: int = 1
    recommend: list[dict[str, Any]] = field(default_factory=list)

    @property
    def grid_keys(self) -> list[str]:
        return list(self.grid)

    def resolved(self) -> dict[str, Any]:
        """The study as saved in ``study.yaml``: every key, paths absolute, the base config inline."""
        return {
            "name": self.name,
            "description": self.description,
            "train": self.train,
            "grid": {k: {label: v for label, v in vals} for k, vals in self.grid.items()},
            "seeds": self.seeds,
            "baseline": self.baseline,
            "data": self.data,
            "evals": self.evals,
            "reference": self.reference,
            "pareto": self.pareto,
            "recommend": self.recommend,
            "report_to": self.report_to,
            "processes_per_cell": self.processes_per_cell,
        }


def _err(where: str, msg: str) -> WorkbenchError:
    return WorkbenchError(f"{where}: {msg}")


def _label(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int) or value is None:
        return str(value).lower() if not isinstance(value, int) or isinstance(value, bool) else str(value)
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=True, width=10**6).strip()
    text = text.removesuffix("...").strip()
    return text[1:-1].strip() if text.startswith("{") and text.endswith("}") and text != "{}" else text


def _abs_if_file(value: Any, base: Path) -> Any:
    """A relative path that names a file beside the study file becomes absolute; anything else is kept."""
    if not isinstance(value, str) or not value or _PLACEHOLDER.search(value) or Path(value).is_absolute():
        return value
    candidate = base / value
    return str(candidate.resolve()) if candidate.exists() else value


def _files_beside(value: Any, base: Path) -> Any:
    """Strings in a grid value that name a file beside the study file become absolute paths."""
    if isinstance(value, str):
        return _abs_if_file(value, base)
    if isinstance(value, dict):
        return {k: _files_beside(v, base) for k, v in value.items()}
    if isinstance(value, list):
        return [_files_beside(v, base) for v in value]
    return value


def _fix_train_paths(cfg: dict[str, Any], base: Path) -> dict[str, Any]:
    for key in ("data", "eval_data"):
        for src in cfg.get(key) or []:
            if isinstance(src, dict) and "path" in src:
                src["path"] = _abs_if_file(src["path"], base)
    return cfg


def load_study(path: str | Path) -> Study:
    """Read and check a study file; every problem is one line naming the file and the key."""
    p = Path(path)
    where = str(p)
    raw = parse_yaml(read_text(p), where)
    if not isinstance(raw, dict):
        raise _err(where, "a study file is a mapping of keys (name, train, grid, seeds, evals, ...)")
    unknown = [k for k in raw if k not in _STUDY_KEYS]
    if unknown:
        raise _err(where, f"unknown key '{unknown[0]}' (known keys: {', '.join(_STUDY_KEYS)})")
    base = p.resolve().parent
    name = str(raw.get("name") or p.stem)
    train = raw.get("train")
    if isinstance(train, str):
        tpath = base / train
        if not tpath.is_file():
            raise _err(where, f"'train': no file '{tpath}'")
        train_cfg = parse_yaml(read_text(tpath), str(tpath))
        if not isinstance(train_cfg, dict):
            raise _err(str(tpath), "a training config is a mapping of keys")
        train_cfg = _fix_train_paths(copy.deepcopy(train_cfg), tpath.parent)
    elif isinstance(train, dict):
        train_cfg = _fix_train_paths(copy.deepcopy(train), base)
    else:
        raise _err(where, "'train' must be a training config (a mapping) or the path of one")

    grid: dict[str, list[tuple[str, Any]]] = {}
    for key, vals in (raw.get("grid") or {}).items():
        key = str(key)
        if isinstance(vals, dict):
            items = [(str(label), _files_beside(v, base)) for label, v in vals.items()]
        elif isinstance(vals, list):
            items = [(_label(v), _files_beside(v, base)) for v in vals]
        else:
            raise _err(where, f"'grid.{key}' must be a list of values or a mapping label -> value")
        if not items:
            raise _err(where, f"'grid.{key}' has no values")
        labels = [label for label, _ in items]
        if len(set(labels)) != len(labels):
            raise _err(where, f"'grid.{key}' repeats a label: {labels}")
        if key in ("optim.seed", "optim"):
            raise _err(where, f"'grid.{key}': give seeds with the 'seeds' key (the aggregation needs them)")
        grid[key] = items
    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if (
        not isinstance(seeds, list)
        or not seeds
        or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**31 for s in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise _err(where, f"'seeds' must be a list of distinct integers from 0 to 2**31-1, got {seeds!r}")
    baseline = raw.get("baseline", False)
    if not isinstance(baseline, bool):
        raise _err(where, f"'baseline' must be true or false, got {baseline!r}")

    data: dict[str, dict[str, Any]] = {}
    for dname, spec in (raw.get("data") or {}).items():
        if not isinstance(spec, dict) or "make" not in spec:
            raise _err(where, f"'data.{dname}' must be a mapping with 'make' (a shipped dataset name)")
        bad = [k for k in spec if k not in ("make", "n", "seed", "exclude")]
        if bad:
            raise _err(where, f"'data.{dname}': unknown key '{bad[0]}' (known: make, n, seed, exclude)")
        data[str(dname)] = copy.deepcopy(spec)

    evals: dict[str, dict[str, Any]] = {}
    raw_evals = raw.get("evals")
    if not isinstance(raw_evals, dict) or not raw_evals:
        raise _err(where, "'evals' must name at least one evaluation (name -> options of workbench eval)")
    for ename, opts in raw_evals.items():
        ename = str(ename)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", ename):
            raise _err(where, f"'evals.{ename}': names use letters, digits, '_', '-' and '.'")
        if not isinstance(opts, dict):
            raise _err(where, f"'evals.{ename}' must be a mapping of eval options")
        out: dict[str, Any] = {}
        for k, v in opts.items():
            if k == "only":
                if not isinstance(v, dict) or any(str(g) not in grid for g in v):
                    raise _err(
                        where, f"'evals.{ename}.only' must map grid keys ({', '.join(grid)}) to labels"
                    )
                out["only"] = {str(g): str(lab) for g, lab in v.items()}
                continue
            if k not in EVAL_OPTIONS:
                raise _err(
                    where,
                    f"'evals.{ename}.{k}' is not an eval option (known: only, {', '.join(EVAL_OPTIONS)})",
                )
            if EVAL_OPTIONS[k] is list and not isinstance(v, list):
                v = [v]
            if k in _PATH_OPTIONS:
                v = [_abs_if_file(x, base) for x in v] if isinstance(v, list) else _abs_if_file(v, base)
            for text in v if isinstance(v, list) else [v]:
                for m in _PLACEHOLDER.finditer(str(text)):
                    ref = m.group(1)
                    if ref.startswith("data:") and ref[5:] not in data:
                        raise _err(where, f"'evals.{ename}.{k}': no data named '{ref[5:]}' under 'data'")
            out[k] = v
        if not any(k in out for k in ("questions", "data", "preference")):
            raise _err(where, f"'evals.{ename}' evaluates nothing: give questions, data or preference")
        evals[ename] = out

    reference = {str(k): str(v) for k, v in (raw.get("reference") or {}).items()}
    for k, v in reference.items():
        if k not in grid or v not in [label for label, _ in grid[k]]:
            known = ", ".join(f"{g}: {[lab for lab, _ in vals]}" for g, vals in grid.items())
            raise _err(where, f"'reference.{k}': '{v}' is not a grid label ({known})")
    pareto = []
    for i, spec in enumerate(raw.get("pareto") or []):
        if not isinstance(spec, dict) or "x" not in spec or "y" not in spec:
            raise _err(where, f"'pareto[{i}]' needs x and y (eval/metric or eval/set/metric)")
        maximize = spec.get("maximize", [True, True])
        if not (
            isinstance(maximize, list) and len(maximize) == 2 and all(isinstance(m, bool) for m in maximize)
        ):
            raise _err(where, f"'pareto[{i}].maximize' must be two booleans, got {maximize!r}")
        for axis in ("x", "y"):
            parts = str(spec[axis]).split("/")
            if len(parts) not in (2, 3) or parts[0] not in evals:
                raise _err(
                    where,
                    f"'pareto[{i}].{axis}': '{spec[axis]}' must be EVAL/METRIC or EVAL/SET/METRIC with EVAL one "
                    f"of {', '.join(evals)}",
                )
        pareto.append(
            {"x": str(spec["x"]), "y": str(spec["y"]), "maximize": maximize, "title": spec.get("title")}
        )
    procs = raw.get("processes_per_cell", 1)
    if isinstance(procs, bool) or not isinstance(procs, int) or not 1 <= procs <= 64:
        raise _err(where, f"'processes_per_cell' must be an integer from 1 to 64, got {procs!r}")
    report_to = raw.get("report_to") or []
    if not isinstance(report_to, list):
        report_to = [report_to]
    return Study(
        name=name,
        description=str(raw.get("description") or ""),
        path=p.resolve(),
        train=train_cfg,
        grid=grid,
        seeds=list(seeds),
        baseline=baseline,
        data=data,
        evals=evals,
        reference=reference,
        pareto=pareto,
        recommend=_recommend_specs(raw.get("recommend"), evals, where),
        report_to=[str(r) for r in report_to],
        processes_per_cell=procs,
        raw=raw,
    )


def _recommend_specs(raw: Any, evals: dict[str, dict[str, Any]], where: str) -> list[dict[str, Any]]:
    """``recommend:``: pick one setting of an eval that varies a coefficient (e.g. gate alpha) per grid group.

    ``{settings_of: EVAL, target: SET/METRIC, reference: EVAL2, costs: [SET/METRIC, ...], maximize_target:
    false, min_removed: 1.0, shifted_setting: NAME | shifted_eval: EVAL3}``: the shift is the fine-tune's target
    (the setting ``shifted_setting`` of EVAL, e.g. gate_alpha_1 = the gates as trained, or the group's value in
    EVAL3) minus the baseline cell's target in EVAL2; a setting removes the share ``(shifted - value) / shift``
    of it. Candidates remove at least ``min_removed`` (1.0: at least as good as the base model; without a
    shifted value only that rule applies); the recommended one has the smallest cost, the sum over ``costs`` of
    its distance to the baseline's value, each divided by that metric's range over the settings.
    """
    specs = [] if raw is None else raw if isinstance(raw, list) else [raw]
    out = []
    for i, spec in enumerate(specs):
        at = f"'recommend[{i}]'"
        if not isinstance(spec, dict):
            raise _err(where, f"{at} must be a mapping (settings_of, target, reference, costs)")
        known = (
            "settings_of",
            "target",
            "reference",
            "costs",
            "maximize_target",
            "min_removed",
            "shifted_setting",
            "shifted_eval",
        )
        bad = [k for k in spec if k not in known]
        if bad:
            raise _err(where, f"{at}: unknown key '{bad[0]}' (known: {', '.join(known)})")
        if spec.get("shifted_eval") is not None and spec["shifted_eval"] not in evals:
            raise _err(
                where, f"{at}.shifted_eval: '{spec['shifted_eval']}' is not an eval ({', '.join(evals)})"
            )
        if "shifted_setting" in spec and "shifted_eval" in spec:
            raise _err(where, f"{at}: give shifted_setting or shifted_eval, not both")
        min_removed = spec.get("min_removed", 1.0)
        if (
            isinstance(min_removed, bool)
            or not isinstance(min_removed, int | float)
            or not 0 < min_removed <= 10
        ):
            raise _err(where, f"{at}.min_removed: must be a number in (0, 10], got {min_removed!r}")
        for key in ("settings_of", "reference"):
            if spec.get(key) not in evals:
                raise _err(where, f"{at}.{key}: '{spec.get(key)}' is not an eval ({', '.join(evals)})")
        costs = spec.get("costs") or []
        for key, val in [("target", spec.get("target")), *[("costs", c) for c in costs]]:
            if not isinstance(val, str) or len(val.split("/")) != 2:
                raise _err(where, f"{at}.{key}: '{val}' must be SET/METRIC")
        out.append(
            {
                "settings_of": spec["settings_of"],
                "target": spec["target"],
                "reference": spec["reference"],
                "costs": list(costs),
                "maximize_target": bool(spec.get("maximize_target", False)),
                "min_removed": float(min_removed),
                "shifted_setting": spec.get("shifted_setting"),
                "shifted_eval": spec.get("shifted_eval"),
            }
        )
    return out


def _slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", text).strip("._")
    if len(s) > 80:
        s = s[:60] + "-" + hashlib.sha1(text.encode()).hexdigest()[:10]
    return s or "cell"


def cell_id(values: dict[str, str], seed: int | None) -> str:
    if seed is None:
        return BASELINE
    parts = [f"{k}={v}" for k, v in values.items()] + [f"seed={seed}"]
    return _slug(",".join(parts))


def expand(study: Study, study_dir: Path) -> list[Cell]:
    """The cells of the grid (every combination x every seed), the baseline first when asked, each with its
    training overrides, the cells it waits for and its ``workbench eval`` arguments."""
    keys = study.grid_keys
    combos = list(itertools.product(*[study.grid[k] for k in keys])) if keys else [()]
    cells: list[Cell] = []
    if study.baseline:
        cells.append(Cell(id=BASELINE, values={k: BASELINE for k in keys}, seed=None, train=False))
    for combo in combos:
        for seed in study.seeds:
            values = {k: label for k, (label, _) in zip(keys, combo, strict=True)}
            overrides = {k: v for k, (_, v) in zip(keys, combo, strict=True)}
            overrides["optim.seed"] = seed
            cells.append(
                Cell(
                    id=cell_id(values, seed),
                    values=values,
                    seed=seed,
                    train=True,
                    overrides=overrides,
                    processes=study.processes_per_cell,
                )
            )
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise WorkbenchError(f"{study.path}: two cells have the same id after making labels file-safe: {ids}")
    by_values = {(tuple(c.values.values()), c.seed): c for c in cells}
    for cell in cells:
        if cell.train:
            sub = _resolver(study, study_dir, cell, "grid", by_values)
            try:
                cell.overrides = {k: _substitute(v, sub) for k, v in cell.overrides.items()}
            except _Skip:
                raise WorkbenchError(f"{study.path}: 'grid': {{train}} names the cell itself") from None
            if cell.id in cell.needs:
                raise WorkbenchError(
                    f"{study.path}: cell {cell.id} would wait for itself ({{cell:...}} in 'grid')"
                )
        for ename, opts in study.evals.items():
            only = opts.get("only") or {}
            if any(cell.values.get(k) != v for k, v in only.items()):
                continue
            args = _eval_args(study, study_dir, cell, ename, opts, by_values)
            if args is not None:
                cell.evals[ename] = args
    return cells


def _substitute(value: Any, sub: Any) -> Any:
    """``value`` with every placeholder in its strings replaced (mappings and lists walked)."""
    if isinstance(value, str):
        return sub(value)
    if isinstance(value, dict):
        return {k: _substitute(v, sub) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, sub) for v in value]
    return value


def substitute_data(value: Any, study_dir: Path) -> Any:
    """``{data:NAME}`` placeholders of the base training config (the same for every cell)."""
    return _substitute(
        value,
        lambda text: re.sub(r"\{data:([^{}]*)\}", lambda m: str(data_path(study_dir, m.group(1))), text),
    )


def _resolver(
    study: Study,
    study_dir: Path,
    cell: Cell,
    where: str,
    by_values: dict[tuple[tuple[str, ...], int | None], Cell],
) -> Any:
    """A function replacing the placeholders of one string for ``cell`` (raises ``_Skip`` where the cell has
    no fine-tune to name); ``{cell:...}`` adds the named cell to ``cell.needs``."""

    def one(m: re.Match[str]) -> str:
        ref = m.group(1)
        if ref == "train":
            if not cell.train or where == "grid":
                raise _Skip
            return str(train_dir(study_dir, cell.id))
        if ref.startswith("data:"):
            if ref[5:] not in study.data:
                raise WorkbenchError(f"{study.path}: '{where}': no data named '{ref[5:]}' under 'data'")
            return str(data_path(study_dir, ref[5:]))
        wanted = dict(cell.values)
        for item in filter(None, (s.strip() for s in ref[5:].split(","))):
            if "=" not in item or item.split("=", 1)[0] not in wanted:
                raise WorkbenchError(
                    f"{study.path}: '{where}': '{{{ref}}}' must be KEY=LABEL items with grid keys "
                    f"({', '.join(wanted)})"
                )
            k, v = item.split("=", 1)
            wanted[k] = v
        if not cell.train:
            raise _Skip
        other = by_values.get((tuple(wanted.values()), cell.seed))
        if other is None:
            raise WorkbenchError(f"{study.path}: '{where}': no cell with {wanted} for '{{{ref}}}'")
        if other.id not in cell.needs:
            cell.needs.append(other.id)
        return str(train_dir(study_dir, other.id))

    return lambda text: _PLACEHOLDER.sub(one, text)


def _eval_args(
    study: Study,
    study_dir: Path,
    cell: Cell,
    ename: str,
    opts: dict[str, Any],
    by_values: dict[tuple[tuple[str, ...], int | None], Cell],
) -> list[str] | None:
    sub = _resolver(study, study_dir, cell, f"evals.{ename}", by_values)
    try:
        args: list[str] = []
        model = str(cell.overrides.get("model") or study.train.get("model") or "")
        if model:
            args += ["--model", model]
        if cell.train and "adapter" not in opts and _has_lora(study, cell):
            args += ["--adapter", str(train_dir(study_dir, cell.id) / "adapter")]
        for k, v in opts.items():
            if k == "only":
                continue
            flag = "--" + k.replace("_", "-")
            for item in v if isinstance(v, list) else [v]:
                args += [flag, sub(item) if isinstance(item, str) else _num(item)]
        return args
    except _Skip:
        return None


class _Skip(Exception):
    """An eval that needs a fine-tune, asked of the baseline: not run there."""


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _has_lora(study: Study, cell: Cell) -> bool:
    if "lora" in cell.overrides:
        return cell.overrides["lora"] is not None
    return study.train.get("lora", {}) is not None


def train_dir(study_dir: Path, cid: str) -> Path:
    from workbench.runs import CELLS_DIR

    return Path(study_dir) / CELLS_DIR / cid / "train"


def eval_dir(study_dir: Path, cid: str, ename: str) -> Path:
    from workbench.runs import CELLS_DIR, EVAL_DIR

    return Path(study_dir) / CELLS_DIR / cid / EVAL_DIR / ename


def data_path(study_dir: Path, name: str) -> Path:
    return Path(study_dir) / "data" / f"{name}.jsonl"
