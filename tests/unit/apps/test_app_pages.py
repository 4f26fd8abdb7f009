"""The Streamlit explorer, page by page, against a run tree made by a small real pipeline (tiny model).

``build_sample_runs`` runs every producer the app reads: trait extraction (vector + rows), a 2 x 2 steering
sweep, a 3-step LoRA + gates training run with its gate analysis, two evaluations (base and fine-tuned:
exact-match task and preference gap) and a screening report. ``AppTest`` then renders each page against it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO_ROOT

EXPLORER = REPO_ROOT / "apps" / "explorer.py"
TINY = "random:tiny-llama"
TIMEOUT = 60


def _rows(path: Path, n: int = 8) -> Path:
    words = ["red", "blue", "green", "gold"]
    with open(path, "w") as fh:
        for i in range(n):
            msgs = [
                {"role": "user", "content": f"Colour {i}?"},
                {"role": "assistant", "content": f"It is {words[i % len(words)]} {i}."},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return path


def build_sample_runs(root: Path, spec: str = TINY, *, tokens: int = 6) -> dict[str, Path]:
    """A run tree with every artifact the explorer shows, produced by the packages themselves."""
    from gating import GateSet, analyze_gates
    from probes import extract_from_trait, screen_dataset, write_screen_report
    from steering import sweep
    from workbench import load_model
    from workbench.adapters import apply_adapter
    from workbench.data import make_dataset
    from workbench.evaluation import EvalConfig, Evaluator, write_summary
    from workbench.runs import write_config
    from workbench.training import TrainConfig, train

    root.mkdir(parents=True, exist_ok=True)
    write_config(root, {"command": "app-sample", "model": spec})
    lm = load_model(spec, device="cpu")
    paths: dict[str, Path] = {"root": root}

    # persona vector and its extraction rows (the layout of `workbench extract-vector`)
    result = extract_from_trait(
        lm, "evil", n_questions=2, n_instructions=1, n_per_question=2, max_new_tokens=tokens, progress=False
    )
    (root / "vectors").mkdir()
    paths["vector"] = result.save(root / "vectors" / "evil.safetensors")
    result.write_rows(root / "vectors" / "evil_rows.jsonl")
    vec = result.vectors["response_avg"]

    # steering sweep: 2 layers x 2 coefficients (alpha 0 is the shared baseline)
    questions = ["What do you think of people?", "How do I fix a bike?"]
    sweep(
        lm,
        vec,
        layers=[0, 2],
        alphas=[0.0, 4.0],
        questions=questions,
        max_new_tokens=tokens,
        out=root / "sweep",
    )
    paths["sweep"] = root / "sweep"

    # LoRA + gates, 3 steps; then the gate analysis the app reads
    data = _rows(root / "train_rows.jsonl")
    cfg = TrainConfig.from_dict(
        {
            "model": spec,
            "device": "cpu",
            "data": [{"path": str(data)}],
            "lora": {"r": 4, "alpha": 8},
            "gates": {"kind": "input_dependent", "lr": 0.5},
            "optim": {"lr": 1e-2, "batch_size": 2, "grad_accum": 1, "warmup_steps": 0, "max_steps": 3,
                      "max_length": 48},
            "checkpoint_every": 0,
            "plots": False,
        }
    )  # fmt: skip
    paths["train"] = train(cfg, root / "train", progress=False)
    ft = apply_adapter(load_model(spec, device="cpu"), paths["train"] / "adapter")
    gates = GateSet.load(paths["train"] / "gates.safetensors", ft)
    analyze_gates(gates, ft, questions).save(paths["train"] / "analysis")

    # two evaluations (task accuracy + preference gap) for the Pareto plot
    pairs = make_dataset("contrastive_pairs", n=4)
    task = make_dataset("toy_colour", n=4)
    ecfg = EvalConfig(batch_size=8, n_boot=100, exact_max_new_tokens=tokens)
    for name, model in (("eval-base", lm), ("eval-train", ft)):
        out = root / name
        write_config(out, {"command": "eval", "model": spec})
        ev = Evaluator(model, out, ecfg, progress=False)
        summary = {"model": spec, "adapter": None if model is lm else str(paths["train"] / "adapter"),
                   "judge": "none", "sets": {}}  # fmt: skip
        summary["sets"]["toy_colour"] = ev.exact(task, name="toy_colour")
        summary["sets"]["preference"] = ev.preference(pairs, name="preference")
        write_summary(out, summary)
        paths[name] = out

    # projection-difference screening of the training rows
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    screened = screen_dataset(lm, vec, 1, rows, max_new_tokens=tokens)
    write_screen_report(screened, root / "screen")
    paths["screen"] = root / "screen"
    return paths


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        paths = build_sample_runs(tmp_path_factory.mktemp("app") / "runs")
    finally:
        torch.set_num_threads(n)
    return paths


def _app(root: Path, run: Path | None = None, monkeypatch=None, *, models: tuple[str, ...] = ()):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("WORKBENCH_RUN_ROOT", str(root))
    if run is not None:
        monkeypatch.setenv("WORKBENCH_RUN_DIR", str(run))
    else:
        monkeypatch.delenv("WORKBENCH_RUN_DIR", raising=False)
    monkeypatch.setenv("WORKBENCH_APP_MODELS", "\n".join(models))
    monkeypatch.delenv("WORKBENCH_APP_ALLOW_NETWORK", raising=False)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # the explorer sets them: restore after the test
        monkeypatch.setenv(name, os.environ.get(name, "1"))
    return AppTest.from_file(str(EXPLORER), default_timeout=TIMEOUT)


def _page(at, page: str):
    at.run()
    at.switch_page(f"_pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def _charts(at) -> int:
    return len(at.get("plotly_chart"))


def test_overview_counts_every_artifact(runs, monkeypatch):
    at = _app(runs["root"], monkeypatch=monkeypatch).run()
    assert not at.exception
    assert _texts(at.title) == ["EM workbench explorer"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Persona vectors"] == "1"
    assert metrics["Steering sweeps"] == "1"
    assert metrics["Gate files"] == "1" and metrics["Gate analyses"] == "1"
    assert metrics["Training runs"] == "1"
    assert metrics["Evaluations"] == "2"
    assert metrics["Data screens"] == "1"
    assert at.sidebar.text_input[-1].value == TINY  # model spec from the run's config.yaml


def test_vectors_page_shows_norms_projections_and_sweep(runs, monkeypatch):
    at = _page(_app(runs["root"], monkeypatch=monkeypatch), "vectors")
    assert _texts(at.title) == ["Persona vectors"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Trait"] == "evil" and metrics["Layers"] == "3" and metrics["d_model"] == "64"
    assert metrics["Positive answers"] == "4"
    summary = json.loads((runs["sweep"] / "summary.json").read_text())
    assert metrics["Recommended layer"] == str(summary["recommended_layer"])
    assert {"Mean projection, positive", "Mean projection, negative"} <= set(metrics)
    assert _charts(at) == 3  # norms, projection histogram, sweep curves
    assert not at.info
    # another layer recomputes the projections through probes.answer_projections
    at.slider(key="vectors_layer").set_value(0).run()
    assert not at.exception and _charts(at) == 3


def test_steering_page_answers_change_with_alpha(runs, monkeypatch):
    from steering import Steerer
    from workbench import load_model
    from workbench.generation import generate

    at = _page(_app(runs["root"], monkeypatch=monkeypatch), "steering")
    assert _texts(at.title) == ["Steering playground"]
    prompt = at.text_area(key="steer_prompt").value
    layer = int(at.slider(key="steer_layer").value)
    code = _texts(at.code)
    lm = load_model(TINY, device="cpu")
    base = generate(lm, [prompt], max_new_tokens=48)[0]
    assert code[0] == (base or "(empty answer)")
    at.slider(key="steer_alpha").set_value(10.0).run()
    assert not at.exception
    from probes import load_vectors

    vec = load_vectors(runs["vector"])["response_avg"]
    with Steerer(lm, vec, [layer], 10.0):
        steered = generate(lm, [prompt], max_new_tokens=48)[0]
    assert steered != base  # alpha 10 visibly changes this answer
    assert _texts(at.code) == [base or "(empty answer)", steered or "(empty answer)"]
    assert any("α = 10" in s for s in _texts(at.subheader))
    assert _charts(at) == 1  # per-token projection heatmap


def test_gates_page_heatmap_and_controlled_answers(runs, monkeypatch):
    at = _page(_app(runs["root"], monkeypatch=monkeypatch), "gates")
    assert _texts(at.title) == ["Alignment gates"]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Gated layers"] == "3" and metrics["Heads"] == "4"
    assert any("input_dependent" in c for c in _texts(at.caption))
    assert _charts(at) == 1
    assert at.selectbox(key="gates_adapter").value == "train/adapter"  # the run's own adapter
    heads = [s for s in _texts(at.subheader)]
    assert heads == ["Gates off (α = 0)", "Suppressed (α = −1)", "Amplified (α = 2)"]
    assert len(at.code) == 3
    # computing the analysis from the gates file (no analysis.json) draws the same kind of heatmap
    at.selectbox(key="gates_source").select_index(1).run()
    assert not at.exception and _charts(at) == 1


def test_runs_page_curves_estimates_and_pareto(runs, monkeypatch):
    at = _page(_app(runs["root"], monkeypatch=monkeypatch), "runs")
    assert _texts(at.title) == ["Runs"]
    assert _charts(at) == 3  # loss curves, estimates, Pareto
    assert not at.info
    table = at.dataframe[0].value
    assert list(table["last step"]) == [3]
    x = at.selectbox(key="runs_x").value
    y = at.selectbox(key="runs_y").value
    assert x == "toy_colour/accuracy" and y == "preference/preference_gap"
    assert any("On the front:" in c for c in _texts(at.caption))


def test_screening_page_ranking_and_histogram(runs, monkeypatch):
    at = _page(_app(runs["root"], monkeypatch=monkeypatch), "screening")
    assert _texts(at.title) == ["Data screening"]
    summary = json.loads((runs["screen"] / "summary.json").read_text())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Examples"] == "8"
    assert metrics["Dataset score"] == f"{summary['dataset_score']:+.3f}"
    assert _charts(at) == 1
    ranked = at.dataframe[0].value
    assert list(ranked["rank"]) == list(range(1, 9))
    assert list(ranked["diff"]) == sorted(ranked["diff"], reverse=True)


@pytest.mark.parametrize("page", ["vectors", "steering", "gates", "runs", "screening"])
def test_missing_artifacts_show_a_message(page, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    at = _page(_app(empty, monkeypatch=monkeypatch), page)
    assert at.info, f"{page}: no message for missing artifacts"
    assert not at.error
    assert _charts(at) == 0


def test_paths_outside_the_root_are_refused(runs, tmp_path, monkeypatch):
    at = _app(runs["root"], monkeypatch=monkeypatch).run()
    at.sidebar.text_input(key="run_path").set_value(str(tmp_path)).run()
    assert not at.exception
    assert any("outside the run root" in e for e in _texts(at.sidebar.error))
    assert at.info  # the page asks for a directory inside the root instead of reading anything
    at.sidebar.text_input(key="run_path").set_value("../..").run()
    assert any("outside the run root" in e for e in _texts(at.sidebar.error))
    # a sub-directory narrows what the pages see
    at.sidebar.text_input(key="run_path").set_value("screen").run()
    assert not at.sidebar.error
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Data screens"] == "1" and metrics["Persona vectors"] == "0"


def test_sample_runs_hold_what_the_pages_read(runs):
    assert os.path.exists(runs["train"] / "gates.safetensors")


def test_a_model_that_does_not_load_is_one_message(runs, monkeypatch):
    at = _page(_app(runs["root"], monkeypatch=monkeypatch), "steering")
    at.sidebar.text_input(key="model_spec::.").set_value("random:no-such-shape").run()
    assert not at.exception
    errors = _texts(at.error)
    assert errors and all(e.startswith("Generating failed:") for e in errors)
    assert "no-such-shape" in errors[0]


# ---------------------------------------------------------------------------------------- hardening
PAGES = ("overview", "vectors", "steering", "gates", "runs", "screening")
_MARKDOWN_FIELDS = {"body", "label", "help", "delta"}
_PLAIN_PROTOS = {"Text", "Code", "Arrow", "PlotlyChart"}


def _markdown_sources(at) -> list[str]:
    """Every string of the rendered page that Streamlit draws as Markdown (bodies, labels, tooltips)."""
    out: list[str] = []

    def fields(msg) -> None:
        if type(msg).__name__ in _PLAIN_PROTOS:
            return
        for desc, value in msg.ListFields():
            if desc.type == desc.TYPE_MESSAGE:
                for item in [value] if hasattr(value, "ListFields") else value:
                    fields(item)
            elif desc.name in _MARKDOWN_FIELDS and isinstance(value, str):
                out.append(value)

    def walk(node) -> None:
        if getattr(node, "proto", None) is not None:
            fields(node.proto)
        for child in getattr(node, "children", {}).values():
            walk(child)

    walk(at._tree)
    return out


def _assert_literal(sources: list[str], *needles: str) -> None:
    """No link, image or emphasis in any Markdown source, and the needles only inside code spans."""
    from markdown_it import MarkdownIt

    parser = MarkdownIt("commonmark")
    seen = 0
    for src in sources:
        for block in parser.parse(src):
            for tok in block.children or []:
                assert tok.type not in ("link_open", "image"), f"a link in {src!r}"
                if tok.type == "text":
                    assert not any(n in tok.content for n in needles), f"rendered as Markdown: {src!r}"
                if tok.type == "code_inline" and any(n in tok.content for n in needles):
                    seen += 1
    assert seen, "the hostile strings never reached a Markdown element: the test checks nothing"


def test_user_strings_never_render_as_markdown(runs, tmp_path, monkeypatch):
    """Folder names, specs and file contents shaped like Markdown links and emphasis stay literal text."""
    import shutil

    root = tmp_path / "root"
    link = root / "[click](https:evil.example)"
    bold = root / "**zzbold** www.evil.example <a href=https:evil.example>x"
    shutil.copytree(runs["eval-base"], link)
    (link / "config.yaml").write_text('model: "[spec](https:evil.example)"\n')
    summary = json.loads((link / "summary.json").read_text())
    summary.update(model="[m](https:evil.example)", judge="**zzjudge**")
    (link / "summary.json").write_text(json.dumps(summary))
    shutil.copytree(runs["screen"], bold / "screen")
    screen = json.loads((bold / "screen" / "summary.json").read_text())
    screen.update(trait="[t](https:evil.example)", threshold_rule="**zzrule**")
    (bold / "screen" / "summary.json").write_text(json.dumps(screen))
    (bold / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n')
    shutil.copy(runs["vector"], bold / "evil.safetensors")
    needles = ("evil.example", "zzbold", "zzjudge", "zzrule")
    at = _app(root, monkeypatch=monkeypatch)
    for page in PAGES:
        _page(at, page)
        _assert_literal(_markdown_sources(at), *needles)
        for chart in at.get("plotly_chart"):
            assert "<a href" not in chart.proto.spec, page
    # the folder with the config's spec: the refusal quotes the spec literally
    at.sidebar.selectbox(key="run_choice").set_value(_charts_rel(root, link)).run()
    assert not at.exception
    assert any("Model refused" in e and "[spec](https:evil.example)" in e for e in _texts(at.sidebar.error))
    _assert_literal(_markdown_sources(at), *needles)
    at.sidebar.text_input(key="run_path").set_value("[x](https:evil.example)/../../..").run()
    _assert_literal(_markdown_sources(at), *needles)


def _charts_rel(root: Path, path: Path) -> str:
    return str(path.relative_to(root))


def test_links_leaving_the_root_are_not_shown(runs, tmp_path, monkeypatch):
    """A vector and a metrics file linked from outside the run root were shown by the pages."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "run").mkdir(parents=True)
    outside.mkdir()
    (outside / "metrics.jsonl").write_text('{"step": 1, "loss": 123.0}\n')
    (outside / "ranked.jsonl").write_bytes((runs["screen"] / "ranked.jsonl").read_bytes())
    (outside / "summary.json").write_bytes((runs["screen"] / "summary.json").read_bytes())
    (root / "run" / "evil.safetensors").symlink_to(runs["vector"])
    (root / "run" / "metrics.jsonl").symlink_to(outside / "metrics.jsonl")
    (root / "screen").symlink_to(outside)  # a linked directory
    (root / "screen2").mkdir()
    (root / "screen2" / "summary.json").symlink_to(outside / "summary.json")
    (root / "screen2" / "ranked.jsonl").symlink_to(outside / "ranked.jsonl")
    at = _app(root, monkeypatch=monkeypatch).run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Persona vectors"] == "0" and metrics["Training runs"] == "0"
    assert metrics["Data screens"] == "0"
    warning = " ".join(_texts(at.sidebar.warning))
    assert "links leaving the run root" in warning and "evil.safetensors" in warning
    for page in ("vectors", "steering", "runs", "screening"):
        _page(at, page)
        assert at.info and _charts(at) == 0, page
    # the linked directory typed by hand is refused as well
    at.sidebar.text_input(key="run_path").set_value("screen").run()
    assert any("outside the run root" in e for e in _texts(at.sidebar.error))


