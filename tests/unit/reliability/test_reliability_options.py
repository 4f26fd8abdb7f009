"""Promise 1 for the inference-time commands: numeric options, API arguments, adapters, ``.pt`` vectors,
long prompts and terminal output (docs/reliability.md).

Every bad value is refused with one ``WorkbenchError`` line (CLI: ``error: ...``, exit 2) that names the
option or argument and its accepted range, before any work is done.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from gating import GateSet, gate_intervention
from gating._cli import resolve_cli_alpha
from probes import PersonaVector, import_pt
from steering import Steerer, SteeringSpec, sweep
from tests.helpers import load_tiny
from tests.unit.reliability.test_reliability_inputs import run_main
from workbench import WorkbenchError
from workbench._options import printable
from workbench.adapters import apply_adapter
from workbench.data import make_dataset
from workbench.evaluation import EvalConfig
from workbench.generation import generate

M = ("-m", "random:tiny-llama")
NONFINITE = ("nan", "inf", "-inf")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A persona vector, gates, a sycophancy set, chat data and ``.pt`` vectors for tiny-llama."""
    d = tmp_path_factory.mktemp("options")
    lm = load_tiny("tiny-llama")
    g = torch.Generator().manual_seed(0)
    vec = 4 * torch.randn(lm.n_layers, lm.d_model, generator=g)
    PersonaVector(vec, trait="evil", fingerprint=lm.fingerprint).save(d / "v.safetensors")
    GateSet.create(lm, layers=[1]).save(d / "gates.safetensors")
    (d / "gcd.jsonl").write_text("".join(json.dumps(r) + "\n" for r in make_dataset("syco_gcd_test", n=2)))
    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}]
    (d / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    torch.save(torch.randn(lm.n_layers + 1, lm.d_model), d / "ok.pt")
    return d


def one_error(code: int, stderr: str) -> str:
    """The single ``error:`` line of a refused command (exit 2, no traceback, nothing else on stderr)."""
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


# ---------------------------------------------------------------------------------------- NaN / inf alphas
def _alpha_commands(d, value):
    v, gates, data = str(d / "v.safetensors"), str(d / "gates.safetensors"), str(d / "gcd.jsonl")
    out = str(d / "never")
    return {
        "steer": (["steer", *M, "--vector", v, "-l", "1", f"--alpha={value}", "-p", "hi"], "--alpha"),
        "gate": (["gate", *M, "--gates", gates, f"--alpha={value}", "-p", "hi", "--out", out], "--alpha"),
        "gate --suppress": (
            ["gate", *M, "--gates", gates, "--suppress", f"--alpha={value}", "-p", "hi", "--out", out],
            "--alpha",
        ),
        "sweep": (
            ["sweep", *M, "--vector", v, "--layers", "1", f"--alphas=0,{value}", "--out", out],
            "--alphas",
        ),
        "eval --alpha": (
            ["eval", *M, "-d", data, "--vector", v, "--layer", "1", f"--alpha={value}", "--out", out],
            "--alpha",
        ),
        "eval --alpha (several)": (
            [
                "eval",
                *M,
                "-d",
                data,
                "--vector",
                v,
                "--layer",
                "1",
                "--alpha=1",
                f"--alpha={value}",
                "--out",
                out,
            ],
            "--alpha",
        ),  # fmt: skip
        "eval --gate-alpha": (
            ["eval", *M, "-d", data, "--gates", gates, f"--gate-alpha={value}", "--out", out],
            "--gate-alpha",
        ),
    }


@pytest.mark.parametrize("value", NONFINITE)
@pytest.mark.parametrize(
    "command",
    [
        "steer",
        "gate",
        "gate --suppress",
        "sweep",
        "eval --alpha",
        "eval --alpha (several)",
        "eval --gate-alpha",
    ],
)
def test_cli_refuses_non_finite_alphas(files, command, value):
    args, flag = _alpha_commands(files, value)[command]
    line = one_error(*run_main(*args)[::2])
    assert line == f"error: {flag} must be a finite number, got {float(value):g}"
    assert not (files / "never").exists()


def _tl():
    return load_tiny("tiny-llama")


@pytest.mark.parametrize(
    "make",
    [
        lambda lm, v: Steerer(lm, v, [1], float("nan")),
        lambda lm, v: Steerer(lm, v, [1], math.inf),
        lambda lm, v: Steerer(lm, v, [1], -math.inf),
        lambda lm, v: Steerer(lm, v, [1], torch.tensor(float("inf"))),
        lambda lm, v: Steerer(lm, v, [1], torch.tensor([1.0, float("nan")])),
        lambda lm, v: Steerer(lm, [SteeringSpec(v, [1], float("nan"))]),
        lambda lm, v: Steerer(lm, [(v, [1], math.inf)]),
        lambda lm, v: sweep(lm, v, [1], [0.0, float("nan")], ["q"], max_new_tokens=1),
        lambda lm, v: sweep(lm, v, [1], [math.inf], ["q"], max_new_tokens=1, batch_alphas=False),
    ],
    ids=["nan", "inf", "-inf", "0-d tensor", "per-row", "spec", "tuple", "sweep", "sweep-unbatched"],
)
def test_steering_api_refuses_non_finite_alphas(make):
    lm = _tl()
    v = torch.randn(lm.n_layers, lm.d_model)
    with pytest.raises(WorkbenchError, match=r"alpha.*finite"):
        make(lm, v)


@pytest.mark.parametrize(
    "alpha",
    [
        float("nan"),
        math.inf,
        -math.inf,
        {1: float("nan")},
        [0.0, math.inf, 0.0],
        torch.tensor([1.0, float("nan")]),
        torch.tensor(float("-inf")),
        torch.full((3, 2), float("nan")),
    ],
    ids=["nan", "inf", "-inf", "dict", "list", "per-row", "0-d", "per-layer-row"],
)
def test_gate_api_refuses_non_finite_alphas(alpha):
    from tests.helpers import hooks_on

    lm = _tl()
    before = hooks_on(lm)  # the shared model may carry transformers' own output-capturing hooks
    gs = GateSet.create(lm, layers=[1])
    with pytest.raises(WorkbenchError, match=r"alpha.*finite"):
        with gs.attached(lm, alpha=alpha):
            pass
    with pytest.raises(WorkbenchError, match=r"alpha.*finite"):
        gate_intervention(lm, gs, alpha)
    assert hooks_on(lm) == before


@pytest.mark.parametrize("value", [float("nan"), math.inf, -math.inf])
def test_resolve_cli_alpha_refuses_non_finite(value):
    for suppress, amplify in ((False, False), (True, False), (False, True)):
        with pytest.raises(WorkbenchError, match="--alpha must be a finite number"):
            resolve_cli_alpha(suppress, amplify, value)


def test_finite_alphas_still_work():
    lm = _tl()
    v = torch.randn(lm.n_layers, lm.d_model)
    with Steerer(lm, v, [1], torch.tensor([0.0, 2.0])):
        pass
    gs = GateSet.create(lm, layers=[1])
    with gs.attached(lm, alpha=torch.tensor([1.0, -1.0])):
        pass


# ---------------------------------------------------------------------------------------- eval options
EVAL_FLAGS = [
    ("--samples", "0", "--samples must be an integer >= 1, got 0"),
    ("--samples", "-1", "--samples must be an integer >= 1, got -1"),
    ("--temperature", "nan", "--temperature must be a finite number >= 0 (0 = greedy), got nan"),
    ("--temperature", "-1", "--temperature must be a finite number >= 0 (0 = greedy), got -1"),
    ("--temperature", "inf", "--temperature must be a finite number >= 0 (0 = greedy), got inf"),
    ("--temperature", "-inf", "--temperature must be a finite number >= 0 (0 = greedy), got -inf"),
    ("--batch-size", "0", "--batch-size must be an integer >= 1, got 0"),
    ("--batch-size", "-1", "--batch-size must be an integer >= 1, got -1"),
    ("--max-new-tokens", "0", "--max-new-tokens must be an integer >= 1, got 0"),
    ("--max-new-tokens", "-1", "--max-new-tokens must be an integer >= 1, got -1"),
]


@pytest.mark.parametrize(("flag", "value", "message"), EVAL_FLAGS)
def test_eval_numeric_flags_are_checked(tmp_path, flag, value, message):
    out = tmp_path / "run"
    line = one_error(*run_main("eval", *M, "-q", "em_questions", f"{flag}={value}", "--out", str(out))[::2])
    assert line == f"error: {message}"
    assert not out.exists()


def test_eval_help_says_temperature_zero_is_greedy():
    code, stdout, _ = run_main("eval", "--help")
    assert code == 0 and "0 = greedy" in " ".join(stdout.split())


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("samples", 0, "'samples' must be an integer >= 1"),
        ("samples", -1, "'samples' must be an integer >= 1"),
        ("temperature", -1.0, "'temperature' must be a finite number >= 0 (0 = greedy)"),
        ("top_p", 0.0, "'top_p' must be a finite number in (0, 1]"),
        ("top_p", 1.5, "'top_p' must be a finite number in (0, 1]"),
        ("top_p", -0.1, "'top_p' must be a finite number in (0, 1]"),
        ("max_new_tokens", 0, "'max_new_tokens' must be an integer >= 1"),
        ("exact_max_new_tokens", -1, "'exact_max_new_tokens' must be an integer >= 1"),
        ("batch_size", 0, "'batch_size' must be an integer >= 1"),
        ("n_boot", 0, "'n_boot' must be an integer >= 1"),
    ],
)
def test_eval_config_values_are_checked(tmp_path, key, value, needle):
    with pytest.raises(WorkbenchError, match="^" + re.escape(needle)):
        EvalConfig(**{key: value})
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(f"judge: none\n{key}: {value}\n")
    out = tmp_path / "run"
    line = one_error(
        *run_main("eval", *M, "-q", "em_questions", "--config", str(cfg), "--out", str(out))[::2]
    )
    assert line.startswith(f"error: {cfg}, line 2: ") and needle in line
    assert not out.exists()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
        ({"temperature": math.inf}, "temperature must be a finite number >= 0"),
        ({"temperature": -0.5}, "temperature must be a finite number >= 0"),
        ({"top_p": 0.0}, r"top_p must be a finite number in \(0, 1\]"),
        ({"top_p": float("nan")}, r"top_p must be a finite number in \(0, 1\]"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"max_new_tokens": -3}, "max_new_tokens must be an integer >= 1"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": -1}, "batch_size must be an integer >= 1"),
    ],
)
def test_generate_arguments_are_checked(kwargs, needle):
    with pytest.raises(WorkbenchError, match=needle):
        generate(_tl(), ["hi"], **kwargs)


