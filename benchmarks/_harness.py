"""The side-by-side harness behind ``workbench bench``: timing, memory, the row registry and the JSON report.

Every row compares two ways of doing the same work on the same inputs in one process. The two (or more)
callables are run round-robin after a warm-up, alternating the order each round (A B, B A, A B, ...) so
slow drift of the machine (thermal, other jobs) hits both sides alike; the row reports the median of each
side and their ratio. Nothing here asserts a speed: targets are reported as met or missed.

Extension point: a row is a :class:`RowSpec` in the ordered registry ``ROWS``; add one with
:func:`register_row`. The row function receives the :class:`Bench` (model, device, sizes, a timer, a
memory probe, a scratch folder, a memo for work shared by several rows) and the spec's ``params``, and
returns a :class:`Measured`. A variant of an existing row (e.g. ``compile=True``) is one more
``RowSpec`` naming the same function with other ``params``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import logging
import math
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from workbench import DEFAULT_MODEL, WorkbenchError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
GIB = float(1 << 30)
DEVICES = ("cpu", "cuda")
DEFAULT_SHAPE = {"cpu": DEFAULT_MODEL, "cuda": "random:qwen2.5-7b"}
DEFAULT_DTYPE = {"cpu": "float32", "cuda": "bfloat16"}

#: keys of every row in the JSON report (``a`` / ``b`` / ``ratio`` / ``met`` are null on rows that did not run)
ROW_KEYS = (
    "name",
    "title",
    "status",
    "reason",
    "a",
    "b",
    "ratio",
    "ratio_definition",
    "target",
    "met",
    "sizes",
    "extra",
    "notes",
    "device",
    "dtype",
    "versions",
)
#: keys of each side (``a``, ``b``) of a row
SIDE_KEYS = ("label", "median_s", "times_s", "work", "unit", "per_s")


# ----------------------------------------------------------------------------------------------- sizes
@dataclass(frozen=True)
class Sizes:
    """Workload sizes of one run (tokens are model tokens of the benchmarked tokenizer)."""

    fwd_examples: int  # teacher-forced examples for the extraction rows
    fwd_batch: int
    prompt_tokens: int
    answer_tokens: int
    gen_batch: int  # prompts per generate call
    gen_prompt_tokens: int
    gen_new_tokens: int
    sweep_prompts: int  # prompts per alpha in the alpha-sweep row (8 alphas)
    sweep_new_tokens: int
    decode_batch: int  # the memory-bandwidth rows
    decode_new_tokens: int
    train_batch: int  # sequences per LoRA step (one micro-batch)
    train_seq: int
    pool_rows: int  # Interleaving+ scoring pool
    pool_batch: int
    repeats: int  # measured rounds per row (after warm-up)
    warmup: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


SIZES: dict[tuple[str, bool], Sizes] = {
    # 2 CPU cores, quick: the whole run in about 3 minutes on an idle machine (see benchmarks/README.md)
    ("cpu", True): Sizes(
        fwd_examples=8, fwd_batch=8, prompt_tokens=8, answer_tokens=16,
        gen_batch=4, gen_prompt_tokens=8, gen_new_tokens=16,
        sweep_prompts=1, sweep_new_tokens=8,
        decode_batch=16, decode_new_tokens=16,
        train_batch=2, train_seq=64,
        pool_rows=4, pool_batch=4,
        repeats=3, warmup=1,
    ),
    ("cpu", False): Sizes(
        fwd_examples=32, fwd_batch=16, prompt_tokens=32, answer_tokens=96,
        gen_batch=8, gen_prompt_tokens=32, gen_new_tokens=32,
        sweep_prompts=2, sweep_new_tokens=16,
        decode_batch=16, decode_new_tokens=32,
        train_batch=4, train_seq=128,
        pool_rows=32, pool_batch=16,
        repeats=5, warmup=1,
    ),
    ("cuda", True): Sizes(
        fwd_examples=32, fwd_batch=16, prompt_tokens=64, answer_tokens=192,
        gen_batch=16, gen_prompt_tokens=32, gen_new_tokens=64,
        sweep_prompts=4, sweep_new_tokens=32,
        decode_batch=16, decode_new_tokens=64,
        train_batch=4, train_seq=256,
        pool_rows=64, pool_batch=16,
        repeats=3, warmup=1,
    ),
    ("cuda", False): Sizes(
        fwd_examples=64, fwd_batch=16, prompt_tokens=64, answer_tokens=192,
        gen_batch=16, gen_prompt_tokens=32, gen_new_tokens=128,
        sweep_prompts=4, sweep_new_tokens=64,
        decode_batch=16, decode_new_tokens=128,
        train_batch=4, train_seq=512,
        pool_rows=256, pool_batch=16,
        repeats=5, warmup=2,
    ),
}  # fmt: skip


# ----------------------------------------------------------------------------------------------- targets
@dataclass(frozen=True)
class Target:
    """What a row's ratio should be: ``ratio >= value`` (``op=">="``) or ``ratio <= value``."""

    op: str
    value: float
    text: str

    def check(self, ratio: float | None) -> bool | None:
        if ratio is None or not math.isfinite(ratio):
            return None
        return ratio >= self.value if self.op == ">=" else ratio <= self.value

    def as_dict(self) -> dict[str, Any]:
        return {"op": self.op, "value": self.value, "text": self.text}


