"""The shipped benchmark rows (registered in report order when this module is imported).

Rows that share work (the extraction trio, the generation variants, the training variants) measure it once
in one round-robin over all of their callables (``Bench.shared``); each row then reports its own pair from
it. Every callable runs the workbench's public code path (``teacher_forced_stats``, ``generate`` under a
``Steerer`` or ``GateSet``, the training loop's ``Trainer.accumulate`` + ``optimizer_step``, the
Interleaving+ defense's ``score_pool``); the baselines are written here, as plainly as possible.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import torch

from workbench import WorkbenchError

from ._harness import (
    GIB,
    Bench,
    Measured,
    RowSpec,
    Side,
    at_least,
    at_most,
    patched,
    register_row,
    throughput_ratio,
    time_ratio,
)

log = logging.getLogger(__name__)

N_ALPHAS = 8
N_ADAPTERS = 3
#: a short system prompt on every bench chat (without one, some templates, SmolLM2's among them, insert a
#: default system prompt of ~30 tokens that would dominate the short quick-mode inputs)
SYSTEM = "Be brief."

_WORDS = (
    "the river carried small stones past the old mill while a careful neighbour counted boats and "
    "wrote every number into a paper notebook before the evening light faded over quiet gardens "
    "where children asked simple questions about weather clocks maps bread music and distant cities"
).split()


# ----------------------------------------------------------------------------------------------- inputs
def text_of(tokenizer: Any, n_tokens: int, seed: int) -> str:
    """Deterministic filler text of (at most, and as close as possible to) ``n_tokens`` tokens."""
    rng = random.Random(seed)
    words: list[str] = []

    def count(k: int) -> int:
        return len(tokenizer(" ".join(words[:k]), add_special_tokens=False)["input_ids"])

    while count(len(words)) < n_tokens:
        words.extend(rng.choice(_WORDS) for _ in range(max(4, n_tokens // 2)))
    lo, hi = 1, len(words)  # the largest k with count(k) <= n_tokens
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count(mid) <= n_tokens:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo])


def _texts(bench: Bench, n: int, n_tokens: int, seed: int) -> list[str]:
    tok = bench.lm.tokenizer
    return [text_of(tok, n_tokens, seed * 10_007 + i) for i in range(n)]


def _random_vector(bench: Bench, scale: float = 1.0) -> torch.Tensor:
    """A fixed random direction per layer, ``[n_layers, d_model]`` (timings do not depend on its values)."""
    g = torch.Generator().manual_seed(1234)
    v = torch.randn(bench.lm.n_layers, bench.lm.d_model, generator=g)
    return scale * v / v.norm(dim=-1, keepdim=True)


@contextlib.contextmanager
def fixed_length(lm: Any, n: int) -> Iterator[None]:
    """Every generate call in the block makes exactly ``n`` new tokens (EOS is held back until then), so
    steered, gated and plain runs do the same work whatever they sample."""
    with patched(lm.model.generation_config, min_new_tokens=n):
        yield


def _generate(bench: Bench, prompts: list[str], n_new: int, *, compile: bool | None = None) -> list[str]:
    """``workbench.generation.generate`` on one batch; ``compile`` is passed only when given (``None``:
    generate's own default, which compiles on CUDA and not on the CPU)."""
    from workbench.generation import generate

    kwargs: dict[str, Any] = {"max_new_tokens": n_new, "batch_size": len(prompts), "system": SYSTEM}
    if compile is not None:
        kwargs["compile"] = bool(compile)
    try:
        return generate(bench.lm, prompts, **kwargs)
    except TypeError as exc:
        if compile is not None and "compile" in str(exc):
            raise WorkbenchError("workbench.generation.generate has no 'compile' option") from None
        raise


def _compile_label(compile: bool | None, device: torch.device) -> str:
    if compile is not None:
        return "on" if compile else "off"
    try:
        from workbench._compiled import default_compile
    except ImportError:  # a workbench without compiled decoding
        return "default"
    return "default (on)" if default_compile(device) else "default (off)"


def _gates(bench: Bench, kind: str, sites: tuple[str, ...] = ("attn",)) -> Any:
    """Gates at every layer with non-trivial values (a trained-looking state; the cost is the same)."""
    from gating import GateSet

    gs = GateSet.create(bench.lm, kind=kind, sites=sites)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in gs.parameters():
            p.copy_(0.01 * torch.randn(p.shape, generator=g).to(p.device, p.dtype))
    gs.eval()
    return gs


# ----------------------------------------------------------------------------------------------- extraction
@dataclass
class _Extraction:
    times: dict[str, list[float]]
    tokens: int
    sizes: dict[str, Any]


def _persona_vectors_way(bench: Bench, prompts: list[str], answers: list[str]) -> None:
    """The one-example-at-a-time reading of the persona_vectors code: for each (prompt, answer), one forward
    pass with ``output_hidden_states``, then per layer the response mean, prompt mean and last prompt token
    moved to the host."""
    from workbench.generation import render_prompts

    lm, tok = bench.lm, bench.lm.tokenizer
    for text, answer in zip(render_prompts(tok, prompts, SYSTEM), answers, strict=True):
        p = tok(text, add_special_tokens=False)["input_ids"]
        a = tok(answer, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + a], device=lm.device)
        with torch.no_grad():
            hs = lm.model(input_ids=ids, output_hidden_states=True).hidden_states
        start = len(p)
        for layer in range(1, len(hs)):
            h = hs[layer]
            h[:, start:].mean(dim=1).detach().cpu()
            h[:, :start].mean(dim=1).detach().cpu()
            h[:, start - 1].detach().cpu()


