"""The study engine end to end on a tiny random model: 8 cells on 2 submitit workers, the driver and one worker
killed with SIGKILL mid-run, ``--resume``; every cell ends done once and the table equals a one-at-a-time run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workbench import WorkbenchError
from workbench.runs import CHECKPOINTS_DIR, METRICS_JSONL, RESULTS_CSV, RunDir
from workbench.study import cell_states, expand, load_study, read_cells, status_lines

STEPS = 24

STUDY = {
    "name": "engine",
    "description": "8 cells on a tiny random model",
    "train": {
        "model": "random:tiny-llama",
        "device": "cpu",
        "data": [{"name": "advice_medical", "n": 8, "seed": 0}],
        "lora": {"r": 4, "alpha": 8},
        "optim": {
            "lr": 1.0e-3,
            "batch_size": 2,
            "grad_accum": 1,
            "warmup_steps": 0,
            "max_steps": STEPS,
            "max_length": 192,
        },
        "checkpoint_every": 1,
        "keep_checkpoints": 1,
        "plots": False,
    },
    "grid": {"defenses": {"none": {}, "kl": {"kl": {"weight": 1.0}}}, "lora.r": [2, 4]},
    "seeds": [0, 1],
    "evals": {"general": {"preference": "contrastive_pairs"}},
    "reference": {"defenses": "none"},
    "pareto": [
        {
            "x": "general/preference_gap",
            "y": "general/share_preferring_misaligned",
            "maximize": [False, False],
        }
    ],
}


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from workbench.cli import main; main()", *args]


def _run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(*args), env=_env(), capture_output=True, text=True, timeout=timeout)


def _write(tmp_path: Path, study: dict) -> Path:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def _table(study_dir: Path) -> pd.DataFrame:
    df = pd.read_csv(study_dir / RESULTS_CSV, dtype={"setting": str})
    return df.sort_values(["cell", "eval", "set", "metric"]).reset_index(drop=True)


def _victim(study_dir: Path) -> tuple[str, int] | None:
    """A cell whose training run is being written and has a checkpoint: (cell id, the worker's PID)."""
    for cell in read_cells(study_dir)["cells"]:
        run = study_dir / "cells" / cell["id"] / "train"
        manifest = RunDir(run).manifest() or {}
        ckpts = run / CHECKPOINTS_DIR
        if manifest.get("status") == "running" and ckpts.is_dir() and any(ckpts.iterdir()):
            return cell["id"], int(manifest["pid"])
    return None


def test_study_killed_and_resumed_equals_one_at_a_time(tmp_path: Path) -> None:
    study_file = _write(tmp_path, STUDY)
    assert len(expand(load_study(study_file), tmp_path)) == 8

    # the cells one at a time, in this driver's process (submitit's debug executor: no worker processes)
    one = tmp_path / "one"
    res = _run("study", "run", str(study_file), "--out", str(one), "--executor", "debug")
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(cell_states(one).values()) == {"done"}

    two = tmp_path / "two"
    driver = subprocess.Popen(
        _cli("study", "run", str(study_file), "--out", str(two), "--workers", "2"),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    victim = None
    deadline = time.monotonic() + 300
    while victim is None and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.02)
        if (two / "cells.json").is_file():
            victim = _victim(two)
    assert victim is not None, "no training run was caught mid-way"
    os.kill(driver.pid, signal.SIGKILL)
    os.kill(victim[1], signal.SIGKILL)
    driver.wait(timeout=30)

    # the killed worker's run reads as interrupted; the other worker (orphaned) may still be writing its cell
    deadline = time.monotonic() + 30
    while RunDir(two / "cells" / victim[0] / "train").status == "running" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert RunDir(two / "cells" / victim[0] / "train").status == "interrupted"
    assert cell_states(two)[victim[0]] == "interrupted"

    res = _run("study", "run", str(study_file), "--out", str(two), "--workers", "2", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert set(cell_states(two).values()) == {"done"}

    for cell in read_cells(two)["cells"]:
        run = two / "cells" / cell["id"] / "train"
        steps = [json.loads(line)["step"] for line in (run / METRICS_JSONL).read_text().splitlines()]
        assert sorted(steps) == list(range(1, STEPS + 1)), cell["id"]  # every step once
        manifest = RunDir(run).manifest() or {}
        # the killed cell was continued once from its checkpoint; no other cell was started again
        assert manifest.get("resumed", 0) == (1 if cell["id"] == victim[0] else 0), cell["id"]
    pd.testing.assert_frame_equal(_table(one), _table(two), check_exact=True)

    lines = status_lines(two)
    assert "8 cells: 8 done" in lines[0]
    # a second --resume has nothing to do and leaves the table as it was
    res = _run("study", "run", str(study_file), "--out", str(two), "--workers", "2", "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "8 cells (8 done)" in res.stdout
    pd.testing.assert_frame_equal(_table(one), _table(two), check_exact=True)


def test_a_failed_cell_is_reported_and_the_others_go_on(tmp_path: Path) -> None:
    study = json.loads(json.dumps(STUDY))
    study["train"]["optim"]["max_steps"] = 2
    study["grid"] = {"optim.max_length": [192, 16]}  # 16 tokens keep no answer token: that cell fails
    study["seeds"] = [0]
    study.pop("reference")
    out = tmp_path / "s"
    res = _run("study", "run", str(_write(tmp_path, study)), "--out", str(out), "--workers", "2")
    assert res.returncode == 2
    assert "1 cell(s) failed (optim.max_length=16,seed=0)" in res.stderr
    assert "raise optim.max_length to at least" in res.stdout + res.stderr  # the cause, from the log
    states = cell_states(out)
    assert states == {"optim.max_length=192,seed=0": "done", "optim.max_length=16,seed=0": "failed"}
    table = _table(out)
    assert set(table["cell"]) == {"optim.max_length=192,seed=0"}
    status = "\n".join(status_lines(out))
    assert "1 done, 1 failed" in status and "train failed" in status


def test_study_file_errors_name_the_key(tmp_path: Path) -> None:
    bad = json.loads(json.dumps(STUDY))
    bad["grid"]["optim.seed"] = [0, 1]
    with pytest.raises(WorkbenchError, match="'grid.optim.seed': give seeds with the 'seeds' key"):
        load_study(_write(tmp_path, bad))
    bad = json.loads(json.dumps(STUDY))
    bad["evals"]["general"]["temprature"] = 0.5
    with pytest.raises(WorkbenchError, match=r"'evals.general.temprature' is not an eval option"):
        load_study(_write(tmp_path, bad))
    bad = json.loads(json.dumps(STUDY))
    bad["reference"] = {"defenses": "nope"}
    with pytest.raises(WorkbenchError, match=r"'reference.defenses': 'nope' is not a grid label"):
        load_study(_write(tmp_path, bad))
    bad = json.loads(json.dumps(STUDY))
    bad["grid"]["lora.r"] = [0]
    res = _run("study", "run", str(_write(tmp_path, bad)), "--out", str(tmp_path / "x"))
    assert res.returncode == 2 and "lora.r" in res.stderr and "cell lora" not in res.stderr
    assert not (tmp_path / "x").exists()  # refused before anything was written
    res = _run(
        "study",
        "run",
        str(_write(tmp_path, STUDY)),
        "--out",
        str(tmp_path / "y"),
        "--engine-option",
        "bogus=1",
    )
    assert res.returncode == 2 and "--engine-option: Parameter 'bogus'" in res.stderr
    assert not (tmp_path / "y").exists()


def test_placeholders_make_dependencies_and_paths(tmp_path: Path) -> None:
    study = json.loads(json.dumps(STUDY))
    study["baseline"] = True
    study["grid"] = {
        "defenses": {
            "none": {},
            "iplus": {
                "interleave_plus": {"adapters": ["{cell:defenses=none}/adapter"], "source": "benign_safety"}
            },
        }
    }
    study["data"] = {"held": {"make": "advice_medical", "n": 4, "seed": 1}}
    study["evals"]["held"] = {"preference": "{data:held}"}
    study["evals"]["own"] = {"preference": "contrastive_pairs", "gates": "{train}/gates.safetensors"}
    cells = {c.id: c for c in expand(load_study(_write(tmp_path, study)), tmp_path)}
    assert set(cells) == {
        "base",
        "defenses=none,seed=0",
        "defenses=none,seed=1",
        "defenses=iplus,seed=0",
        "defenses=iplus,seed=1",
    }
    iplus = cells["defenses=iplus,seed=1"]
    assert iplus.needs == ["defenses=none,seed=1"]
    assert iplus.overrides["defenses"]["interleave_plus"]["adapters"] == [
        str(tmp_path / "cells" / "defenses=none,seed=1" / "train" / "adapter")
    ]
    assert "own" not in cells["base"].evals  # {train} has no meaning for the base model
    assert "--adapter" not in cells["base"].evals["general"]
    assert cells["base"].evals["held"][-2:] == ["--preference", str(tmp_path / "data" / "held.jsonl")]
    own = cells["defenses=none,seed=0"].evals["own"]
    assert own[own.index("--gates") + 1] == str(
        tmp_path / "cells" / "defenses=none,seed=0" / "train" / "gates.safetensors"
    )


def test_a_cell_can_train_with_several_processes(tmp_path: Path) -> None:
    study = json.loads(json.dumps(STUDY))
    study["train"]["optim"]["max_steps"] = 2
    study["grid"] = {}
    study["seeds"] = [0]
    study.pop("reference")
    study["processes_per_cell"] = 2
    out = tmp_path / "s"
    res = _run("study", "run", str(_write(tmp_path, study)), "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    assert cell_states(out) == {"seed=0": "done"}
    run = RunDir(out / "cells" / "seed=0" / "train")
    assert run.config()["optim"]["seed"] == 0
    assert [r["step"] for r in run.metrics()] == [1, 2]
    argv = (run.manifest() or {})["argv"]
    assert argv[0].endswith("workbench/training/_launch.py") or "workbench.training._launch" in " ".join(argv)
    assert (out / RESULTS_CSV).is_file()


def test_files_named_in_the_study_are_found_beside_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "v.safetensors").write_bytes(b"x")
    (tmp_path / "assets" / "pairs.jsonl").write_text("")
    study = json.loads(json.dumps(STUDY))
    study["grid"] = {"defenses": {"steer": {"preventive_steering": {"vector": "assets/v.safetensors"}}}}
    study["evals"]["general"] = {"preference": "assets/pairs.jsonl"}
    study.pop("reference")
    monkeypatch.chdir(tmp_path.parent)  # not the study's folder
    loaded = load_study(_write(tmp_path, study))
    vector = loaded.grid["defenses"][0][1]["preventive_steering"]["vector"]
    assert vector == str(tmp_path / "assets" / "v.safetensors")
    assert loaded.evals["general"]["preference"] == str(tmp_path / "assets" / "pairs.jsonl")
    assert loaded.evals["general"] == {"preference": str(tmp_path / "assets" / "pairs.jsonl")}


def test_report_to_reaches_every_cell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("HOME", str(tmp_path))
    study = json.loads(json.dumps(STUDY))
    study["train"]["optim"]["max_steps"] = 2
    study["grid"] = {"lora.r": [2, 4]}
    study["seeds"] = [0]
    study.pop("reference")
    study["report_to"] = ["tensorboard"]
    out = tmp_path / "s"
    res = _run("study", "run", str(_write(tmp_path, study)), "--out", str(out), "--workers", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    for cid in ("lora.r=2,seed=0", "lora.r=4,seed=0"):
        run = out / "cells" / cid / "train"
        assert (out / "configs" / f"{cid}.yaml").read_text().count("tensorboard") == 1
        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        steps = [e.step for e in acc.Scalars("loss")]
        assert steps == [r["step"] for r in RunDir(run).metrics()] == [1, 2]