def at_least(value: float, text: str) -> Target:
    return Target(">=", float(value), text)


def at_most(value: float, text: str) -> Target:
    return Target("<=", float(value), text)


# ----------------------------------------------------------------------------------------------- results
@dataclass
class Side:
    """One side of a pair: the measured seconds per call and the work one call does (tokens, steps...)."""

    label: str
    times_s: list[float]
    work: float | None = None
    unit: str = "tokens"

    @property
    def median_s(self) -> float:
        return float(statistics.median(self.times_s))

    @property
    def per_s(self) -> float | None:
        if self.work is None:
            return None
        return self.work / self.median_s

    def as_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "median_s": round(self.median_s, 6),
            "times_s": [round(t, 6) for t in self.times_s],
            "work": self.work,
            "unit": self.unit,
            "per_s": None if self.per_s is None else round(self.per_s, 4),
        }


@dataclass
class Measured:
    """What a row function returns. ``a`` and ``b`` are :class:`Side` objects or plain dicts (memory rows)."""

    a: Side | dict[str, Any]
    b: Side | dict[str, Any]
    ratio: float
    ratio_definition: str
    sizes: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: str = ""


def throughput_ratio(a: Side, b: Side) -> float:
    """``A per second / B per second`` (work per call may differ between the sides)."""
    assert a.per_s is not None and b.per_s is not None
    return a.per_s / b.per_s


def time_ratio(a: Side, b: Side) -> float:
    """``median time of A / median time of B`` (for equal work: how much longer A takes)."""
    return a.median_s / b.median_s


# ----------------------------------------------------------------------------------------------- registry
RowFn = Callable[..., Measured]


@dataclass(frozen=True)
class RowSpec:
    """One row of the report.

    name:     stable key in the JSON (``[a-z0-9_]``).
    title:    what is compared, in words (``"A vs B"``).
    fn:       ``fn(bench, **params) -> Measured``.
    params:   keyword arguments for ``fn`` (variants of a row differ only here, e.g. ``{"compile": True}``).
    target:   a :class:`Target`, ``None`` (report only), or ``{"cpu": ..., "cuda": ...}`` per device type.
    devices:  device types the row runs on; elsewhere it is reported with status ``n/a`` and ``na_reason``.
    skip_quick_on: device types where ``--quick`` reports the row as ``n/a`` (it runs in the full mode).
    """

    name: str
    title: str
    fn: RowFn
    params: Mapping[str, Any] = field(default_factory=dict)
    target: Target | None | Mapping[str, Target | None] = None
    devices: tuple[str, ...] = DEVICES
    na_reason: str = "n/a (no GPU)"
    #: device types on which ``--quick`` leaves the row out (too slow for the quick budget there)
    skip_quick_on: tuple[str, ...] = ()

    def target_for(self, device_type: str) -> Target | None:
        if isinstance(self.target, Mapping):
            return self.target.get(device_type)
        return self.target