# ---------------------------------------------------------------------------------------- other commands
def _cmd(d, name, *extra):
    v, out = str(d / "v.safetensors"), str(d / "never")
    base = {
        "steer": ["steer", *M, "--vector", v, "-l", "1", "--alpha=1", "-p", "hi"],
        "gate": ["gate", *M, "--gates", str(d / "gates.safetensors"), "--alpha=1", "-p", "hi", "--out", out],
        "sweep": ["sweep", *M, "--vector", v, "--layers", "1", "--alphas=0,1", "--out", out],
        "screen": ["screen", *M, "--vector", v, "-l", "1", "--data", str(d / "chat.jsonl"), "--out", out],
        "extract-vector": ["extract-vector", *M, "-t", "evil", "--out", str(d / "never.safetensors")],
    }[name]
    return [*base, *extra]


OTHER_FLAGS = [
    ("steer", "--width=0", "--width must be an integer >= 20, got 0"),
    ("steer", "--width=-5", "--width must be an integer >= 20, got -5"),
    ("steer", "--width=19", "--width must be an integer >= 20, got 19"),
    ("steer", "--max-new-tokens=0", "--max-new-tokens must be an integer >= 1, got 0"),
    ("gate", "--max-new-tokens=-1", "--max-new-tokens must be an integer >= 1, got -1"),
    ("gate", "--samples=0", "--samples must be an integer >= 1, got 0"),
    ("sweep", "--batch-size=0", "--batch-size must be an integer >= 1, got 0"),
    ("sweep", "--batch-size=-1", "--batch-size must be an integer >= 1, got -1"),
    ("sweep", "--n-questions=-1", "--n-questions must be an integer >= 1, got -1"),
    ("sweep", "--n-questions=0", "--n-questions must be an integer >= 1, got 0"),
    ("sweep", "--samples=0", "--samples must be an integer >= 1, got 0"),
    ("sweep", "--max-new-tokens=0", "--max-new-tokens must be an integer >= 1, got 0"),
    ("sweep", "--coherence-tolerance=nan", "--coherence-tolerance must be a finite number >= 0, got nan"),
    ("sweep", "--coherence-tolerance=-1", "--coherence-tolerance must be a finite number >= 0, got -1"),
    ("screen", "--batch-size=0", "--batch-size must be an integer >= 1, got 0"),
    ("screen", "--max-new-tokens=0", "--max-new-tokens must be an integer >= 1, got 0"),
    ("screen", "--threshold=nan", "--threshold must be a finite number, got nan"),
    ("extract-vector", "--batch-size=0", "--batch-size must be an integer >= 1, got 0"),
    ("extract-vector", "--batch-size=-2", "--batch-size must be an integer >= 1, got -2"),
    ("extract-vector", "--n-questions=-1", "--n-questions must be an integer >= 0 (0 = all), got -1"),
    ("extract-vector", "--n-instructions=-1", "--n-instructions must be an integer >= 0 (0 = all), got -1"),
    ("extract-vector", "--n-per-question=0", "--n-per-question must be an integer >= 1, got 0"),
    ("extract-vector", "--max-new-tokens=0", "--max-new-tokens must be an integer >= 1, got 0"),
    (
        "extract-vector",
        "--temperature=nan",
        "--temperature must be a finite number >= 0 (0 = greedy), got nan",
    ),
    ("extract-vector", "--temperature=-1", "--temperature must be a finite number >= 0 (0 = greedy), got -1"),
    ("extract-vector", "--threshold=nan", "--threshold must be a finite number in [0, 100], got nan"),
    ("extract-vector", "--threshold=101", "--threshold must be a finite number in [0, 100], got 101"),
]


