"""Streamlit glue: the page context, the lazily loaded model, and cached calls into the packages.

Every model computation here is one call into a package (``workbench.generation``, ``steering``,
``probes``, ``gating``), cached by its arguments and the artifact's modification time. The model is loaded
once per (spec, adapter) with ``st.cache_resource`` and used under a lock, because hooks attached by one
session must not leak into another session's forward pass.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from . import _runs

CTX_KEY = "wb_context"
HINT_KEY = "wb_hint"


# ---------------------------------------------------------------------------------------- plain text
def code(text: object) -> str:
    """``text`` as a Markdown inline code span: shown literally wherever Streamlit renders Markdown.

    For every user-controlled string (folder names, model specs, config values, file contents, error
    messages quoting them) put into a caption, message, heading, metric or label: inside a code span no
    link, autolink, emphasis or directive is parsed. The fence is one backtick longer than the longest run
    of backticks in ``text``; line breaks become spaces.
    """
    body = " ".join(str(text).splitlines()) or " "
    fence = "`" * (max((len(run) for run in re.findall(r"`+", body)), default=0) + 1)
    if body.startswith("`") or body.endswith("`") or (body.startswith(" ") and body.endswith(" ")):
        body = f" {body} "
    return f"{fence}{body}{fence}"


_PLAIN = re.compile(r"[A-Za-z0-9 .,+=/?%()-]*")


def md(text: object) -> str:
    """``text`` unchanged when it holds no Markdown syntax (only letters, digits, spaces and
    ``. , + = / ? % ( ) -``, and no ``www.``), else :func:`code`: for short values such as metric values."""
    body = str(text)
    return body if _PLAIN.fullmatch(body) and "www." not in body.lower() else code(body)


@dataclass
class Context:
    """What the sidebar chose: the run root, the directory being explored, its artifacts and the model.

    ``spec`` is the model spec to load (already checked by ``_runs.check_model_spec``), or None when the
    requested one (``requested``) was refused; ``spec_error`` says why.
    """

    root: Path
    scope: Path
    found: _runs.Found
    spec: str | None
    requested: str = ""
    spec_error: str = ""

    def rel(self, path: Path) -> str:
        return _runs.rel(self.root, path)

    def file(self, path: Path) -> Path | None:
        """``path`` resolved when it is a file inside the run root (links leaving it give None)."""
        return _runs.inside_file(self.root, path)

    def read_json(self, path: Path) -> dict[str, Any] | None:
        return _runs.read_json(path, self.root)

    def read_jsonl(self, path: Path) -> list[dict[str, Any]]:
        return _runs.read_jsonl(path, self.root)


def context() -> Context | None:
    """The context set by ``explorer.py`` for this run (None if the sidebar rejected the choice)."""
    return st.session_state.get(CTX_KEY)


def require_context() -> Context:
    ctx = context()
    if ctx is None:
        st.info(
            st.session_state.get(HINT_KEY) or "Choose a run directory inside the run root in the sidebar."
        )
        st.stop()
    return ctx


def model_ready(ctx: Context) -> bool:
    """True when the context has a model the explorer may load; else the refusal is shown here."""
    if ctx.spec is None:
        st.error(f"No model loaded: {code(ctx.spec_error or 'no model spec')}")
        return False
    return True


def pick_path(
    ctx: Context,
    label: str,
    paths: list[Path],
    key: str,
    *,
    none_label: str | None = None,
    default: Path | None = None,
    where: Any = None,
) -> Path | None:
    """A selectbox over paths shown relative to the root (string options, so tests can pick them too)."""
    names = ([none_label] if none_label else []) + [ctx.rel(p) for p in paths]  # options are plain text
    by_name = dict(zip([ctx.rel(p) for p in paths], paths, strict=True))
    index = names.index(ctx.rel(default)) if default is not None and ctx.rel(default) in names else 0
    name = (where or st).selectbox(label, names, index=index, key=key)
    return by_name.get(name)


@st.cache_data(ttl=5, show_spinner=False)
def scan(scope: str, root: str) -> _runs.Found:
    """Artifacts under ``scope`` inside ``root`` (rescanned at most every few seconds)."""
    return _runs.scan(Path(scope), Path(root))


@st.cache_data(ttl=5, show_spinner=False)
def run_dirs(root: str) -> list[str]:
    return [_runs.rel(Path(root), p) for p in _runs.list_run_dirs(Path(root))]


@contextlib.contextmanager
def guard(what: str) -> Iterator[None]:
    """Show a failure as one clear message on the page instead of a traceback."""
    try:
        yield
    except Exception as exc:  # the page goes on; the user sees what failed and why
        st.error(f"{what} failed: {code(exc)}")


def ordered(vectors: dict[str, Any]) -> dict[str, Any]:
    """Statistics in the package's order (``response_avg`` first), whatever order the file stores."""
    return {s: vectors[s] for s in (*_runs.STATISTICS, *sorted(vectors)) if s in vectors}