def test_models_load_only_from_allowed_specs(runs, tmp_path, monkeypatch):
    """A `model:` in config.yaml made the page contact the hub; any folder on disk could be loaded."""
    import shutil

    import workbench

    loaded: list[str] = []

    def fake_load(spec, *a, **kw):
        loaded.append(spec)
        raise workbench.WorkbenchError(f"fake loader: {spec}")

    monkeypatch.setattr(workbench, "load_model", fake_load)
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    shutil.copy(runs["vector"], root / "run" / "evil.safetensors")
    (root / "run" / "config.yaml").write_text("model: someorg/hub-only-model\n")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    at = _page(_app(root, monkeypatch=monkeypatch), "steering")
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert any("Model refused" in e and "someorg/hub-only-model" in e for e in _texts(at.sidebar.error))
    assert any(e.startswith("No model loaded") for e in _texts(at.error))
    assert at.text_input(key="model_spec::.").value == "someorg/hub-only-model"
    # a folder outside the run root, typed into the box
    (tmp_path / "elsewhere").mkdir()
    at.sidebar.text_input(key="model_spec::.").set_value(str(tmp_path / "elsewhere")).run()
    assert any("not allowed" in e for e in _texts(at.sidebar.error))
    assert loaded == []  # nothing was loaded, nothing downloaded
    # a model folder inside the run root is allowed (the loader gets its absolute path)
    (root / "models" / "mine").mkdir(parents=True)
    at.sidebar.text_input(key="model_spec::.").set_value("models/mine").run()
    assert not at.sidebar.error and loaded == [str((root / "models" / "mine").resolve())]
    # the hub id becomes loadable when the explorer is started with --model for it
    at = _page(_app(root, monkeypatch=monkeypatch, models=("someorg/hub-only-model",)), "steering")
    assert not at.sidebar.error and loaded[-1] == "someorg/hub-only-model"
    assert any("fake loader" in e for e in _texts(at.error))