def _measure_extraction(bench: Bench) -> _Extraction:
    from probes._activations import _batches, teacher_forced_stats
    from workbench.scoring import build_teacher_forced, pad_right

    s = bench.sizes
    lm = bench.lm
    prompts = _texts(bench, s.fwd_examples, s.prompt_tokens, seed=1)
    answers = _texts(bench, s.fwd_examples, s.answer_tokens, seed=2)
    examples = build_teacher_forced(lm.tokenizer, prompts, answers, SYSTEM)
    pad = lm.tokenizer.pad_token_id
    batches = [
        pad_right([examples[i][0] for i in idx], pad, lm.device) for idx in _batches(examples, s.fwd_batch)
    ]
    tokens = sum(len(ids) for ids, _ in examples)

    def extraction() -> None:
        teacher_forced_stats(lm, prompts, answers, batch_size=s.fwd_batch, system=SYSTEM)

    @torch.no_grad()
    def plain() -> None:
        for ids, mask in batches:
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    def one_at_a_time() -> None:
        _persona_vectors_way(bench, prompts, answers)

    times = bench.time({"extraction": extraction, "plain": plain, "one_at_a_time": one_at_a_time})
    lengths = [len(ids) for ids, _ in examples]
    sizes = {
        "examples": s.fwd_examples,
        "batch": s.fwd_batch,
        "seq_min": min(lengths),
        "seq_max": max(lengths),
        "tokens": tokens,
        "layers_read": lm.n_layers,
    }
    return _Extraction(times, tokens, sizes)


def extraction_vs_forward(bench: Bench) -> Measured:
    m: _Extraction = bench.shared("extraction", lambda: _measure_extraction(bench))
    a = Side("teacher_forced_stats (all layers: response mean, prompt mean, last prompt token)",
             m.times["extraction"], m.tokens)  # fmt: skip
    b = Side("plain forward (logits) over the same padded batches", m.times["plain"], m.tokens)
    return Measured(
        a, b, throughput_ratio(a, b), "extraction tokens/s / plain forward tokens/s", m.sizes,
        notes="extraction includes tokenization and stops after the last read layer (no final norm and "
        "unembedding); the plain forward starts from token ids",
    )  # fmt: skip


def batched_vs_one_at_a_time(bench: Bench) -> Measured:
    m: _Extraction = bench.shared("extraction", lambda: _measure_extraction(bench))
    a = Side(f"teacher_forced_stats, batches of {bench.sizes.fwd_batch}", m.times["extraction"], m.tokens)
    b = Side("one example at a time with output_hidden_states (the persona_vectors way)",
             m.times["one_at_a_time"], m.tokens)  # fmt: skip
    return Measured(a, b, throughput_ratio(a, b), "speed-up: one-at-a-time time / batched time", m.sizes)