@pytest.mark.parametrize(("command", "flag", "message"), OTHER_FLAGS)
def test_numeric_flags_of_other_commands_are_checked(files, command, flag, message):
    line = one_error(*run_main(*_cmd(files, command, flag))[::2])
    assert line == f"error: {message}"
    assert not (files / "never").exists() and not (files / "never.safetensors").exists()


def test_steer_width_20_stacks_the_answers(files):
    code, stdout, stderr = run_main(*_cmd(files, "steer", "--width=20", "--max-new-tokens=2"))
    assert code == 0, stderr
    assert "== base" in stdout and "== steered" in stdout


def test_sweep_api_checks_its_arguments():
    lm = _tl()
    v = torch.randn(lm.n_layers, lm.d_model)
    for kwargs, needle in [
        ({"batch_size": 0}, "batch_size must be an integer >= 1"),
        ({"batch_size": -1}, "batch_size must be an integer >= 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be an integer >= 1"),
        ({"temperature": float("nan")}, "temperature must be a finite number >= 0"),
        ({"coherence_tolerance": float("nan")}, "coherence_tolerance must be a finite number >= 0"),
    ]:
        with pytest.raises(WorkbenchError, match=needle):
            sweep(lm, v, [1], [0.0, 1.0], ["q"], **kwargs)


