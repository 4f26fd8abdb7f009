"""The training loop: one loop for plain LoRA, every defense, gates, and any mix of them.

Batching: an optimizer step consumes ``batch_size * grad_accum * world_size`` examples, cut into micro-batches
of ``batch_size``; process ``r`` takes micro-batches ``r, r + W, ...``. The task loss of a micro-batch is its
NLL numerator divided by the token (or sequence) count of the whole step over all processes, and
gradients are summed over processes by one all-reduce per step, so the update equals the full-batch
gradient whatever the accumulation and process count. Defense terms are micro-batch means, weighted by
``1 / micro-batches per step``. Gradient surgery (``on_backward``) sees the complete, synchronised gradient.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import random
import shutil
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from workbench._errors import WorkbenchError
from workbench._io import append_jsonl, atomic_write_json, atomic_write_text
from workbench.runs import ADAPTER_DIR, CHECKPOINTS_DIR, METRICS_JSONL, TRAIN_SUMMARY_JSON
from workbench.tracking import Trackers

from ._checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from ._config import TrainConfig
from ._context import TrainContext
from ._data import ORIGIN, Example, encode_rows, load_source
from ._losses import loss_numerator, token_nll
from ._plugins import TrainPlugin, _Wrapped, get_component, get_plugin, registered_components

log = logging.getLogger(__name__)

# keys that may change between a run and its --resume (they do not change the computation); plugin blocks
# registered with ``resume_free`` (observers such as the EM monitor, whose thresholds may be edited before
# resuming a run it stopped) are added by ``resume_free_keys``
RESUME_FREE = {"checkpoint_every", "keep_checkpoints", "log_every", "eval_every", "plots"}


def resume_free_keys() -> set[str]:
    """``RESUME_FREE`` and the blocks of the registered observer plugins."""
    return RESUME_FREE | {c.key for c in registered_components("plugin").values() if c.resume_free}


class TrainingStopped(WorkbenchError):
    """The run stopped because a loss or gradient stopped being finite."""


def make_accelerator(config: TrainConfig) -> Any:
    from accelerate import Accelerator

    dev = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return Accelerator(cpu=dev.startswith("cpu"))


def _device_for(config: TrainConfig, acc: Any) -> torch.device:
    if acc.num_processes > 1 or config.device in (None, "cuda"):
        return torch.device(acc.device)
    return torch.device(config.device)


def _lr_lambda(warmup: int, total: int):
    def f(step: int) -> float:  # same shape as transformers' linear schedule with warm-up
        if step < warmup:
            return step / max(1, warmup)
        return max(0.0, (total - step) / max(1, total - warmup))

    return f


class Trainer:
    """Builds the model, data, defenses and optimizer from a ``TrainConfig`` and runs the steps."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        accelerator: Any = None,
        *,
        progress: bool = True,
        lm: Any = None,
    ):
        """``lm``: train this already loaded model instead of loading ``config.model``; its parameters that
        require gradients (e.g. a PEFT LoRA it carries) are trained with the components' (and a new LoRA is
        attached only if ``config.lora`` is set)."""
        self.given_lm = lm
        self.config = config
        self.run_dir = Path(run_dir)
        self.accelerator = accelerator if accelerator is not None else make_accelerator(config)
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.device = _device_for(config, self.accelerator)
        self.progress = progress
        self.lm: Any = None
        self.lora_attached = False
        self.components: list[TrainPlugin] = []
        self.plugins: list[TrainPlugin] = []
        self.defenses: list[TrainPlugin] = []
        self.named_trainable: list[tuple[str, nn.Parameter]] = []
        self.start_step = 0
        self.optimizer: Any = None
        self._sites: dict[int, tuple[set[str], set[str]]] = {}
        self._added: list[TrainPlugin] = []  # every component added, active or not (see ``activate``)
        self._added_plugins: list[TrainPlugin] = []
        self.trackers: Trackers | None = None  # ``report_to``: open during ``run`` on the main process

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    # ------------------------------------------------------------------ setup
    def setup(self, *, resume: bool = False) -> None:
        from workbench import load_model

        from ._lora import attach_lora

        cfg, o = self.config, self.config.optim
        random.seed(o.seed)
        torch.manual_seed(o.seed)
        if self.given_lm is not None:
            self.lm = self.given_lm
            own = [p for p in self.lm.model.parameters() if p.requires_grad]
            self.lora_attached = bool(own) and hasattr(self.lm.model, "disable_adapter")
        else:
            self.lm = load_model(cfg.model, device=self.device, dtype=cfg.dtype, seed=o.seed)
            own = []
        for p in self.lm.model.parameters():
            p.requires_grad_(False)
        self.ctx = TrainContext(self)
        for key, settings in sorted(cfg.components.items()):
            if settings is not None:
                entry = get_plugin(key)
                self.add_component(entry.build(entry.read_settings(settings)), kind="plugin")
        for name, settings in cfg.defenses.items():
            entry = get_component(name)
            self.add_component(entry.build(entry.read_settings(settings)), kind="defense")

        rows: list[dict[str, Any]] = []
        for src in cfg.data:
            rows.extend({**r, ORIGIN: "task"} for r in load_source(src))
        n_task = len(rows)
        for comp in self.components:  # on the base model, before LoRA; main process first (caches)
            with self.accelerator.main_process_first():
                rows = comp.transform_data(self.ctx, rows)
        if not rows:
            raise WorkbenchError("no training rows left after the data transforms")
        self.rows = rows
        tok = self.lm.tokenizer
        # refuses data left without an assistant token by max_length (it would train at loss 0)
        self.examples: list[Example] = encode_rows(tok, rows, o.max_length)
        eval_rows = [r for src in cfg.eval_data for r in load_source(src)]
        self.eval_examples = encode_rows(tok, eval_rows, o.max_length, what="eval_data")
        log.info("training rows: %d (%d from the task sources)", len(rows), n_task)

        for p in own:  # a given model's own trainable parameters (after the data transforms on the base)
            p.requires_grad_(True)
        if cfg.lora is not None:
            torch.manual_seed(o.seed)  # identical LoRA initialisation on every process
            attach_lora(self.lm, cfg.lora)
            self.lora_attached = True
        self.lm.model.train()  # as HF's Trainer: dropout as configured (reference passes switch to eval)
        self.ctx.resume = resume
        named = [(n, p) for n, p in self.lm.model.named_parameters() if p.requires_grad]
        self.named_trainable = list(named)  # LoRA parameters, visible to the components' setup
        for comp in self.components:
            self._setup_component(comp)

        groups: list[dict[str, Any]] = []
        if named:
            groups.append({"params": [p for _, p in named], "lr": o.lr, "weight_decay": o.weight_decay})
        for comp in self.components:
            for group, names in self._param_groups(comp):
                named.extend(zip(names, group["params"], strict=True))
                groups.append(group)
        if not named:
            raise WorkbenchError("nothing to train: no LoRA and no plugin returned trainable parameters")
        self.named_trainable = named
        self.params = [p for _, p in named]
        self.optimizer = torch.optim.AdamW(
            groups, lr=o.lr, betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay
        )

        self.global_batch = o.batch_size * o.grad_accum * self.world_size
        self.steps_per_epoch = max(1, math.ceil(len(self.examples) / self.global_batch))
        total = o.max_steps if o.max_steps is not None else o.epochs * self.steps_per_epoch
        for comp in self.components:
            total = comp.limit_steps(self.ctx, total)
        self.total_steps = max(1, int(total))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, _lr_lambda(o.warmup_steps, self.total_steps)
        )

        self.start_step = 0
        ckpt = latest_checkpoint(self.run_dir) if resume else None
        if ckpt is not None:
            self.start_step = load_checkpoint(self, ckpt)
            log.info("resumed from %s at step %d", ckpt, self.start_step)
            if self.is_main:
                _truncate_metrics(self.run_dir / METRICS_JSONL, self.start_step)
        else:
            if resume and self.is_main:  # killed before its first checkpoint: it starts again from step 0
                _truncate_metrics(self.run_dir / METRICS_JSONL, 0)
            if self.world_size > 1:
                import torch.distributed as dist

                with torch.no_grad():
                    for p in self.params:
                        dist.broadcast(p.data, src=0)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ components
    def add_component(self, component: TrainPlugin, *, kind: str | None = None) -> TrainPlugin:
        """Add a defense or plugin (``kind``: ``"defense"`` or ``"plugin"``; default: ``"defense"`` for a
        ``Defense``, else ``"plugin"``) to the loop.

        Before ``setup`` it joins the components ``setup`` prepares (data transforms, its own ``setup``, its
        parameters in the optimizer). After ``setup`` (a bench or a notebook adding one to a ready trainer)
        it is set up now: its ``setup`` runs, its parameters join the optimizer and the schedule, and the hook
        sites it requests are recorded for it. Returns the component (wrapped if it was duck-typed).
        """
        from ._plugins import Defense, as_plugin

        comp = as_plugin(component, getattr(component, "name", "") or type(component).__name__)
        if kind is None:
            kind = "defense" if isinstance(comp, Defense) else "plugin"
        if kind not in ("defense", "plugin"):
            raise WorkbenchError(f"add_component: kind must be 'defense' or 'plugin', got {kind!r}")
        (self.defenses if kind == "defense" else self.plugins).append(comp)
        self.components = [*self.plugins, *self.defenses]
        self._added.append(comp)
        if kind == "plugin":
            self._added_plugins.append(comp)
        if getattr(self, "optimizer", None) is not None:  # the trainer is set up already
            self._setup_component(comp)
            o = self.config.optim
            for group, names in self._param_groups(comp):
                self.optimizer.add_param_group(group)
                self.named_trainable.extend(zip(names, group["params"], strict=True))
                self.params.extend(group["params"])
            done = self.scheduler.last_epoch
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, _lr_lambda(o.warmup_steps, self.total_steps), last_epoch=-1
            )
            for _ in range(done):  # the new schedule continues at the current step
                self.scheduler.step()
        return comp

    def _setup_component(self, comp: TrainPlugin) -> None:
        """``comp.setup(ctx)``, recording the hook sites it requests (``only`` restores them)."""
        ctx = self.ctx
        policy, reference = ctx.policy_sites, ctx.reference_sites
        ctx.policy_sites, ctx.reference_sites = set(), set()
        try:
            comp.setup(ctx)
            self._sites[id(comp)] = (set(ctx.policy_sites), set(ctx.reference_sites))
        finally:
            ctx.policy_sites, ctx.reference_sites = policy | ctx.policy_sites, reference | ctx.reference_sites

    def _param_groups(self, comp: TrainPlugin) -> list[tuple[dict[str, Any], list[str]]]:
        """``comp``'s parameter groups as optimizer groups, with a checkpoint name per parameter."""
        o = self.config.optim
        out = []
        for i, g in enumerate(comp.parameters()):
            if isinstance(g, dict):
                group = dict(g)
                group.setdefault("lr", o.lr)
                group.setdefault("weight_decay", o.weight_decay)
            else:
                params, lr = g
                group = {
                    "params": list(params),
                    "lr": o.lr if lr is None else lr,
                    "weight_decay": o.weight_decay,
                }
            group["params"] = list(group["params"])
            out.append((group, [f"plugins.{comp.name}.{i}.{j}" for j in range(len(group["params"]))]))
        return out

    def sites_of(self, component: TrainPlugin) -> tuple[set[str], set[str]]:
        """The (policy, reference) hook sites ``component`` requested in its ``setup``."""
        comp = next((c for c in self._added if c is component or getattr(c, "obj", None) is component), None)
        if comp is None:
            raise WorkbenchError("Trainer.sites_of: the component was not added with add_component")
        policy, reference = self._sites.get(id(comp), (set(), set()))
        return set(policy), set(reference)

    def activate(self, *components: TrainPlugin) -> None:
        """Make only ``components`` (none: plain LoRA) active in the following steps, with only the hook
        sites they requested; every added component keeps its parameters in the optimizer. A bench times
        each component this way on one trainer, one model and one optimizer. ``activate(*all)`` or
        :meth:`only` (which restores the previous set) undo it."""
        chosen = []
        for x in components:
            comp = next((c for c in self._added if c is x or getattr(c, "obj", None) is x), None)
            if comp is None:
                raise WorkbenchError(
                    "Trainer.activate: every component must have been added with add_component"
                )
            chosen.append(comp)
        self.plugins = [c for c in chosen if any(c is p for p in self._added_plugins)]
        self.defenses = [c for c in chosen if not any(c is p for p in self._added_plugins)]
        self.components = [*self.plugins, *self.defenses]
        self.ctx.policy_sites = set().union(*(self._sites.get(id(c), (set(), set()))[0] for c in chosen))
        self.ctx.reference_sites = set().union(*(self._sites.get(id(c), (set(), set()))[1] for c in chosen))

    @contextlib.contextmanager
    def only(self, *components: TrainPlugin) -> Iterator[Trainer]:
        """:meth:`activate` for the steps inside the block; the previous set is back afterwards."""
        ctx = self.ctx
        saved = (self.plugins, self.defenses, self.components, ctx.policy_sites, ctx.reference_sites)
        self.activate(*components)
        try:
            yield self
        finally:
            self.plugins, self.defenses, self.components, ctx.policy_sites, ctx.reference_sites = saved

    # ------------------------------------------------------------------ data order
    def _order(self, epoch: int) -> list[int]:
        order = list(range(len(self.examples)))
        if self.config.optim.shuffle:
            random.Random(self.config.optim.seed * 1_000_003 + epoch).shuffle(order)
        return order

    def step_indices(self, step: int) -> list[int]:
        """Example indices of optimizer step ``step`` (all processes)."""
        epoch, k = divmod(step, self.steps_per_epoch)
        return self._order(epoch)[k * self.global_batch : (k + 1) * self.global_batch]

    # ------------------------------------------------------------------ one step
    def accumulate(self, step: int) -> dict[str, float]:
        """Forward/backward every micro-batch of ``step`` on this process, all-reduce the gradients and run
        the ``on_backward`` hooks. Leaves the final gradients in ``p.grad``; returns the loss terms."""
        o, ctx = self.config.optim, self.ctx
        ctx.step = step
        idx = self.step_indices(step)
        chunks = [idx[i : i + o.batch_size] for i in range(0, len(idx), o.batch_size)]
        n_micro = len(chunks)
        if o.loss_reduction == "token_mean":
            denom = sum(self.examples[i].n_tokens for i in idx)
        else:
            denom = sum(1 for i in idx if self.examples[i].n_tokens > 0)
        denom = max(1, denom)
        sums: dict[str, float] = defaultdict(float)
        for j, chunk in enumerate(chunks):
            if j % self.world_size != self.rank:
                continue
            ctx.micro = j
            batch = ctx.batch_from_examples([self.examples[i] for i in chunk], [self.rows[i] for i in chunk])
            out = ctx.forward(batch, sorted(ctx.policy_sites))
            nll, mask = token_nll(out.logits, batch.labels)
            task = loss_numerator(nll, mask, o.loss_reduction) / denom
            terms: dict[str, torch.Tensor] = {}
            for comp in self.components:
                for k, v in comp.extra_loss(ctx, batch, out).items():
                    key = k if k not in terms and k not in ("loss", "task_loss") else f"{comp.name}.{k}"
                    terms[key] = v
            total = task + sum((v / n_micro for v in terms.values()), torch.zeros((), device=task.device))
            if torch.isfinite(total):
                total.backward()
            sums["task_loss"] += float(task.detach())
            for k, v in terms.items():
                sums[k] += float(v.detach()) / n_micro
            del out, total, nll, batch
        logs = self._reduce_logs(dict(sums))
        bad = {k: v for k, v in logs.items() if not math.isfinite(v)}
        if bad:
            what = ", ".join(f"{k}={v}" for k, v in bad.items())
            raise TrainingStopped(
                f"non-finite loss at step {step + 1}: {what}; the run stopped (last checkpoint in "
                f"{self.run_dir / CHECKPOINTS_DIR}, if any)"
            )
        self.sync_gradients()
        for comp in self.components:
            comp.on_backward(ctx)
        logs["loss"] = sum(logs.values())
        return logs

    def _reduce_logs(self, sums: dict[str, float]) -> dict[str, float]:
        if self.world_size == 1:
            return sums
        import torch.distributed as dist

        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, sums)
        out: dict[str, float] = defaultdict(float)
        for d in gathered:
            for k, v in d.items():
                out[k] += v
        return dict(out)

    def sync_gradients(self) -> None:
        if self.world_size == 1:
            return
        import torch.distributed as dist

        by_dtype: dict[torch.dtype, list[nn.Parameter]] = defaultdict(list)
        for p in self.params:
            by_dtype[p.dtype].append(p)
        for params in by_dtype.values():
            flat = torch.cat(
                [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
            )
            dist.all_reduce(flat)
            off = 0
            for p in params:
                n = p.numel()
                g = flat[off : off + n].view_as(p)
                if p.grad is None:
                    p.grad = g.clone()
                else:
                    p.grad.copy_(g)
                off += n

    def optimizer_step(self, step: int) -> float:
        """Clip, step the optimizer and the schedule; returns the gradient norm before clipping."""
        mg = self.config.optim.max_grad_norm
        if mg is not None:
            norm = float(torch.nn.utils.clip_grad_norm_(self.params, mg))
        else:
            grads = [p.grad.detach().float().norm() for p in self.params if p.grad is not None]
            norm = float(torch.stack(grads).norm()) if grads else 0.0
        if not math.isfinite(norm):
            raise TrainingStopped(f"non-finite gradient norm at step {step + 1}; the run stopped")
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    @torch.no_grad()
    def eval_loss(self) -> float | None:
        """Assistant-token mean NLL of ``eval_data`` under the trained model (plugins on, defenses off)."""
        if not self.eval_examples:
            return None
        o = self.config.optim
        num, den = 0.0, 0
        self.lm.model.eval()
        for i in range(self.rank * o.batch_size, len(self.eval_examples), o.batch_size * self.world_size):
            chunk = self.eval_examples[i : i + o.batch_size]
            batch = self.ctx.batch_from_examples(chunk)
            out = self.ctx.forward(batch, training=False)
            nll, mask = token_nll(out.logits, batch.labels)
            num += float((nll * mask).sum())
            den += int(mask.sum())
        self.lm.model.train()
        sums = self._reduce_logs({"num": num, "den": float(den)})
        return sums["num"] / max(1.0, sums["den"])

    # ------------------------------------------------------------------ the run
    def run(self, *, stop_after: int | None = None) -> dict[str, Any]:
        """Train from ``start_step`` to the end (or for ``stop_after`` steps, then checkpoint and return).

        Returns ``{"step", "finished"}``; when a plugin asked to stop (``ctx.request_stop``, e.g. the EM
        monitor's ``action: stop`` alert), also ``stopped_by`` and ``reason``: a checkpoint of that step is
        written and ``--resume`` continues the run.

        With ``report_to``, the main process opens the trackers first (they get the ``metrics.jsonl`` rows
        they have not had yet), feeds them each row it appends to ``metrics.jsonl`` and closes them at the
        end, however the call ends (``workbench.tracking``: exactly once across resume; a failing tracker
        is switched off with a warning, never stopping training)."""
        if self.is_main and self.config.report_to:
            self.trackers = Trackers(self.config.report_to, self.run_dir, self.config.to_dict()).start()
        outcome = "failed"
        try:
            result = self._run(stop_after)
            outcome = "finished" if result.get("finished") else "stopped"
            return result
        finally:
            if self.trackers is not None:
                self.trackers.close(outcome)
                self.trackers = None

    def _run(self, stop_after: int | None) -> dict[str, Any]:
        cfg = self.config
        metrics = self.run_dir / METRICS_JSONL
        bar = tqdm(
            total=self.total_steps,
            initial=self.start_step,
            desc="train",
            unit="step",
            disable=not (self.progress and self.is_main),
        )
        t_start = time.time()
        finished = self.start_step >= self.total_steps
        step = self.start_step
        stopped: tuple[str, str] | None = None
        try:
            if not finished:
                for comp in self.components:
                    comp.on_train_start(self.ctx, step)
                stopped = self._stop_request()
                if stopped is not None:
                    save_checkpoint(self, step)
            while step < self.total_steps and stopped is None:
                t0 = time.time()
                lr = self.scheduler.get_last_lr()[0]
                logs = self.accumulate(step)
                norm = self.optimizer_step(step)
                step += 1
                idx = self.step_indices(step - 1)
                row: dict[str, Any] = {
                    "step": step,
                    "epoch": round(step / self.steps_per_epoch, 4),
                    "lr": lr,
                    **logs,
                    **self.ctx._pop_logs(),
                    "grad_norm": norm,
                    "examples": len(idx),
                    "tokens": sum(self.examples[i].n_tokens for i in idx),
                    "seconds": round(time.time() - t0, 4),
                }
                if cfg.eval_data and (
                    step == self.total_steps or (cfg.eval_every and step % cfg.eval_every == 0)
                ):
                    row["eval_loss"] = self.eval_loss()
                if self.is_main and (step % cfg.log_every == 0 or step == self.total_steps):
                    append_jsonl(metrics, row)
                    if self.trackers is not None:
                        self.trackers.log(row)  # the same row, after metrics.jsonl has it
                bar.update(1)
                bar.set_postfix(loss=f"{logs['loss']:.4f}")
                for comp in self.components:
                    comp.on_step_end(self.ctx, step)
                stopped = self._stop_request()
                if step == self.total_steps:
                    finished = True
                    break
                stop = stopped is not None or (
                    stop_after is not None and step - self.start_step >= stop_after
                )
                if stop or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0):
                    save_checkpoint(self, step)
                if stop:
                    break
        finally:
            bar.close()
        if finished:
            save_checkpoint(self, step)
            self._finish(time.time() - t_start)
            return {"step": step, "finished": True}
        if stopped is not None:
            self._write_stopped(step, stopped)
            return {"step": step, "finished": False, "stopped_by": stopped[0], "reason": stopped[1]}
        return {"step": step, "finished": False}

    def _stop_request(self) -> tuple[str, str] | None:
        """The stop a plugin requested during this step, then cleared. With several processes and an observer
        plugin (``on_train_start`` / ``on_step_end``, which may run on the main process only), the main
        process decides for all (one small broadcast per step)."""
        request, self.ctx._stop = self.ctx._stop, None
        if self.world_size > 1 and any(_observes(c) for c in self.components):
            from accelerate.utils import broadcast_object_list

            box = [request]
            broadcast_object_list(box, from_process=0)
            request = box[0]
        return tuple(request) if request is not None else None  # type: ignore[return-value]

    def _write_stopped(self, step: int, stopped: tuple[str, str]) -> None:
        by, reason = stopped
        log.warning(
            "run stopped by %s after step %d of %d: %s; checkpoint %s kept (continue with --resume)",
            by,
            step,
            self.total_steps,
            reason,
            self.run_dir / CHECKPOINTS_DIR / f"step-{step:06d}",
        )
        if self.is_main:
            summary = {
                "steps": self.total_steps,
                "finished": False,
                "stopped_at_step": step,
                "stopped_by": by,
                "stop_reason": reason,
                "checkpoint": f"checkpoints/step-{step:06d}",
            }
            atomic_write_json(self.run_dir / TRAIN_SUMMARY_JSON, summary)
        self.accelerator.wait_for_everyone()

    def _finish(self, seconds: float) -> None:
        checksums = self._rank_checksums()
        if self.is_main:
            if self.lora_attached:
                _save_adapter(self.lm.model, self.run_dir / ADAPTER_DIR)
            for comp in self.components:
                comp.save(self.run_dir)
        self.accelerator.wait_for_everyone()
        if self.is_main:
            for comp in self.defenses:
                comp.finalize(self.ctx, self.run_dir)
            rows = _read_metrics(self.run_dir / METRICS_JSONL)
            summary = {
                "steps": self.total_steps,
                "finished": True,
                "final_loss": rows[-1].get("loss") if rows else None,
                "final_eval_loss": next(
                    (r["eval_loss"] for r in reversed(rows) if r.get("eval_loss") is not None), None
                ),
                "examples": len(self.examples),
                "trainable_parameters": sum(p.numel() for p in self.params),
                "world_size": self.world_size,
                "rank_checksums": checksums,
                "seconds_this_call": round(seconds, 2),
            }
            if len(set(checksums)) > 1:
                log.error("processes ended with different trainable weights: %s", checksums)
            atomic_write_json(self.run_dir / TRAIN_SUMMARY_JSON, summary)
            if self.config.plots:
                from ._plots import write_plots

                write_plots(self.run_dir)
        self.accelerator.wait_for_everyone()

    def _rank_checksums(self) -> list[str]:
        h = hashlib.sha256()
        for name, p in self.named_trainable:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
        mine = h.hexdigest()[:16]
        if self.world_size == 1:
            return [mine]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, mine)
        return [str(x) for x in out]