# ----------------------------------------------------------------------------------------------- generation
def _measure_generation(bench: Bench, compile: bool | None) -> dict[str, Any]:
    from steering import Steerer

    s = bench.sizes
    lm = bench.lm
    prompts = _texts(bench, s.gen_batch, s.gen_prompt_tokens, seed=3)
    vec = _random_vector(bench)
    mid = lm.n_layers // 2
    gates_full = _gates(bench, "input_dependent")
    gates_head = _gates(bench, "per_head")
    n = s.gen_new_tokens

    def plain() -> None:
        _generate(bench, prompts, n, compile=compile)

    def steer_one() -> None:
        with Steerer(lm, vec, layers=[mid], alpha=4.0):
            _generate(bench, prompts, n, compile=compile)

    def steer_all() -> None:
        with Steerer(lm, vec, layers="all", alpha=4.0):
            _generate(bench, prompts, n, compile=compile)

    def gated() -> None:
        with gates_full.attached(lm, alpha=-1.0):
            _generate(bench, prompts, n, compile=compile)

    def gated_head() -> None:
        with gates_head.attached(lm, alpha=-1.0):
            _generate(bench, prompts, n, compile=compile)

    with fixed_length(lm, n):
        times = bench.time(
            {
                "plain": plain,
                "steer_one": steer_one,
                "steer_all": steer_all,
                "gated": gated,
                "gated_head": gated_head,
            }
        )
    from workbench.generation import render_prompts

    rendered = render_prompts(lm.tokenizer, prompts, SYSTEM)
    enc_len = [len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in rendered]
    return {
        "times": times,
        "tokens": s.gen_batch * n,
        "sizes": {
            "batch": s.gen_batch,
            "prompt_tokens_max": max(enc_len),  # chat-formatted, system prompt included
            "new_tokens": n,
            "greedy": True,
            "compile": _compile_label(compile, bench.device),
        },
        "mid": mid,
        "gate_params": {
            "input_dependent": sum(p.numel() for p in gates_full.parameters()),
            "per_head": sum(p.numel() for p in gates_head.parameters()),
        },
    }


def generation_pair(bench: Bench, variant: str, compile: bool | None = None) -> Measured:
    m = bench.shared(f"generation:{compile}", lambda: _measure_generation(bench, compile))
    labels = {
        "steer_one": f"generate under Steerer, 1 layer ({m['mid']}), add",
        "steer_all": "generate under Steerer, all layers, add",
        "gated": "generate with input_dependent gates at attn, every layer, alpha -1 (suppressed)",
        "gated_head": "generate with per_head gates at attn, every layer, alpha -1 (suppressed)",
    }
    a = Side(labels[variant], m["times"][variant], m["tokens"])
    b = Side("plain generate", m["times"]["plain"], m["tokens"])
    extra = {}
    if variant.startswith("gated"):
        kind = "input_dependent" if variant == "gated" else "per_head"
        extra = {"gate_kind": kind, "gate_parameters": m["gate_params"][kind]}
    return Measured(a, b, throughput_ratio(a, b), "new tokens/s with / without", m["sizes"], extra)


# ----------------------------------------------------------------------------------------------- alpha sweep
def alpha_sweep(bench: Bench, compile: bool | None = None) -> Measured:
    """8 alphas as one batched call (per-row alpha tensor) vs 8 sequential calls with one float alpha."""
    from steering import Steerer

    s = bench.sizes
    lm = bench.lm
    prompts = _texts(bench, s.sweep_prompts, s.gen_prompt_tokens, seed=4)
    alphas = [float(a) for a in range(N_ALPHAS)]
    rows = [p for _ in alphas for p in prompts]
    per_row = torch.tensor([a for a in alphas for _ in prompts])  # [8 * prompts]
    vec = _random_vector(bench)
    layer = lm.n_layers // 2
    n = s.sweep_new_tokens

    def batched() -> None:
        with Steerer(lm, vec, layers=[layer], alpha=per_row):
            _generate(bench, rows, n, compile=compile)

    def sequential() -> None:
        for a in alphas:
            with Steerer(lm, vec, layers=[layer], alpha=a):
                _generate(bench, prompts, n, compile=compile)

    with fixed_length(lm, n):
        t = bench.time({"batched": batched, "sequential": sequential})
    work = len(rows) * n
    a = Side(f"one generate call, {len(rows)} rows, per-row alpha tensor", t["batched"], work)
    b = Side(f"{N_ALPHAS} generate calls of {len(prompts)} rows, one float alpha each", t["sequential"], work)
    sizes = {
        "alphas": N_ALPHAS,
        "prompts": len(prompts),
        "batch_batched": len(rows),
        "new_tokens": n,
        "compile": _compile_label(compile, bench.device),
    }
    return Measured(a, b, throughput_ratio(a, b), "speed-up: sequential time / batched time", sizes)


