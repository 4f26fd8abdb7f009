"""What a defense or plugin sees of the running loop: ``TrainContext``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from workbench._hooks import read_sites

from ._data import Batch, Example, RowStream, collate, encode_row, load_rows

if TYPE_CHECKING:
    from ._config import TrainConfig
    from ._loop import Trainer


@dataclass
class ForwardOutput:
    """Logits of one forward pass and the activations read at the requested sites."""

    logits: Tensor  # [batch, pos, vocab]
    acts: dict[str, Tensor] = field(default_factory=dict)  # site -> [batch, pos, d_model]


class TrainContext:
    """The loop's state and helpers, passed to every hook.

    Attributes: ``config``, ``lm`` (the ``LoadedModel``; ``lm.model`` is the PEFT model once LoRA is
    attached), ``run_dir``, ``accelerator``, ``device``, ``rank``, ``world_size``, ``seed``, ``resume``,
    ``step`` (0-based index of the optimizer step being computed), ``micro`` (global index of the
    micro-batch within the step), ``total_steps``, ``rows`` (the final training rows). The model is in
    training mode except inside reference passes (and observers' passes, which restore it).
    """

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer
        self.config: TrainConfig = trainer.config
        self.run_dir: Path = trainer.run_dir
        self.accelerator = trainer.accelerator
        self.device: torch.device = trainer.device
        self.rank: int = trainer.rank
        self.world_size: int = trainer.world_size
        self.seed: int = trainer.config.optim.seed
        self.resume: bool = False
        self.step = 0
        self.micro = 0
        self.policy_sites: set[str] = set()
        self.reference_sites: set[str] = set()
        self._encoded: dict[int, tuple[dict[str, Any], Example]] = {}
        self._logs: dict[str, list[float]] = {}
        self._stop: tuple[str, str] | None = None

    # ------------------------------------------------------------------ model access
    @property
    def lm(self) -> Any:
        return self._trainer.lm

    @property
    def model(self) -> nn.Module:
        return self._trainer.lm.model

    @property
    def has_lora(self) -> bool:
        return self._trainer.lora_attached

    @property
    def is_main(self) -> bool:
        return self._trainer.is_main

    @property
    def progress(self) -> bool:
        """Whether long set-up work (pool scoring, generation) shows a progress bar: the run's bar is on
        (``train(progress=True)``) and this is the main process."""
        return bool(getattr(self._trainer, "progress", False)) and self.is_main

    @property
    def total_steps(self) -> int:
        """Optimizer steps of the whole run (known after setup)."""
        return int(self._trainer.total_steps)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The final training rows (after every ``transform_data``); available from ``setup`` on."""
        return self._trainer.rows

    @property
    def micro_per_step(self) -> int:
        """Micro-batches per optimizer step over all processes (``grad_accum * world_size``)."""
        return self.config.optim.grad_accum * self.world_size

    @property
    def global_micro(self) -> int:
        """A running index of the current micro-batch, unique over steps and processes."""
        return self.step * self.micro_per_step + self.micro

    @property
    def cache_dir(self) -> Path:
        d = self.run_dir / "cache"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def trainable_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of everything the optimizer updates (LoRA and plugin parameters)."""
        return list(self._trainer.named_trainable)

    def main_process_first(self) -> contextlib.AbstractContextManager[Any]:
        return self.accelerator.main_process_first()

    # ------------------------------------------------------------------ data
    def load_rows(
        self, value: str, n: int | None = None, seed: int = 0, *, kind: str = "chat"
    ) -> list[dict[str, Any]]:
        """Rows from a chat JSONL path or a shipped dataset name (``kind="pairs"`` for preference pairs)."""
        return load_rows(value, n, seed, kind=kind)

    def stream(self, rows: list[dict[str, Any]], batch_size: int | None = None, seed: int = 0) -> RowStream:
        return RowStream(rows, batch_size or self.config.optim.batch_size, seed)

    def examples(self, rows: Sequence[dict[str, Any]]) -> list[Example]:
        """Tokenized chat rows (assistant-only labels, truncated to ``optim.max_length``), memoised per row."""
        exs = []
        for r in rows:
            hit = self._encoded.get(id(r))
            if hit is None or hit[0] is not r:
                hit = (r, encode_row(self.lm.tokenizer, r, self.config.optim.max_length))
                self._encoded[id(r)] = hit
            exs.append(hit[1])
        return exs

    def encode(self, rows: Sequence[dict[str, Any]]) -> Batch:
        """Tokenize chat rows into a padded batch (see ``examples``)."""
        return self.batch_from_examples(self.examples(rows), list(rows))

    def batch_from_examples(
        self, examples: Sequence[Example], rows: list[dict[str, Any]] | None = None
    ) -> Batch:
        ids, att, lab = collate(examples, self.lm.tokenizer.pad_token_id, self.device)
        return Batch(ids, att, lab, rows or [])

    # ------------------------------------------------------------------ forward passes
    def request_policy_sites(self, sites: Sequence[str]) -> None:
        """Ask the task forward pass to record these sites (with gradients) into ``outputs.acts``."""
        for s in sites:
            self.lm.sites.parse(s)
        self.policy_sites.update(sites)

    def request_reference_sites(self, sites: Sequence[str]) -> None:
        """Ask every reference pass to record these sites too (so defenses share one reference pass)."""
        for s in sites:
            self.lm.sites.parse(s)
        self.reference_sites.update(sites)

    def forward(self, batch: Batch, sites: Sequence[str] = (), *, training: bool = True) -> ForwardOutput:
        """A forward pass of the trained model with every plugin's ``forward_context`` (and, with
        ``training``, every defense's) active; ``sites`` are recorded with gradients."""
        comps = self._trainer.components if training else self._trainer.plugins
        with contextlib.ExitStack() as stack:
            for comp in comps:
                stack.enter_context(comp.forward_context(self, batch))
            cache = stack.enter_context(read_sites(self.lm, list(sites), detach=False)) if sites else None
            logits = self.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).logits
            acts = {s: cache[s] for s in sites} if cache is not None else {}
        return ForwardOutput(logits, acts)

    @contextlib.contextmanager
    def policy(self, batch: Batch | None = None, *, training: bool = False) -> Iterator[None]:
        """The trained model as ``forward`` runs it, for passes that call ``ctx.model`` themselves
        (generation, teacher-forced reads): every plugin's ``forward_context`` (e.g. gates) is active, and
        with ``training`` every defense's too. ``batch`` may be None for such passes."""
        comps = self._trainer.components if training else self._trainer.plugins
        with contextlib.ExitStack() as stack:
            for comp in comps:
                stack.enter_context(comp.forward_context(self, batch))  # type: ignore[arg-type]
            yield

    @contextlib.contextmanager
    def reference(self) -> Iterator[None]:
        """The reference model: LoRA disabled (peft ``disable_adapter``; no second copy) and every plugin's
        ``reference_context`` active. Defenses' forward contexts (e.g. steering) are not applied."""
        model = self.model
        was_training = model.training
        with contextlib.ExitStack() as stack:
            if self.has_lora:
                stack.enter_context(model.disable_adapter())
            for comp in self._trainer.components:
                stack.enter_context(comp.reference_context(self))
            model.eval()  # the reference is deterministic: no dropout
            try:
                yield
            finally:
                model.train(was_training)

    @torch.no_grad()
    def reference_forward(self, batch: Batch, sites: Sequence[str] = ()) -> ForwardOutput:
        """Reference-model outputs for ``batch`` (no gradients), computed once per batch and shared."""
        want = set(sites) | self.reference_sites
        for key, out in batch.cache.items():
            if key[0] == "ref" and want <= set(key[1]):
                return out
        all_sites = sorted(want)
        with self.reference(), contextlib.ExitStack() as stack:
            cache = stack.enter_context(read_sites(self.lm, all_sites)) if all_sites else None
            logits = self.model(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
            ).logits
            acts = {s: cache[s] for s in all_sites} if cache is not None else {}
        out = ForwardOutput(logits, acts)
        batch.cache[("ref", tuple(all_sites))] = out
        return out

    # ------------------------------------------------------------------ gradients and logging
    def sync_gradients(self) -> None:
        """Sum ``p.grad`` of the trainable parameters over processes (one all-reduce; no-op for one)."""
        self._trainer.sync_gradients()

    def request_stop(self, reason: str, by: str = "plugin") -> None:
        """Ask the loop to end the run after the current step with a resumable checkpoint (first request
        wins). The main process's request decides for every process."""
        if self._stop is None:
            self._stop = (by, reason)

    def log(self, key: str, value: float) -> None:
        """A diagnostic value for this step's metrics row (averaged over the calls on the main process)."""
        self._logs.setdefault(key, []).append(float(value))

    def _pop_logs(self) -> dict[str, float]:
        out = {k: sum(v) / len(v) for k, v in self._logs.items() if v}
        self._logs = {}
        return out