# ---------------------------------------------------------------------------------------- the model
@st.cache_resource(max_entries=2, show_spinner=False)
def _model(spec: str, adapter: str | None) -> tuple[Any, threading.Lock]:
    from workbench.cli_common import load_model_quietly

    lm = load_model_quietly(spec)
    if adapter:
        from workbench.adapters import apply_adapter

        lm = apply_adapter(lm, adapter)
    return lm, threading.Lock()


@contextlib.contextmanager
def model(spec: str, adapter: str | None = None) -> Iterator[Any]:
    """The cached model, held under its lock while the ``with`` block runs."""
    lm, lock = _model(spec, adapter)
    with lock:
        yield lm


# ---------------------------------------------------------------------------------------- generation
def _generate_rows(lm: Any, prompt: str, n: int, max_new_tokens: int, system: str | None) -> list[str]:
    """The same prompt ``n`` times in one batched greedy call (one coefficient per row is set by the caller)."""
    from workbench.generation import generate

    return generate(
        lm, [prompt] * n, max_new_tokens=max_new_tokens, temperature=0.0, system=system, batch_size=n
    )


@st.cache_data(max_entries=256, show_spinner=False)
def steered_answers(
    spec: str,
    adapter: str | None,
    vector: str,
    vector_mtime: float,
    statistic: str,
    layer: int,
    alphas: tuple[float, ...],
    positions: str,
    normalize: bool,
    prompt: str,
    max_new_tokens: int,
    system: str | None,
) -> list[str]:
    """Greedy answers under ``steering.Steerer`` at one layer, one per coefficient, in one batched call.

    Row ``i`` is steered with ``alphas[i]`` (a per-row coefficient tensor); alpha 0 is the base model.
    ``vector_mtime`` keys the cache.
    """
    import torch

    from steering import Steerer, load_vector

    with model(spec, adapter) as lm:
        vec = load_vector(vector, statistic, lm)
        coef = torch.tensor([float(a) for a in alphas])
        with Steerer(lm, vec, [layer], coef, positions=positions, normalize=normalize):
            return _generate_rows(lm, prompt, len(alphas), max_new_tokens, system)


@st.cache_data(max_entries=128, show_spinner=False)
def token_projections(
    spec: str,
    adapter: str | None,
    vector: str,
    vector_mtime: float,
    statistic: str,
    layer: int,
    prompt: str,
    answers: tuple[str, ...],
    system: str | None,
) -> list[tuple[list[str], list[float]]]:
    """Per answer: its tokens and each token's projection (``probes.token_projections``, unsteered read)."""
    from probes import token_projections as per_token
    from steering import load_vector
    from workbench.scoring import build_teacher_forced

    with model(spec, adapter) as lm:
        vec = load_vector(vector, statistic, lm)
        values = per_token(lm, vec, layer, [prompt] * len(answers), list(answers), system=system)
        examples = build_teacher_forced(lm.tokenizer, [prompt] * len(answers), list(answers), system)
        tok = lm.tokenizer
    out = []
    for (ids, start), v in zip(examples, values, strict=True):
        labels = [tok.decode([t]) for t in ids[start:]]
        out.append((labels, [float(x) for x in v]))
    return out