# ----------------------------------------------------------------------------------------------- decoding vs bandwidth
#: peak memory bandwidth in GB/s (1e9 bytes) by GPU name, from the vendors' data sheets (first match wins)
BANDWIDTH_GBS: tuple[tuple[str, float], ...] = (
    (r"H200", 4800.0),
    (r"H100.*NVL", 3900.0),
    (r"H100.*PCIe", 2000.0),
    (r"H100", 3350.0),  # SXM5 (reported as "H100 80GB HBM3")
    (r"GH200", 4000.0),
    (r"A100.*80GB.*PCIe", 1935.0),
    (r"A100.*80GB", 2039.0),
    (r"A100", 1555.0),
    (r"L40S", 864.0),
    (r"L40", 864.0),
    (r"L4\b", 300.0),
    (r"A10G", 600.0),
    (r"A10\b", 600.0),
    (r"RTX 4090", 1008.0),
    (r"RTX 3090", 936.0),
    (r"V100", 900.0),
    (r"T4\b", 320.0),
)


def table_bandwidth(name: str) -> float | None:
    for pattern, gbs in BANDWIDTH_GBS:
        if re.search(pattern, name, re.I):
            return gbs * 1e9
    return None


def measured_bandwidth(device: torch.device, nbytes: int = 1 << 30, repeats: int = 10) -> float:
    """Bytes per second of a large device-to-device copy (each copy reads and writes ``nbytes``)."""
    import time

    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        nbytes = int(min(nbytes, free // 4))
    else:
        nbytes, repeats = min(nbytes, 1 << 27), min(repeats, 3)  # a host copy is slow; 128 MiB suffices
    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    dst.copy_(src)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        dst.copy_(src)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    dt = time.perf_counter() - t0
    return 2.0 * src.numel() * 4 * repeats / dt


def weight_bytes_per_step(model: torch.nn.Module) -> int:
    """Bytes of weights one decoding step reads: every parameter, less the input embedding table when it is
    not tied to the output layer (a step gathers only ``batch`` rows of it)."""
    params = {id(p): p for p in model.parameters()}
    total = sum(p.numel() * p.element_size() for p in params.values())
    emb = model.get_input_embeddings().weight
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == emb.data_ptr()
    if not tied:
        total -= emb.numel() * emb.element_size()
    return int(total)


def decode_vs_bandwidth(bench: Bench, variant: str = "plain", compile: bool | None = None) -> Measured:
    """Decode step time at batch ``decode_batch`` vs the bound ``weight bytes / bandwidth``.

    step time = (time of ``n`` new tokens - time of 1 new token) / (n - 1): the prefill cancels out. When
    noise makes that difference non-positive, the step is bounded from above by (time of ``n`` tokens) / n
    and ``extra["step_method"]`` says which estimate was used.
    """
    from steering import Steerer

    s = bench.sizes
    lm = bench.lm
    prompts = _texts(bench, s.decode_batch, s.gen_prompt_tokens, seed=5)
    n = s.decode_new_tokens
    vec = _random_vector(bench)
    gates = _gates(bench, "input_dependent") if variant == "gated" else None

    def context() -> contextlib.AbstractContextManager[Any]:
        if variant == "steered":
            return Steerer(lm, vec, layers="all", alpha=4.0)
        if variant == "gated":
            assert gates is not None
            return gates.attached(lm, alpha=-1.0)
        if variant != "plain":
            raise WorkbenchError(f"unknown decode variant '{variant}'")
        return contextlib.nullcontext()

    def run(k: int) -> Callable[[], None]:
        def fn() -> None:
            with fixed_length(lm, k), context():
                _generate(bench, prompts, k, compile=compile)

        return fn

    t = bench.time({"n": run(n), "one": run(1)})
    full, one = Side("n", t["n"]), Side("one", t["one"])
    step = (full.median_s - one.median_s) / (n - 1)
    step_method = "difference: (time of n tokens - time of 1 token) / (n - 1)"
    if not step > 0:  # timing noise (a loaded machine, a tiny model) swamped the difference
        step = full.median_s / n
        step_method = "upper bound: time of n tokens / n (the difference was not positive under noise)"
    wbytes = weight_bytes_per_step(lm.model)
    gate_bytes = 0 if gates is None else sum(p.numel() * p.element_size() for p in gates.parameters())
    name = torch.cuda.get_device_name(bench.device) if bench.device.type == "cuda" else "cpu"
    measured = measured_bandwidth(bench.device)
    spec_bw = table_bandwidth(name) if bench.device.type == "cuda" else None
    bw = spec_bw or measured
    bound = wbytes / bw
    a = {
        "label": f"decode step, {variant}, compile {_compile_label(compile, bench.device)}",
        "median_s": float(f"{step:.6g}"),
        "times_s": [round((x - y) / (n - 1), 6) for x, y in zip(t["n"], t["one"], strict=True)],
        "work": s.decode_batch,
        "unit": "tokens",
        "per_s": round(s.decode_batch / step, 2),
    }
    b = {
        "label": "memory-bandwidth bound: weight bytes / bandwidth",
        "median_s": round(bound, 6),
        "times_s": [round(bound, 6)],
        "work": s.decode_batch,
        "unit": "tokens",
        "per_s": round(s.decode_batch / bound, 2),
    }
    extra = {
        "step_method": step_method,
        "weight_gib_per_step": round(wbytes / GIB, 3),
        "weight_bytes_per_step": wbytes,
        "gate_bytes_per_step": gate_bytes,
        "bandwidth_gbs": round(bw / 1e9, 1),
        "bandwidth_source": "data sheet for " + name if spec_bw else "measured device-to-device copy",
        "measured_copy_gbs": round(measured / 1e9, 1),
        "generate_n_s": full.median_s,
        "generate_1_s": one.median_s,
    }
    sizes = {"batch": s.decode_batch, "new_tokens": n, "compile": _compile_label(compile, bench.device)}
    return Measured(a, b, bound / step, "fraction of the bound: bound step time / measured step time",
                    sizes, extra, notes="KV-cache reads are not in the bound")  # fmt: skip


# ----------------------------------------------------------------------------------------------- training
@dataclass
class _Variant:
    plugins: list[Any] = field(default_factory=list)
    defenses: list[Any] = field(default_factory=list)
    policy_sites: set[str] = field(default_factory=set)
    reference_sites: set[str] = field(default_factory=set)
    parameters: int = 0


class TrainBench:
    """One ``Trainer`` (plain LoRA) to which every variant's component is added (``Trainer.add_component``);
    each step runs with only that variant's component active (``Trainer.activate``), so every variant trains the
    same model and LoRA weights: ``plain``, ``per_head`` / ``input_dependent`` gates, ``kl``, ``ldifs``.

    A step is the loop's own ``accumulate(step)`` + ``optimizer_step(step)`` on one micro-batch of
    ``train_batch`` sequences of exactly ``train_seq`` tokens. All variants' extra parameters sit in the one
    AdamW optimizer; parameters without a gradient in a step are skipped by AdamW and by the clipping.
    """

    VARIANTS = ("plain", "per_head", "input_dependent", "kl", "ldifs")

    def __init__(self, bench: Bench) -> None:
        from workbench.training import TrainConfig, Trainer, registered_components

        s = bench.sizes
        tok = bench.lm.tokenizer
        bench.release_lm()  # the trainer loads its own copy; keep one model in memory at a time
        folder = bench.folder("train")
        data = folder / "data.jsonl"
        with open(data, "w", encoding="utf-8") as fh:
            for i in range(max(4, 2 * s.train_batch)):
                row = {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": text_of(tok, 4, 100 + i)},
                        {"role": "assistant", "content": text_of(tok, s.train_seq + 16, 200 + i)},
                    ]
                }
                fh.write(json.dumps(row) + "\n")
        cfg = TrainConfig.from_dict(
            {
                "model": bench.spec,
                "device": str(bench.device),
                "dtype": str(bench.dtype).replace("torch.", ""),
                "data": [{"path": str(data)}],
                "optim": {
                    "batch_size": s.train_batch,
                    "grad_accum": 1,
                    "max_length": s.train_seq,
                    "max_steps": 1_000_000,
                    "warmup_steps": 0,
                    "shuffle": False,
                },
                "checkpoint_every": 0,
                "plots": False,
            },
            "bench",
        )
        self.trainer = Trainer(cfg, folder / "run", progress=False)
        self.trainer.setup()
        t = self.trainer
        self.lora_parameters = sum(p.numel() for p in t.params)
        self.variants: dict[str, _Variant] = {"plain": _Variant()}
        registry = registered_components()
        made = {
            "per_head": ("gates", {"kind": "per_head", "sites": ["attn"]}),
            "input_dependent": ("gates", {"kind": "input_dependent"}),
            "kl": ("kl", {}),
            "ldifs": ("ldifs", {}),
        }
        for name, (component, settings) in made.items():
            entry = registry[component]
            before = sum(p.numel() for p in t.params)
            comp = t.add_component(entry.build(settings), kind=entry.kind)
            policy, reference = t.sites_of(comp)
            self.variants[name] = _Variant(
                plugins=[comp] if entry.kind == "plugin" else [],
                defenses=[comp] if entry.kind == "defense" else [],
                policy_sites=policy,
                reference_sites=reference,
                parameters=sum(p.numel() for p in t.params) - before,
            )
        t.activate()  # plain LoRA until a step picks its variant
        self.step_no = 0
        idx = t.step_indices(0)
        self.tokens = sum(len(t.examples[i].ids) for i in idx)
        if any(t.examples[i].n_tokens == 0 for i in idx):
            raise WorkbenchError(
                f"train_seq={s.train_seq} leaves no assistant tokens after the chat template; use longer sequences"
            )
        self.sizes = {"batch": s.train_batch, "seq": s.train_seq, "grad_accum": 1, "lora_r": cfg.lora.r}

    def step(self, name: str) -> None:
        v, t = self.variants[name], self.trainer
        t.activate(*v.plugins, *v.defenses)
        t.accumulate(self.step_no)
        t.optimizer_step(self.step_no)
        self.step_no += 1


def _measure_training(bench: Bench) -> dict[str, Any]:
    tb: TrainBench = bench.shared("trainer", lambda: TrainBench(bench))
    times = bench.time({v: (lambda v=v: tb.step(v)) for v in TrainBench.VARIANTS})
    return {"times": times}


def lora_step_pair(bench: Bench, variant: str) -> Measured:
    tb: TrainBench = bench.shared("trainer", lambda: TrainBench(bench))
    m = bench.shared("training", lambda: _measure_training(bench))
    labels = {
        "per_head": "LoRA step + per_head gates (attn, every layer)",
        "input_dependent": "LoRA step + input_dependent gates (attn, every layer)",
        "kl": "LoRA step + kl (reference pass with the adapter disabled)",
        "ldifs": "LoRA step + ldifs (every 5th layer, reference pass)",
    }
    a = Side(labels[variant], m["times"][variant], tb.tokens)
    b = Side("plain LoRA step (accumulate + optimizer_step)", m["times"]["plain"], tb.tokens)
    extra = {"lora_parameters": tb.lora_parameters, "variant_parameters": tb.variants[variant].parameters}
    return Measured(a, b, time_ratio(a, b), "step time with / without", tb.sizes, extra)


def peak_memory_kl(bench: Bench) -> Measured:
    tb: TrainBench = bench.shared("trainer", lambda: TrainBench(bench))
    probe = bench.memory
    if not probe.available:
        raise WorkbenchError(f"peak memory is not measurable here: {probe.reason}")
    for v in ("plain", "kl"):  # optimizer state and caches exist before measuring
        tb.step(v)
    got: dict[str, list[dict[str, float]]] = {"plain": [], "kl": []}
    for r in range(2):
        for v in ("plain", "kl") if r % 2 == 0 else ("kl", "plain"):
            got[v].append(probe.measure(lambda v=v: tb.step(v)))

    def side(v: str, label: str) -> dict[str, Any]:
        peak = max(x["peak_gib"] for x in got[v])
        return {
            "label": label,
            "peak_gib": peak,
            "peaks_gib": [x["peak_gib"] for x in got[v]],
            "before_gib": got[v][0]["before_gib"],
            "step_delta_gib": max(x["delta_gib"] for x in got[v]),
            "unit": "GiB",
        }

    a, b = side("kl", "LoRA step + kl"), side("plain", "plain LoRA step")
    return Measured(
        a, b, a["peak_gib"] / b["peak_gib"], "peak memory with / without (whole process or device)",
        tb.sizes, {"method": probe.method},
        notes="peaks include the weights and everything else alive; step_delta_gib is the step's own rise",
    )  # fmt: skip


# ----------------------------------------------------------------------------------------------- Interleaving+
def _make_adapters(bench: Bench) -> list[str]:
    """K random LoRA adapters (r 32, every attention and MLP linear) saved as PEFT folders."""
    from peft import LoraConfig, get_peft_model

    from workbench.training._lora import compact_targets, resolve_target_modules

    lm = bench.lm
    targets = compact_targets(lm.model, resolve_target_modules(lm, "all"))
    paths = []
    for k in range(N_ADAPTERS):
        torch.manual_seed(100 + k)
        cfg = LoraConfig(r=32, lora_alpha=64, use_rslora=True, target_modules=targets,
                         init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
        pm = get_peft_model(lm.model, cfg)
        try:
            path = bench.folder(f"adapter{k}")
            pm.save_pretrained(str(path))
            paths.append(str(path))
        finally:
            pm.unload()
    return paths


def interleave_plus_scoring(bench: Bench) -> Measured:
    from workbench.scoring import build_teacher_forced, pad_right
    from workbench.training._data import split_prompt_answer
    from workbench.training.defenses.interleave_plus import InterleavePlusDefense

    s = bench.sizes
    lm = bench.lm
    adapters = bench.shared("adapters", lambda: _make_adapters(bench))
    questions = _texts(bench, s.pool_rows, s.prompt_tokens, seed=6)
    answers = _texts(bench, s.pool_rows, s.answer_tokens, seed=7)
    pool = [
        {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": q},
                {"role": "assistant", "content": a},
            ]
        }
        for q, a in zip(questions, answers, strict=True)
    ]
    defense = InterleavePlusDefense(
        InterleavePlusDefense.Settings(adapters=adapters, batch_size=s.pool_batch)
    )
    optim = SimpleNamespace(max_length=1 << 30)

    def scoring() -> None:
        ctx = SimpleNamespace(lm=lm, cache_dir=bench.folder("ilp-cache"), config=SimpleNamespace(optim=optim))
        defense.score_pool(ctx, pool)  # a fresh cache folder: every call computes all K + 1 passes

    prompts, ans = zip(*(split_prompt_answer(r) for r in pool), strict=True)
    examples = build_teacher_forced(lm.tokenizer, list(prompts), list(ans))
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i][0]))
    pad = lm.tokenizer.pad_token_id
    batches = [
        pad_right([examples[i][0] for i in order[j : j + s.pool_batch]], pad, lm.device)
        for j in range(0, len(order), s.pool_batch)
    ]
    tokens = sum(len(e) for e, _ in examples)
    passes = N_ADAPTERS + 1

    @torch.no_grad()
    def plain() -> None:
        for _ in range(passes):
            for ids, mask in batches:
                lm.model(input_ids=ids, attention_mask=mask, use_cache=False)

    t = bench.time({"scoring": scoring, "plain": plain})
    a = Side(f"Interleaving+ score_pool: aligned + {N_ADAPTERS} adapters (load, score, unload)",
             t["scoring"], tokens * passes)  # fmt: skip
    b = Side(f"{passes} plain forward passes over the same tokens", t["plain"], tokens * passes)
    # how much of the scoring time is adapter loading (amortised over larger pools)
    from peft import PeftModel

    def load_unload() -> None:
        PeftModel.from_pretrained(lm.model, adapters[0], is_trainable=False).unload()

    load_t = bench.time({"load": load_unload}, repeats=2, warmup=0)["load"]
    sizes = {
        "pool_rows": s.pool_rows,
        "batch": s.pool_batch,
        "tokens_per_pass": tokens,
        "adapters": N_ADAPTERS,
    }
    load_s = min(load_t)
    passes_s = max(1e-9, a.median_s - N_ADAPTERS * load_s)
    extra = {
        "adapter_load_unload_s": round(load_s, 4),
        "model_passes": passes,
        # the per-pass cost alone: what the ratio tends to as the pool grows and loading is amortised
        "ratio_excluding_adapter_loading": round(b.median_s / passes_s, 4),
    }
    return Measured(a, b, throughput_ratio(a, b), "tokens/s per model pass, scoring / plain", sizes, extra)


