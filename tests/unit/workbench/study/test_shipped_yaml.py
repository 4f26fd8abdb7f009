"""The shipped study files (``studies/*.yaml`` and their CI versions ``studies/ci/*.yaml``) load, expand into the
cells they promise and give every cell a training config that checks; every file they name is shipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from workbench.study import BASELINE, cell_config, expand, load_study

REPO = Path(__file__).resolve().parents[4]
STUDIES = REPO / "studies"
NAMES = {"defenses.yaml", "selective_generalization.yaml", "gating.yaml"}
FILES = sorted(STUDIES.glob("*.yaml")) + sorted((STUDIES / "ci").glob("*.yaml"))
FILE_FLAGS = ("--data", "--preference", "--questions", "--vector", "--config")


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_three_shipped_studies_each_with_a_ci_version():
    assert {p.name for p in STUDIES.glob("*.yaml")} == NAMES
    assert {p.name for p in (STUDIES / "ci").glob("*.yaml")} == NAMES


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(STUDIES)))
def test_shipped_study_loads_expands_and_every_cell_config_checks(path, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # studies run from the repository root: grid values name studies/assets/...
    study = load_study(path)
    assert study.train["model"] == "smollm2-135m"
    assert len(study.seeds) >= 2 and study.baseline and study.reference and study.pareto

    cells = expand(study, tmp_path / "study")
    combos = 1
    for values in study.grid.values():
        combos *= len(values)
    assert len(cells) == combos * len(study.seeds) + 1
    assert cells[0].id == BASELINE and not cells[0].train
    by_id = {c.id: c for c in cells}
    for cell in cells:
        for need in cell.needs:  # a cell waits only for a fine-tune of its own seed
            assert by_id[need].train and by_id[need].seed == cell.seed
        for args in cell.evals.values():
            for flag, value in zip(args, args[1:], strict=False):
                if flag in FILE_FLAGS and not value.startswith(str(tmp_path)):
                    assert Path(value).is_file(), f"{path.name}: {flag} {value} is not shipped"
        if not cell.train:
            continue
        cfg = cell_config(study, cell, tmp_path / "study")
        assert cfg["optim"]["seed"] == cell.seed
        for text in _strings(cfg.get("defenses") or {}):
            if text.startswith("studies/"):
                assert (REPO / text).exists(), (
                    f"{path.name}: cell {cell.id} names {text}, which is not shipped"
                )
    # every eval named by a Pareto axis runs on at least one cell
    for spec in study.pareto:
        for axis in ("x", "y"):
            ename = spec[axis].split("/")[0]
            assert any(ename in c.evals for c in cells), f"{path.name}: no cell runs eval {ename}"


@pytest.mark.parametrize("name", sorted(NAMES))
def test_ci_version_keeps_the_full_study_structure(name):
    full, ci = load_study(STUDIES / name), load_study(STUDIES / "ci" / name)
    assert ci.grid_keys == full.grid_keys
    assert ci.reference == full.reference
    assert len(ci.seeds) >= 2
    assert set(ci.evals) == set(full.evals)
    for key in full.grid_keys:  # the CI grid is a subset of the full one (same labels)
        assert {label for label, _ in ci.grid[key]} <= {label for label, _ in full.grid[key]}


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(STUDIES)))
def test_every_asset_a_shipped_study_names_exists(path, tmp_path, monkeypatch):
    """Paths are relative to the study file: from any folder, every asset it names resolves to a real file."""
    monkeypatch.chdir(tmp_path)
    found: list[str] = []

    def walk(value):
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list):
            for v in value:
                walk(v)
        elif isinstance(value, str) and "assets/" in value:
            found.append(value)

    walk(load_study(path).resolved())
    assert found
    for value in found:
        assert Path(value).is_absolute() and Path(value).exists(), value