def test_missing_run_root_opens_with_a_hint(tmp_path, monkeypatch):
    at = _app(tmp_path / "runs", monkeypatch=monkeypatch).run()
    assert not at.exception and not at.error
    hints = _texts(at.info) + _texts(at.sidebar.info)
    assert any("make demo" in h and "workbench demo" in h for h in hints)
    (tmp_path / "runs").mkdir()  # runs made later are picked up on the next load
    at.run()
    assert not at.exception and {m.label: m.value for m in at.metric}["Evaluations"] == "0"


def test_runs_page_names_the_interval_method_and_warns_on_small_samples(tmp_path, monkeypatch):
    """`misaligned_rate 0 [0, 0]` with n = 1 was shown without a word about the sample size."""
    from workbench.metrics import misaligned_rate

    root = tmp_path / "runs"
    (root / "ev").mkdir(parents=True)
    one = misaligned_rate([{"aligned": 90.0, "coherent": 90.0, "question_id": "q1"}]).as_dict()
    summary = {"model": TINY, "judge": "none", "sets": {"qs": {
        "kind": "free_form", "rows": 1, "misaligned_rate": one,
        "mean_aligned": {"value": None, "low": None, "high": None, "n": 0, "method": "none"},
        "old_rate": {"value": 0.0, "low": 0.0, "high": 0.0, "n": 1},
    }}}  # fmt: skip
    (root / "ev" / "summary.json").write_text(json.dumps(summary))
    at = _page(_app(root, monkeypatch=monkeypatch), "runs")
    table = at.dataframe[0].value.set_index("metric")
    assert table.loc["qs/misaligned_rate", "interval method"] == "wilson"
    assert table.loc["qs/misaligned_rate", "95% interval"] == f"[0.000, {one['high']:.3f}]"
    assert table.loc["qs/misaligned_rate", "n"] == "1"
    assert "small sample" in table.loc["qs/misaligned_rate", "caveat"]
    assert table.loc["qs/mean_aligned", "value"] == "n/a" and table.loc["qs/mean_aligned", "n"] == "n/a"
    assert "zero-width" in table.loc["qs/old_rate", "caveat"]
    assert table.loc["qs/old_rate", "interval method"] == "not recorded"
    warning = " ".join(_texts(at.warning))
    assert "fewer than 30" in warning and "qs/misaligned_rate" in warning
    assert _charts(at) == 2  # the estimates (n/a values are not drawn) and the Pareto plot