@st.cache_data(max_entries=32, show_spinner=False)
def row_projections(
    spec: str,
    vector: str,
    vector_mtime: float,
    statistic: str,
    layer: int,
    rows_file: str,
    rows_mtime: float,
    kept_only: bool,
) -> list[dict[str, Any]]:
    """Mean answer projection of every extraction row (``probes.answer_projections``, base model)."""
    from probes import answer_projections
    from steering import load_vector

    rows = [r for r in _runs.read_jsonl(Path(rows_file)) if "answer" in r and "polarity" in r]
    if kept_only:
        rows = [r for r in rows if r.get("kept", True)]
    if not rows:
        return []
    prompts = []
    for r in rows:
        msgs = [{"role": "system", "content": r["system"]}] if r.get("system") else []
        prompts.append([*msgs, {"role": "user", "content": str(r.get("question", ""))}])
    with model(spec, None) as lm:
        vec = load_vector(vector, statistic, lm)
        values = answer_projections(lm, vec, layer, prompts, [str(r["answer"]) for r in rows])
    return [
        {"polarity": r["polarity"], "kept": bool(r.get("kept", True)), "question": r.get("question", ""),
         "projection": float(v)}
        for r, v in zip(rows, values.tolist(), strict=True)
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------- gates
@st.cache_data(max_entries=256, show_spinner=False)
def gated_answers(
    spec: str,
    adapter: str | None,
    gates: str,
    gates_mtime: float,
    alphas: tuple[float, ...],
    prompt: str,
    max_new_tokens: int,
    system: str | None,
) -> list[str]:
    """Greedy answers with the gates attached, row ``i`` at ``alphas[i]`` (0 = gates off), in one call."""
    import torch

    from gating import GateSet

    with model(spec, adapter) as lm:
        gs = GateSet.load(gates, lm)
        with gs.attached(lm, alpha=torch.tensor([float(a) for a in alphas])):
            return _generate_rows(lm, prompt, len(alphas), max_new_tokens, system)


@st.cache_data(max_entries=16, show_spinner=False)
def gate_analysis(
    spec: str, adapter: str | None, gates: str, gates_mtime: float, prompts: tuple[str, ...]
) -> dict[str, Any]:
    """``gating.analyze_gates`` of a gates file, as the JSON ``GateAnalysis.save`` writes."""
    from gating import GateSet, analyze_gates

    with model(spec, adapter) as lm:
        gs = GateSet.load(gates, lm)
        return analyze_gates(gs, lm, list(prompts)).to_json()


def gate_heatmap(analysis: dict[str, Any]) -> Any:
    """The package's own heatmap (``GateAnalysis.heatmap``) rebuilt from an ``analysis.json``."""
    import torch

    from gating import GateAnalysis

    from ._charts import plain

    ga = GateAnalysis(
        kind=plain(analysis.get("gate_kind", "?")),
        layers=[int(l) for l in analysis["layers"]],
        n_heads=int(analysis.get("n_heads", 1)),
        per_channel={s: torch.tensor(v, dtype=torch.float32) for s, v in analysis["per_channel"].items()},
        mean_g={s: torch.tensor(v, dtype=torch.float32) for s, v in analysis.get("mean_g", {}).items()},
        n_tokens=int(analysis.get("n_tokens", 0)),
    )
    fig = ga.heatmap()
    fig.update_xaxes(dtick=1 if ga.n_heads <= 32 else None)
    fig.update_yaxes(dtick=1 if len(ga.layers) <= 40 else None)
    return fig