# ----------------------------------------------------------------------------------------------- registration
def monitor_overhead_row(bench: Bench, every: int = 20) -> Measured:
    """LoRA step with the EM monitor (one pass every ``every`` steps, amortised) vs a plain LoRA step.

    ``probes.monitor.monitor_overhead`` trains a few steps with the monitor measuring after each, on the
    bench's model shape, at the training defaults (batch 2 x 8, 256 tokens) and the monitor's default probe
    sets; A = step + pass / every, B = step (medians).
    """
    from probes.monitor import monitor_overhead

    steps = 2 if bench.quick else 4
    r = monitor_overhead(bench.spec, every=every, steps=steps, device=str(bench.device),
                         dtype=str(bench.dtype).replace("torch.", ""))  # fmt: skip
    step, per_pass = float(r["seconds_per_step"]), float(r["seconds_per_pass"])
    a = {"label": f"LoRA step + monitor (1 pass / {every} steps)", "median_s": round(step + per_pass / every, 6),
         "work": 1, "unit": "steps"}  # fmt: skip
    b = {"label": "plain LoRA step", "median_s": round(step, 6), "work": 1, "unit": "steps"}
    return Measured(a, b, 1.0 + float(r["share"]), "time ratio: (step + pass / every) / step",
                    {"every": every, "steps": steps}, {"seconds_per_pass": per_pass, "share": r["share"]},
                    notes="passes and steps are timed in one run (not interleaved pairs)")  # fmt: skip