# ---------------------------------------------------------------------------------------- --out as a folder
@pytest.mark.parametrize(
    "args",
    [
        ["extract-vector", *M, "-t", "evil", "--n-questions", "1", "--out", "{d}"],
        ["data", "make", "em_questions", "--out", "{d}"],
        ["data", "make", "syco_gcd_test", "--out", "{d}"],
    ],
    ids=["extract-vector", "data make yaml", "data make jsonl"],
)
def test_out_directory_where_a_file_is_meant(tmp_path, args):
    folder = tmp_path / "folder"
    folder.mkdir()
    line = one_error(*run_main(*[a.format(d=folder) for a in args])[::2])
    assert line == f"error: --out '{folder}' is a directory; give the path of a file to write"
    assert list(folder.iterdir()) == []


# ---------------------------------------------------------------------------------------- adapters
def _adapter(path, model, target_modules):
    from peft import LoraConfig, get_peft_model

    get_peft_model(model, LoraConfig(r=2, target_modules=target_modules)).save_pretrained(str(path))
    return path


def _llama(**overrides):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=260,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**{**cfg, **overrides}))


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from workbench import load_model

    d = tmp_path_factory.mktemp("adapters")
    return {
        "qwen3": _adapter(d / "qwen3", load_model("random:tiny-qwen3", device="cpu").model, ["q_proj"]),
        "gpt2": _adapter(d / "gpt2", load_model("random:tiny-gpt2", device="cpu").model, ["c_attn"]),
        "width32": _adapter(d / "width32", _llama(hidden_size=32, intermediate_size=64), ["q_proj"]),
        "layers5": _adapter(d / "layers5", _llama(num_hidden_layers=5), ["q_proj", "v_proj"]),
        "same": _adapter(d / "same", _llama(), ["q_proj", "v_proj"]),
    }


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("qwen3", "made for Qwen3ForCausalLM, but the model is LlamaForCausalLM"),
        ("gpt2", "made for GPT2LMHeadModel, but the model is LlamaForCausalLM"),
        ("width32", r"model\.layers\.0\.self_attn\.q_proj: lora_A has shape \(2, 32\)"),
        ("layers5", r"model\.layers\.3\.self_attn\.q_proj, which the model does not have"),
    ],
)
def test_adapter_for_another_model_is_refused(adapters, name, needle):
    from workbench import load_model

    lm = load_model("random:tiny-llama", device="cpu")
    with pytest.raises(WorkbenchError, match=f"adapter '{adapters[name]}'.*{needle}") as info:
        apply_adapter(lm, adapters[name])
    assert "\n" not in str(info.value)
    assert type(lm.model).__name__ == "LlamaForCausalLM"  # left unwrapped