#: the rows, in report order (training rows last: they release the inference model to measure memory)
ROWS: dict[str, RowSpec] = {}

_NAME = re.compile(r"^[a-z0-9_]+$")


def register_row(spec: RowSpec, *, overwrite: bool = False, before: str | None = None) -> RowSpec:
    """Add a row to the report (``before``: insert ahead of that row instead of at the end).

    >>> register_row(RowSpec("monitor_overhead", "LoRA step + monitor vs plain LoRA step",   # doctest: +SKIP
    ...                       my_fn, target=at_most(1.05, "<= 1.05x time")), before="peak_memory_kl")
    """
    if not _NAME.match(spec.name):
        raise WorkbenchError(f"bench row name '{spec.name}' must match [a-z0-9_]+")
    if spec.name in ROWS and not overwrite:
        raise WorkbenchError(f"a bench row named '{spec.name}' is already registered")
    if before is not None and before not in ROWS:
        raise WorkbenchError(f"cannot insert before unknown bench row '{before}'")
    ROWS.pop(spec.name, None)
    if before is None:
        ROWS[spec.name] = spec
    else:
        items = list(ROWS.items())
        i = [k for k, _ in items].index(before)
        items.insert(i, (spec.name, spec))
        ROWS.clear()
        ROWS.update(items)
    return spec