def _observes(comp: TrainPlugin) -> bool:
    """Whether a component implements ``on_train_start`` or ``on_step_end``."""
    target = comp.obj if isinstance(comp, _Wrapped) else comp
    hooks = ("on_train_start", "on_step_end")
    return any(getattr(type(target), h, None) not in (None, getattr(TrainPlugin, h)) for h in hooks)


# ---------------------------------------------------------------------- run directory helpers
def _save_adapter(model: nn.Module, target: Path) -> None:
    tmp = target.parent / f".{target.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(str(tmp), safe_serialization=True)
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def _read_metrics(path: Path) -> list[dict[str, Any]]:
    rows = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows written after the checkpoint we resume from (they are computed again)."""
    if not path.exists():
        return
    keep = [r for r in _read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def _prepare_run_dir(
    acc: Any,
    config: TrainConfig,
    out: str | Path | None,
    resume: bool,
    overwrite: bool,
    inputs: list[Any] | None = None,
) -> Path:
    """Rank 0 creates (or reopens), checks and locks the run directory and saves the config; the others
    get its path. ``--resume`` refuses a config that differs from the saved one (``RESUME_FREE`` aside)."""
    from workbench.runs import prepare_run_dir, write_config

    path, error = None, None
    if acc.is_main_process:
        try:
            path = prepare_run_dir(
                out, "train", overwrite=overwrite, resume=resume, inputs=[*(inputs or []), config.to_dict()],
                config=config.to_dict(), resume_free=resume_free_keys(),
            )  # fmt: skip
            write_config(path, config.to_dict())
        except WorkbenchError as exc:
            if acc.num_processes == 1:
                raise
            error = str(exc)  # the other processes wait for the path: they get the error instead
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        box = [str(path) if path is not None else None, error]
        broadcast_object_list(box, from_process=0)
        if box[1] is not None:
            raise WorkbenchError(box[1] if acc.is_main_process else f"(process {acc.process_index}) {box[1]}")
        path = Path(box[0])
    assert path is not None
    return path


def train(
    config: TrainConfig | str | Path,
    out: str | Path | None = None,
    *,
    overrides: list[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> Path:
    """Run a training job and return its run directory.

    ``config`` is a ``TrainConfig`` or a YAML path; ``overrides`` are ``key=value`` items; ``resume`` continues
    from the run directory's last checkpoint; ``stop_after`` stops (with a checkpoint) after that many steps
    in this call, for time-sliced jobs. Multi-process: launch with ``torchrun`` / ``accelerate launch`` and
    ``python -m workbench.training._launch``.
    """
    cfg = TrainConfig.from_yaml(config) if isinstance(config, str | Path) else config
    if overrides:
        cfg = cfg.apply_overrides(overrides)
    acc = make_accelerator(cfg)
    from workbench.runs import end_run, holds_run_lock, unlock_run_dir

    held = holds_run_lock(out)  # a caller holding the lock keeps it (and records the run's end)
    inputs = [config] if isinstance(config, str | Path) else []
    run_dir = _prepare_run_dir(acc, cfg, out, resume, overwrite, inputs)
    status, error = "failed", None
    try:
        trainer = Trainer(cfg, run_dir, acc, progress=progress)
        trainer.setup(resume=resume)
        result = trainer.run(stop_after=stop_after)
        status = "finished" if result.get("finished") else "stopped"
    except BaseException as exc:
        error = str(exc) or type(exc).__name__
        raise
    finally:
        if acc.is_main_process and not held:
            end_run(run_dir, status, error)  # run.json: finished, stopped (resumable) or failed
            unlock_run_dir(run_dir)
    return run_dir