def test_adapter_for_the_same_shape_applies(adapters):
    from workbench import load_model

    lm = apply_adapter(load_model("random:tiny-llama", device="cpu"), adapters["same"])
    assert "Peft" in type(lm.model).__name__


@pytest.mark.parametrize("command", ["eval", "gate"])
def test_cli_adapter_mismatch_is_one_line(files, adapters, tmp_path, command):
    ad = str(adapters["layers5"])
    args = {
        "eval": ["eval", *M, "-d", str(files / "gcd.jsonl"), "--adapter", ad, "--out", str(tmp_path / "r")],
        "gate": ["gate", *M, "--gates", str(files / "gates.safetensors"), "--alpha=1", "-p", "hi",
                 "--adapter", ad, "--out", str(tmp_path / "r")],
    }[command]  # fmt: skip
    line = one_error(*run_main(*args)[::2])
    assert f"adapter '{ad}'" in line and "does not have" in line


# ---------------------------------------------------------------------------------------- long prompts
def test_prompt_longer_than_the_context_is_refused_at_once():
    import time

    lm = _tl()
    start = time.perf_counter()
    with pytest.raises(
        WorkbenchError, match=r"prompt 2 of 2 is 100\d\d\d tokens long .*context of 1024 tokens"
    ):
        generate(lm, ["hi", "x" * 100_000], max_new_tokens=50)
    assert time.perf_counter() - start < 10
    # a prompt that fits still runs
    assert len(generate(lm, ["y" * 900], max_new_tokens=1)) == 1