# ----------------------------------------------------------------------------------------------- memory
class MemoryProbe:
    """Peak memory of a block of work.

    CUDA: ``torch.cuda.max_memory_allocated`` (tensors allocated by PyTorch, all of them, weights included)
    after ``reset_peak_memory_stats``. CPU on Linux: the process's peak resident set size (``VmHWM``) after
    returning freed heap pages to the system (``malloc_trim``) and resetting the high-water mark through
    ``/proc/self/clear_refs``; it counts everything resident (weights, Python, libraries), measured to a
    page. Elsewhere the CPU peak is not measurable here and ``available`` is False.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.method = ""
        self.available = True
        self.reason = ""
        self._libc: Any = None
        if device.type == "cuda":
            self.method = "torch.cuda.max_memory_allocated after reset_peak_memory_stats"
            return
        if not (sys.platform.startswith("linux") and os.path.exists("/proc/self/clear_refs")):
            self.available, self.reason = False, "needs Linux /proc (VmHWM and clear_refs)"
            return
        try:
            self._libc = ctypes.CDLL("libc.so.6")
            self._libc.malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
        except (OSError, AttributeError) as exc:  # no glibc (malloc_trim) or no permission on clear_refs
            self.available, self.reason = False, f"cannot reset the peak RSS: {exc}"
            return
        self.method = "process peak RSS (VmHWM) after malloc_trim and a clear_refs reset (Linux)"

    @staticmethod
    def _status(key: str) -> int:
        with open("/proc/self/status") as fh:
            m = re.search(rf"^{key}:\s+(\d+) kB", fh.read(), re.M)
        if m is None:  # pragma: no cover - every Linux kernel since 2.6 has both keys
            raise WorkbenchError(f"/proc/self/status has no {key}")
        return int(m.group(1)) * 1024

    def measure(self, fn: Callable[[], Any]) -> dict[str, float]:
        """Run ``fn`` once; returns ``{"peak_gib", "before_gib", "delta_gib"}``."""
        if not self.available:
            raise WorkbenchError(f"peak memory is not measurable on this CPU: {self.reason}")
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            fn()
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._libc.malloc_trim(0)
            before = self._status("VmRSS")
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            fn()
            peak = self._status("VmHWM")
        return {
            "peak_gib": round(peak / GIB, 4),
            "before_gib": round(before / GIB, 4),
            "delta_gib": round((peak - before) / GIB, 4),
        }


# ----------------------------------------------------------------------------------------------- the bench
class Bench:
    """What a row function works with.

    ``lm`` (loaded on first use, ``release_lm()`` frees it), ``device``, ``dtype``, ``sizes``,
    ``time(fns)`` (interleaved timing), ``memory`` (a :class:`MemoryProbe`), ``scratch`` (a temporary
    folder removed at the end) and ``shared(key, factory)`` (work computed once and used by several rows,
    e.g. one round-robin over every training variant).
    """

    def __init__(
        self,
        spec: str,
        device: torch.device,
        dtype: torch.dtype,
        sizes: Sizes,
        scratch: Path,
        *,
        quick: bool = True,
        seed: int = 0,
    ) -> None:
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.sizes = sizes
        self.scratch = scratch
        self.quick = quick
        self.seed = seed
        self._lm: Any = None
        self._shared: dict[str, Any] = {}
        self._memory: MemoryProbe | None = None

    # -- model -------------------------------------------------------------------------------------
    @property
    def lm(self) -> Any:
        if self._lm is None:
            self._lm = load_quietly(self.spec, self.device, self.dtype, self.seed)
        return self._lm

    def release_lm(self) -> None:
        """Drop the inference model (rows that build their own copy call this first, to leave room)."""
        self._lm = None
        self.free()

    def free(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    @property
    def memory(self) -> MemoryProbe:
        if self._memory is None:
            self._memory = MemoryProbe(self.device)
        return self._memory

    def shared(self, key: str, factory: Callable[[], Any]) -> Any:
        if key not in self._shared:
            self._shared[key] = factory()
        return self._shared[key]

    def drop_shared(self, key: str) -> None:
        self._shared.pop(key, None)
        self.free()

    def folder(self, name: str) -> Path:
        """A fresh, empty folder under the scratch folder."""
        path = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=self.scratch))
        return path

    # -- timing ------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(
        self,
        fns: Mapping[str, Callable[[], Any]],
        *,
        repeats: int | None = None,
        warmup: int | None = None,
    ) -> dict[str, list[float]]:
        """Seconds per call of each callable, run round-robin: ``warmup`` unrecorded rounds, then
        ``repeats`` recorded ones; the order is reversed every other round (A B, B A, ...)."""
        repeats = self.sizes.repeats if repeats is None else repeats
        warmup = self.sizes.warmup if warmup is None else warmup
        labels = list(fns)
        times: dict[str, list[float]] = {k: [] for k in labels}
        for r in range(warmup + repeats):
            order = labels if r % 2 == 0 else labels[::-1]
            for k in order:
                self.sync()
                t0 = time.perf_counter()
                fns[k]()
                self.sync()
                dt = time.perf_counter() - t0
                if r >= warmup:
                    times[k].append(dt)
        return times


def load_quietly(spec: str, device: torch.device, dtype: torch.dtype, seed: int = 0) -> Any:
    """``workbench.load_model`` without transformers' progress bars and warnings (the commands' loader)."""
    from workbench.cli_common import load_model_quietly

    return load_model_quietly(spec, device=device, dtype=dtype, seed=seed)


# ----------------------------------------------------------------------------------------------- environment
def versions() -> dict[str, str]:
    """Library versions (only those the bench needs; nothing optional is imported)."""
    import peft
    import transformers

    from workbench import __version__

    out = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "workbench": __version__,
    }
    if torch.version.cuda:
        out["cuda"] = str(torch.version.cuda)
    return out


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
    }
    with contextlib.suppress(OSError, AttributeError):
        info["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
    return info


def resolve_device(device: str | None) -> torch.device:
    """``cpu`` or ``cuda`` (``None``: cuda when available); a clear error for anything else."""
    name = (device or ("cuda" if torch.cuda.is_available() else "cpu")).strip().lower()
    kind = name.split(":", 1)[0]
    if kind not in DEVICES:
        raise WorkbenchError(f"--device '{device}' is not supported; use cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError("--device cuda: CUDA is not available on this machine (torch sees no GPU)")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise WorkbenchError(f"--device '{device}': {exc}") from None


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    from workbench.models import default_dtype

    return default_dtype(dtype or DEFAULT_DTYPE[device.type], device)


def check_shape(spec: str) -> None:
    """Fail early (before any model is built) on a ``random:`` shape that does not exist."""
    from workbench.models import FULL_SHAPES, TINY_SHAPES, shape_names

    if spec.startswith("random:"):
        name = spec.split(":", 1)[1]
        if name not in TINY_SHAPES and name not in FULL_SHAPES:
            raise WorkbenchError(
                f"--shape '{spec}': unknown random shape; shapes: {', '.join(shape_names())}"
            )


# ----------------------------------------------------------------------------------------------- running
def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _row_record(spec: RowSpec, bench: Bench, env: dict[str, Any]) -> dict[str, Any]:
    target = spec.target_for(bench.device.type)
    return {
        "name": spec.name,
        "title": spec.title,
        "status": "ok",
        "reason": "",
        "a": None,
        "b": None,
        "ratio": None,
        "ratio_definition": "",
        "target": None if target is None else target.as_dict(),
        "met": None,
        "sizes": {},
        "extra": {},
        "notes": "",
        **env,
        "row_wall_s": None,
    }


def _side(x: Side | dict[str, Any]) -> dict[str, Any]:
    return x.as_dict() if isinstance(x, Side) else dict(x)


def run_row(spec: RowSpec, bench: Bench, env: dict[str, Any], *, strict: bool = False) -> dict[str, Any]:
    """Run one row; a row that cannot run here is ``n/a``, one that fails is ``error`` (or raises if strict)."""
    rec = _row_record(spec, bench, env)
    if bench.device.type not in spec.devices:
        rec.update(status="n/a", reason=spec.na_reason)
        return rec
    if bench.quick and bench.device.type in spec.skip_quick_on:
        rec.update(status="n/a", reason=f"n/a (--quick on {bench.device.type}: run without --quick)")
        return rec
    t0 = time.perf_counter()
    try:
        m = spec.fn(bench, **dict(spec.params))
    except Exception as exc:
        if strict:
            raise
        log.warning("bench row %s failed: %s", spec.name, _one_line(exc), exc_info=log.isEnabledFor(10))
        rec.update(status="error", reason=_one_line(exc))
        return rec
    target = spec.target_for(bench.device.type)
    rec.update(
        a=_side(m.a),
        b=_side(m.b),
        ratio=round(float(m.ratio), 4),
        ratio_definition=m.ratio_definition,
        met=None if target is None else target.check(m.ratio),
        sizes=dict(m.sizes),
        extra=dict(m.extra),
        notes=m.notes,
        row_wall_s=round(time.perf_counter() - t0, 2),
    )
    return rec


def select_rows(only: Sequence[str] | None) -> list[RowSpec]:
    from . import rows  # noqa: F401  (registers the shipped rows)

    if not only:
        return list(ROWS.values())
    unknown = [n for n in only if n not in ROWS]
    if unknown:
        raise WorkbenchError(f"unknown bench row(s) {unknown}; rows: {', '.join(ROWS)}")
    return [ROWS[n] for n in ROWS if n in set(only)]


def run_bench(
    *,
    device: str | None = None,
    shape: str | None = None,
    quick: bool = False,
    dtype: str | None = None,
    only: Sequence[str] | None = None,
    sizes: Sizes | None = None,
    strict: bool = False,
    progress: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the benchmark rows and return the report (a JSON-ready dict; see ``benchmarks/README.md``).

    ``device``: ``cpu`` or ``cuda`` (default: cuda when available). ``shape``: a model spec (default
    ``workbench.DEFAULT_MODEL`` on the CPU, ``random:qwen2.5-7b`` on CUDA). ``quick``: the small sizes. ``only``: row
    names to run. ``sizes`` overrides the workload sizes. ``strict`` raises on the first failing row.
    """
    from tqdm.auto import tqdm

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    spec = (shape or DEFAULT_SHAPE[dev.type]).strip()
    check_shape(spec)
    rows = select_rows(only)
    chosen = sizes or SIZES[(dev.type, bool(quick))]
    started = time.time()
    scratch = Path(tempfile.mkdtemp(prefix="workbench-bench-"))
    bench = Bench(spec, dev, dt, chosen, scratch, quick=quick, seed=seed)
    env = {
        "device": str(dev),
        "dtype": str(dt).replace("torch.", ""),
        "versions": versions(),
    }
    report: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "shape": spec,
        "quick": bool(quick),
        **env,
        "machine": machine(dev),
        "sizes": chosen.as_dict(),
        "method": (
            "pairs run side by side in one process: warm-up, then round-robin with the order reversed "
            "every other round; medians per side; ratios as defined per row"
        ),
    }
    try:
        t_load = time.perf_counter()
        lm = bench.lm  # load once up front: a bad spec fails before any row runs
        report["model"] = {
            "load_s": round(time.perf_counter() - t_load, 2),
            "parameters": sum(p.numel() for p in lm.model.parameters()),
            "n_layers": lm.n_layers,
            "d_model": lm.d_model,
            "architecture": lm.sites.model_type,
        }
        out_rows = []
        for row in tqdm(rows, desc="bench", unit="row", disable=not progress):
            log.info("bench row %s", row.name)
            out_rows.append(run_row(row, bench, env, strict=strict))
    finally:
        bench._shared.clear()
        bench.release_lm()
        shutil.rmtree(scratch, ignore_errors=True)
    report["rows"] = out_rows
    report["summary"] = summarize(out_rows)
    report["wall_s"] = round(time.time() - started, 2)
    with contextlib.suppress(OSError, AttributeError):
        report["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return report


def summarize(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "rows": len(rows),
        "met": [r["name"] for r in rows if r["met"] is True],
        "missed": [r["name"] for r in rows if r["met"] is False],
        "report_only": [r["name"] for r in rows if r["status"] == "ok" and r["met"] is None],
        "not_applicable": [r["name"] for r in rows if r["status"] == "n/a"],
        "errors": [r["name"] for r in rows if r["status"] == "error"],
    }


def format_table(report: Mapping[str, Any]) -> str:
    """A short plain-text table of a report (what the CLI prints)."""
    lines = [
        f"device {report['device']} ({report['machine'].get('gpu', 'cpu')}), dtype {report['dtype']}, "
        f"shape {report['shape']}, quick={report['quick']}, wall {report.get('wall_s', 0):.0f} s"
    ]
    for r in report["rows"]:
        if r["status"] != "ok":
            why = r["reason"] if r["reason"].startswith(r["status"]) else f"{r['status']}: {r['reason']}"
            lines.append(f"  {r['name']:<38} {why}")
            continue
        tgt = r["target"]["text"] if r["target"] else "report"
        met = {True: "met", False: "MISSED", None: ""}[r["met"]]
        lines.append(f"  {r['name']:<38} {r['ratio']:>8.3f}   target {tgt:<36} {met}")
    return "\n".join(lines)


@contextlib.contextmanager
def patched(obj: Any, **values: Any) -> Iterator[None]:
    """Set attributes for the duration of a block, then put the old values back."""
    old = {k: getattr(obj, k) for k in values}
    try:
        for k, v in values.items():
            setattr(obj, k, v)
        yield
    finally:
        for k, v in old.items():
            setattr(obj, k, v)