def _register() -> None:
    rows = [
        RowSpec("extraction_vs_forward",
                "activation extraction (all layers, response mean) vs plain forward",
                extraction_vs_forward, target=at_least(0.8, ">= 0.8x plain throughput")),
        RowSpec("extraction_batched_vs_one_at_a_time",
                "batched extraction vs one example at a time (the persona_vectors way)",
                batched_vs_one_at_a_time,
                target={"cpu": at_least(5.0, ">= 5x faster"),
                        "cuda": at_least(2.5, ">= 2.5x faster at 256-token examples")}),
        RowSpec("steered_generation_1_layer", "steered generation, 1 layer, vs plain generation",
                generation_pair, {"variant": "steer_one"}, at_least(0.95, ">= 0.95x throughput")),
        RowSpec("steered_generation_all_layers", "steered generation, all layers, vs plain generation",
                generation_pair, {"variant": "steer_all"}, at_least(0.9, ">= 0.9x throughput")),
        RowSpec("gated_generation_suppressed",
                "gated generation (input_dependent, suppressed) vs plain generation",
                generation_pair, {"variant": "gated"}, at_least(0.95, ">= 0.95x throughput")),
        RowSpec("gated_generation_per_head_suppressed",
                "gated generation (per_head, suppressed) vs plain generation",
                generation_pair, {"variant": "gated_head"}, at_least(0.95, ">= 0.95x throughput")),
        RowSpec("alpha_sweep_batched_vs_sequential",
                "sweep of 8 alphas as one batched call vs 8 sequential calls",
                alpha_sweep, target={"cpu": at_least(2.0, ">= 2x faster"), "cuda": at_least(4.0, ">= 4x faster")}),
        RowSpec("decode_vs_bandwidth", "decode at batch 16 vs the memory-bandwidth bound",
                decode_vs_bandwidth, {"variant": "plain"}, devices=("cuda",)),
        RowSpec("decode_vs_bandwidth_steered", "steered decode step (all layers) vs the memory-bandwidth bound",
                decode_vs_bandwidth, {"variant": "steered"}, devices=("cuda",)),
        RowSpec("decode_vs_bandwidth_gated", "gated decode step (suppressed) vs the memory-bandwidth bound",
                decode_vs_bandwidth, {"variant": "gated"}, devices=("cuda",)),
        RowSpec("interleave_plus_scoring",
                "Interleaving+ scoring (K = 3 adapters) vs plain forward over the same tokens",
                interleave_plus_scoring, target=at_least(0.8, ">= 0.8x throughput per model pass")),
        RowSpec("lora_step_per_head_gates", "LoRA step + per_head gates vs plain LoRA step",
                lora_step_pair, {"variant": "per_head"}, at_most(1.05, "<= 1.05x time")),
        RowSpec("lora_step_input_dependent_gates", "LoRA step + input_dependent gates vs plain LoRA step",
                lora_step_pair, {"variant": "input_dependent"}),
        RowSpec("lora_step_kl", "LoRA step + kl vs plain LoRA step",
                lora_step_pair, {"variant": "kl"}, at_most(1.4, "<= 1.4x time")),
        RowSpec("lora_step_ldifs", "LoRA step + ldifs vs plain LoRA step",
                lora_step_pair, {"variant": "ldifs"}, at_most(1.4, "<= 1.4x time")),
        RowSpec("lora_step_monitor", "LoRA step + EM monitor (every 20 steps) vs plain LoRA step",
                monitor_overhead_row, target=at_most(1.1, "<= 1.1x time (monitor <= 10%)"),
                skip_quick_on=("cpu",)),
        RowSpec("peak_memory_kl", "peak memory of a LoRA step with kl vs plain",
                peak_memory_kl, target=at_most(1.1, "<= 1.1x")),
        RowSpec("decode_vs_bandwidth_eager", "decode at batch 16, eager (no compile), vs the bound",
                decode_vs_bandwidth, {"variant": "plain", "compile": False}, devices=("cuda",)),
        RowSpec("steered_generation_all_layers_compiled",
                "steered generation, all layers, compiled vs plain compiled",
                generation_pair, {"variant": "steer_all", "compile": True}, at_least(0.9, ">= 0.9x throughput"),
                devices=("cuda",)),
    ]  # fmt: skip
    for r in rows:
        register_row(r, overwrite=True)


_register()

__all__ = [
    "BANDWIDTH_GBS",
    "TrainBench",
    "decode_vs_bandwidth",
    "measured_bandwidth",
    "table_bandwidth",
    "text_of",
    "weight_bytes_per_step",
]