def test_cli_steer_refuses_a_100_kb_prompt(files):
    args = _cmd(files, "steer")
    args[args.index("-p") + 1] = "z" * 100_000
    line = one_error(*run_main(*args)[::2])
    assert "tokens long" in line and "context of 1024 tokens" in line


# ---------------------------------------------------------------------------------------- .pt vectors
@pytest.mark.parametrize(
    ("rows", "width"),
    [(5, 64), (3, 64), (2, 64), (4, 32), (4, 65)],
    ids=["more-layers", "no-embedding-row", "fewer-layers", "narrower", "wider"],
)
def test_pt_vector_of_another_shape_is_refused(tmp_path, rows, width):
    lm = _tl()
    path = tmp_path / "other.pt"
    torch.save(torch.randn(rows, width), path)
    msg = rf"'{path}': shape \({rows}, {width}\) does not fit model .*expected \[4, 64\]"
    with pytest.raises(WorkbenchError, match=msg):
        import_pt(path, lm.fingerprint)
    args = ["steer", *M, "--vector", str(path), "-l", "1", "--alpha=1", "-p", "hi"]
    line = one_error(*run_main(*args)[::2])
    assert str(path) in line and f"({rows}, {width})" in line and "[4, 64]" in line


def test_pt_vector_records_that_it_had_no_fingerprint(files, tmp_path):
    lm = _tl()
    v = import_pt(files / "ok.pt", lm.fingerprint)
    assert v.metadata["source_format"] == "pt"
    assert v.metadata["source_fingerprint"] is None and "unfingerprinted" in v.metadata["provenance"]
    saved = v.save(tmp_path / "imported.safetensors")
    back = PersonaVector.load(saved, fingerprint=lm.fingerprint)
    assert back.metadata["source_format"] == "pt" and back.metadata["source_fingerprint"] is None
    bare = import_pt(files / "ok.pt")
    assert bare.fingerprint is None and bare.metadata["source_format"] == "pt"


@pytest.mark.parametrize(
    "tensor",
    [torch.full((4, 64), float("nan")), torch.zeros(4, 64, dtype=torch.complex64), torch.ones(4, 64).bool()],
    ids=["nan", "complex", "bool"],
)
def test_pt_vector_with_bad_values_is_refused(tmp_path, tensor):
    path = tmp_path / "bad.pt"
    torch.save(tensor, path)
    with pytest.raises(WorkbenchError, match=r"bad\.pt"):
        import_pt(path, _tl().fingerprint)


# ---------------------------------------------------------------------------------------- terminal output
HOSTILE = "a\x1b[31mred\x1b[0m\x07 \x1b]0;pwned\x07 \rover \u202eevil\x00 tab\there\nsecond line"


def test_printable_escapes_control_characters_but_keeps_newlines():
    out = printable(HOSTILE)
    assert all(ch == "\n" or ch.isprintable() for ch in out)
    assert "\\x1b[31m" in out and "\\x07" in out and "\\r" in out and "\\u202e" in out and "\\x00" in out
    assert out.endswith("\nsecond line") and out.count("\n") == 1
    assert printable("plain text") == "plain text"


@pytest.mark.parametrize("command", ["steer", "gate"])
def test_prompt_and_answers_are_printed_escaped(files, monkeypatch, command):
    import workbench.generation as gen

    monkeypatch.setattr(gen, "generate", lambda lm, prompts, **kw: [HOSTILE for _ in prompts])
    args = _cmd(files, command)
    args[args.index("-p") + 1] = HOSTILE
    if command == "gate":
        args[args.index("--out") + 1] = str(files / "gate-run")
    code, stdout, stderr = run_main(*args)
    assert code == 0, stderr
    bad = [ch for ch in stdout if ch != "\n" and not ch.isprintable()]
    assert not bad, bad
    assert "\\x1b[31mred" in stdout and "second line" in stdout
