"""Resumable checkpoints without pickle: tensors in safetensors, everything else in JSON.

Layout of ``<run_dir>/checkpoints/step-000120/``::

    trainable.safetensors   every trainable parameter (LoRA, plugin parameters) by name
    plugins.safetensors     plugins' and defenses' own state tensors (``<name>/<key>``)
    optimizer.safetensors   AdamW state tensors (``<param index>/<key>``)
    optimizer.json          param groups and non-tensor state
    scheduler.json          LR scheduler state
    rng-<rank>.safetensors  torch CPU (and CUDA) generator states of each process
    rng-<rank>.json         Python ``random`` state of each process
    state.json              step, epoch, world size (the data position follows from the step)

A checkpoint is written into a hidden temporary folder and renamed into place, then ``checkpoints/latest``
is rewritten atomically, so a kill at any moment leaves the previous checkpoint usable.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from workbench._errors import WorkbenchError
from workbench._io import atomic_write_json, atomic_write_text
from workbench.runs import CHECKPOINTS_DIR

if TYPE_CHECKING:
    from ._loop import Trainer

log = logging.getLogger(__name__)


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())


def _save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(path))


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint named in ``checkpoints/latest`` (or the highest step folder), if any."""
    root = checkpoint_root(run_dir)
    marker = root / "latest"
    if marker.exists():
        p = root / marker.read_text(encoding="utf-8").strip()
        if (p / "state.json").exists():
            return p
    found = sorted(p for p in root.glob("step-*") if (p / "state.json").exists()) if root.exists() else []
    return found[-1] if found else None


def save_checkpoint(trainer: Trainer, step: int) -> Path:
    """Write the checkpoint after ``step`` optimizer steps (collective: every process must call it)."""
    acc = trainer.accelerator
    root = checkpoint_root(trainer.run_dir)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    rng: dict[str, torch.Tensor] = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            rng[f"torch_cuda_{i}"] = s
    _save(rng, tmp / f"rng-{trainer.rank}.safetensors")
    atomic_write_json(tmp / f"rng-{trainer.rank}.json", {"python": _py_state(random.getstate())})
    acc.wait_for_everyone()
    if acc.is_main_process:
        _save({n: p for n, p in trainer.named_trainable}, tmp / "trainable.safetensors")
        extra: dict[str, torch.Tensor] = {}
        for comp in trainer.components:
            for k, v in comp.state_dict().items():
                extra[f"{comp.name}/{k}"] = v
        _save(extra, tmp / "plugins.safetensors")
        opt_tensors, opt_meta = _split_optimizer(trainer.optimizer.state_dict())
        _save(opt_tensors, tmp / "optimizer.safetensors")
        atomic_write_json(tmp / "optimizer.json", opt_meta)
        atomic_write_json(tmp / "scheduler.json", _jsonable(trainer.scheduler.state_dict()))
        atomic_write_json(
            tmp / "state.json",
            {
                "step": step,
                "epoch": step / max(1, trainer.steps_per_epoch),
                "total_steps": trainer.total_steps,
                "world_size": trainer.world_size,
                "steps_per_epoch": trainer.steps_per_epoch,
            },
        )
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(root / "latest", final.name + "\n")
        old = sorted(p for p in root.glob("step-*") if p != final)
        for p in old[: max(0, len(old) - (trainer.config.keep_checkpoints - 1))]:
            shutil.rmtree(p, ignore_errors=True)
    acc.wait_for_everyone()
    return final


def load_checkpoint(trainer: Trainer, path: Path) -> int:
    """Restore parameters, optimizer, scheduler and RNG states; returns the step to continue from."""
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if state.get("world_size") != trainer.world_size:
        raise WorkbenchError(
            f"checkpoint {path} was written by {state.get('world_size')} processes and this run has "
            f"{trainer.world_size}; the data order depends on it, so resume with the same process count"
        )
    params = load_file(str(path / "trainable.safetensors"))
    named = dict(trainer.named_trainable)
    missing = sorted(set(named) - set(params))
    unexpected = sorted(set(params) - set(named))
    if missing or unexpected:
        raise WorkbenchError(
            f"checkpoint {path} does not match this run's trainable parameters "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]}); was the config changed?"
        )
    with torch.no_grad():
        for n, p in named.items():
            p.copy_(params[n].to(p.device, p.dtype))
    extra = load_file(str(path / "plugins.safetensors"))
    for comp in trainer.components:
        pre = f"{comp.name}/"
        mine = {k[len(pre) :]: v.to(trainer.device) for k, v in extra.items() if k.startswith(pre)}
        if mine:
            comp.load_state_dict(mine)
    opt_meta = json.loads((path / "optimizer.json").read_text(encoding="utf-8"))
    opt_tensors = load_file(str(path / "optimizer.safetensors"))
    trainer.optimizer.load_state_dict(_join_optimizer(opt_tensors, opt_meta, trainer.device))
    trainer.scheduler.load_state_dict(json.loads((path / "scheduler.json").read_text(encoding="utf-8")))
    rank_file = path / f"rng-{trainer.rank}.safetensors"
    rng = load_file(str(rank_file))
    torch.set_rng_state(rng["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [rng[k] for k in sorted(rng) if k.startswith("torch_cuda_")]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    py = json.loads((path / f"rng-{trainer.rank}.json").read_text(encoding="utf-8"))["python"]
    random.setstate(_py_unstate(py))
    return int(state["step"])


# ---------------------------------------------------------------------- helpers
def _split_optimizer(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"{pid}/{k}"] = v
            else:
                plain.setdefault(str(pid), {})[k] = v
    return tensors, {"param_groups": _jsonable(sd["param_groups"]), "plain_state": plain}


def _join_optimizer(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        pid, k = key.split("/", 1)
        # AdamW keeps 'step' on the CPU unless capturable; the rest lives with the parameter
        state.setdefault(int(pid), {})[k] = v if k == "step" else v.to(device)
    for pid, st in meta.get("plain_state", {}).items():
        state.setdefault(int(pid), {}).update(st)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g and isinstance(g["betas"], list):
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.item() if obj.numel() == 1 else obj.tolist()
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    return None  # callables (lr lambdas) are rebuilt from the config, not stored


def _py_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _py_unstate(data: list) -> tuple:
    version, internal, gauss = data
    return (version, tuple(internal), gauss)
