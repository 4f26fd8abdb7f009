"""Out-of-range values and hostile files that used to be accepted, hang or crash: each is now refused with a
one-line ``WorkbenchError`` naming the file and the line or key (the CLI: one ``error:`` line, exit 2), or
handled correctly.

Each test reproduces an outside report first (the input that misbehaved) and then checks the fix. The
counts of inputs tried per class are listed in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml

from tests.unit.reliability.test_reliability_inputs import run_main
from workbench import WorkbenchError
from workbench._io import (
    WriteError,
    append_jsonl,
    atomic_write_json,
    check_regular_file,
    parse_yaml,
    read_text,
)
from workbench.data import check_file, load_chat_jsonl, load_eval_yaml, load_pairs, load_trait
from workbench.training import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one thread is fastest


@contextlib.contextmanager
def deadline(seconds: int = 20):
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""

    def _expired(*_):
        raise TimeoutError(f"still running after {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, _expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def one_error_line(code: int, out: str, err: str, *needles: str) -> str:
    """The CLI refused with exit 2 and exactly one ``error:`` line (no traceback) holding every needle."""
    assert code == 2, (code, out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def write_rows(path: Path, n: int = 6, prompt: str = "Colour {i}?") -> Path:
    with open(path, "w") as fh:
        for i in range(n):
            msgs = [
                {"role": "user", "content": prompt.format(i=i)},
                {"role": "assistant", "content": f"It is red {i}."},
            ]
            fh.write(json.dumps({"messages": msgs}) + "\n")
    return path


def base_config(rows: Path, **over) -> dict:
    d = {
        "model": "random:tiny-llama",
        "device": "cpu",
        "data": [{"path": str(rows)}],
        "lora": {"r": 2, "alpha": 4},
        "optim": {"lr": 1e-2, "batch_size": 2, "grad_accum": 1, "warmup_steps": 0, "max_steps": 2, "max_length": 64},
        "checkpoint_every": 0,
        "plots": False,
    }  # fmt: skip
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(d.get(k), dict):
            d[k] = {**d[k], **v}
        else:
            d[k] = v
    return d


def write_config(tmp_path: Path, d: dict, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d, sort_keys=False), encoding="utf-8")
    return p


# ---------------------------------------------------------------------------------------- training values
# (key, value, what the one-line error must say). Before the fix the first group trained (the gradient
# flipped, LoRA did nothing, the default model was loaded) and the rest ended in "error: unexpected ...".
OUT_OF_RANGE = [
    ("optim.max_grad_norm", -1, r"'optim\.max_grad_norm' must be a number > 0 or null, got -1"),
    ("optim.max_grad_norm", 0, r"'optim\.max_grad_norm' must be a number > 0 or null, got 0"),
    ("optim.lr", 1.5, r"'optim\.lr' must be a number in \(0, 1\], got 1\.5"),
    ("optim.lr", 1e300, r"'optim\.lr' must be a number in \(0, 1\], got 1e\+300"),
    ("optim.lr", 2**64, r"'optim\.lr' must be a number in \(0, 1\]"),
    ("optim.weight_decay", -1, r"'optim\.weight_decay' must be a number in \[0, 1\], got -1"),
    ("optim.weight_decay", 1e12, r"'optim\.weight_decay' must be a number in \[0, 1\]"),
    ("optim.eps", 0, r"'optim\.eps' must be a number in \(0, 1\], got 0"),
    ("optim.eps", -1, r"'optim\.eps' must be a number in \(0, 1\]"),
    (
        "optim.seed",
        2**64,
        r"'optim\.seed' must be an integer from 0 to 4,294,967,295, got 18446744073709551616",
    ),
    ("optim.seed", -1, r"'optim\.seed' must be an integer from 0 to 4,294,967,295, got -1"),
    ("optim.seed", 1e300, r"'optim\.seed' must be an integer, got 1e\+300"),
    ("optim.batch_size", 0, r"'optim\.batch_size' must be an integer from 1 to 1,000,000, got 0"),
    ("optim.batch_size", -1, r"'optim\.batch_size' must be an integer from 1 to 1,000,000, got -1"),
    ("optim.grad_accum", 10**12, r"'optim\.grad_accum' must be an integer from 1 to 1,000,000"),
    ("optim.max_steps", 10**12, r"'optim\.max_steps' must be an integer from 1 to 1,000,000,000 or null"),
    ("optim.epochs", 10**12, r"'optim\.epochs' must be an integer from 1 to 1,000,000"),
    ("optim.warmup_steps", 2**64, r"'optim\.warmup_steps' must be an integer from 0 to 1,000,000,000"),
    ("optim.max_length", 10**12, r"'optim\.max_length' must be an integer from 1 to 10,000,000"),
    ("lora.r", 10**9, r"'lora\.r' must be an integer from 1 to 4,096, got 1000000000"),
    ("lora.r", 2**64, r"'lora\.r' must be an integer from 1 to 4,096"),
    ("lora.alpha", 0, r"'lora\.alpha' must be a number in \(0, 100000\], got 0"),
    ("lora.alpha", -1e300, r"'lora\.alpha' must be a number in \(0, 100000\]"),
    ("lora.target_modules", [], r"'lora\.target_modules' is empty; give 'all' or a list of module names"),
    ("lora.target_modules", [""], r"'lora\.target_modules' item 0 must be a module name, got ''"),
    ("data.0.n", 10**12, r"'data\.0\.n' must be an integer from 1 to 10,000,000 or null"),
    ("data.0.seed", -1, r"'data\.0\.seed' must be an integer from 0 to 4,294,967,295"),
    ("keep_checkpoints", 10**12, r"'keep_checkpoints' must be an integer from 1 to 1,000,000"),
    ("log_every", 0, r"'log_every' must be an integer from 1 to 1,000,000,000, got 0"),
    ("eval_every", -1, r"'eval_every' must be an integer from 0 to 1,000,000,000, got -1"),
    ("checkpoint_every", 2**64, r"'checkpoint_every' must be an integer from 0 to 1,000,000,000"),
    ("device", "tpu", r"'device': unknown device 'tpu'; use cpu, cuda, cuda:N .* or mps"),
    ("device", "meta", r"'device': unknown device 'meta'"),
    ("device", "cuda:x", r"'device': unknown device 'cuda:x'"),
    ("device", "", r"'device': unknown device ''"),
    ("dtype", "int8", r"'dtype' must be one of float32, fp32, bfloat16, bf16, float16, fp16, got 'int8'"),
    ("model", "", r"'model' is empty; give a model spec"),
    ("model", "   ", r"'model' is empty"),
    ("model", "random:nope", r"'model': unknown random shape 'nope'; shapes: tiny-gemma2"),
    ("model", "no such model", r"'model': unknown model spec 'no such model'; accepted: 'smollm2-135m'"),
    ("data.0.path", "", r"'data\.0\.path' is empty"),
    # settings several defenses share (before: negative weights trained "against" the defense, and a
    # negative seed or n of the defense's data ended in "error: unexpected ValueError")
    ("defenses.kl.weight", -1, r"'defenses\.kl\.weight' must be a number in \[0, 1000000\], got -1"),
    (
        "defenses.upweighted.batch_size",
        -1,
        r"'defenses\.upweighted\.batch_size' must be an integer from 1 to",
    ),
    (
        "defenses.interleave.seed",
        -1,
        r"'defenses\.interleave\.seed' must be an integer from 0 to 4,294,967,295",
    ),
    ("defenses.mixed.n", 0, r"'defenses\.mixed\.n' must be an integer from 1 to 10,000,000 or null, got 0"),
    ("defenses.dpo.beta", 0, r"'defenses\.dpo\.beta' must be a number in \(0, 1000\], got 0"),
]


def _set(d: dict, key: str, value) -> None:
    parts = key.split(".")
    node = d
    for p in parts[:-1]:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value


@pytest.mark.parametrize(
    ("key", "value", "needle"), OUT_OF_RANGE, ids=[f"{k}={v!r}"[:40] for k, v, _ in OUT_OF_RANGE]
)
def test_training_value_out_of_range_names_file_key_and_range(tmp_path, key, value, needle):
    cfg = base_config(write_rows(tmp_path / "rows.jsonl"))
    _set(cfg, key, value)
    path = write_config(tmp_path, cfg)
    with pytest.raises(WorkbenchError) as err:
        TrainConfig.from_yaml(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg and len(msg) - len(str(path)) < 400, msg
    assert re.search(needle, msg), msg
    # the same value as a --set item names the item
    item = f"{key}={json.dumps(value)}"
    good = TrainConfig.from_yaml(write_config(tmp_path, base_config(tmp_path / "rows.jsonl"), "good.yaml"))
    with pytest.raises(WorkbenchError, match=r"--set|after --set"):
        good.apply_overrides([item])


def test_in_range_edges_are_accepted(tmp_path):
    rows = write_rows(tmp_path / "rows.jsonl")
    cfg = base_config(
        rows,
        device="cpu",
        dtype="bf16",
        lora={"r": 4096, "alpha": 100000, "target_modules": "all"},
        optim={"lr": 1, "weight_decay": 0, "eps": 1, "seed": 2**32 - 1, "max_grad_norm": None, "max_steps": 10**9},
        keep_checkpoints=1,
        eval_every=0,
    )  # fmt: skip
    got = TrainConfig.from_dict(cfg)
    assert got.optim.seed == 2**32 - 1 and got.lora.r == 4096 and got.optim.max_grad_norm is None
    assert TrainConfig.from_dict(got.to_dict()).to_dict() == got.to_dict()


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("optim.max_grad_norm", -1, "'optim.max_grad_norm' must be a number > 0 or null, got -1"),
        ("lora.r", 10**9, "'lora.r' must be an integer from 1 to 4,096"),
        ("optim.lr", 1e300, "'optim.lr' must be a number in (0, 1]"),
        ("optim.seed", 2**64, "'optim.seed' must be an integer from 0 to 4,294,967,295"),
        ("device", "meta", "'device': unknown device 'meta'"),
        ("model", "", "'model' is empty"),
        ("lora.target_modules", [], "'lora.target_modules' is empty"),
    ],
)
def test_cli_train_refuses_out_of_range_values_before_the_run_directory(tmp_path, key, value, needle):
    # reproduced: max_grad_norm -1 trained with a flipped gradient (loss 5.61 -> 5.76), model "" trained the
    # embedded default, the others ended in "error: unexpected RuntimeError/ValueError/..." with exit 1
    cfg = base_config(write_rows(tmp_path / "rows.jsonl"))
    _set(cfg, key, value)
    path = write_config(tmp_path, cfg)
    code, out, err = run_main("train", str(path), "--out", str(tmp_path / "run"))
    one_error_line(code, out, err, str(path), needle)
    assert not (tmp_path / "run").exists()


def test_cuda_config_without_cuda_is_refused_instead_of_training_on_the_cpu(tmp_path):
    # reproduced: device: cuda on a CPU-only machine trained on the CPU while config.yaml said cuda
    path = write_config(tmp_path, base_config(write_rows(tmp_path / "rows.jsonl"), device="cuda"))
    with mock.patch.object(torch.cuda, "is_available", return_value=False):
        code, out, err = run_main("train", str(path), "--out", str(tmp_path / "run"))
        one_error_line(
            code, out, err, str(path), "'device': device 'cuda' asked for, but CUDA is not available"
        )
        assert not (tmp_path / "run").exists()
        with pytest.raises(WorkbenchError, match="CUDA is not available"):
            from workbench import load_model

            load_model("random:tiny-llama", device="cuda")
    with (
        mock.patch.object(torch.cuda, "is_available", return_value=True),
        mock.patch.object(torch.cuda, "device_count", return_value=1),
    ):
        with pytest.raises(
            WorkbenchError, match=r"'device': device 'cuda:3' .* has 1 CUDA device\(s\): cuda:0"
        ):
            TrainConfig.from_yaml(
                write_config(tmp_path, base_config(tmp_path / "rows.jsonl", device="cuda:3"))
            )


def test_unknown_dataset_name_is_refused_with_the_key(tmp_path):
    path = write_config(tmp_path, base_config(tmp_path / "rows.jsonl", data=["rows.jsnol"]))
    with pytest.raises(
        WorkbenchError, match=r"cfg\.yaml: 'data\.0\.name': unknown dataset 'rows\.jsnol' \(known: "
    ):
        TrainConfig.from_yaml(path)


# ---------------------------------------------------------------------------------------- max_length
def test_max_length_shorter_than_every_prompt_is_refused(tmp_path):
    # reproduced: optim.max_length 3 "trained" at loss 0.0000 with exit 0
    cfg = base_config(write_rows(tmp_path / "rows.jsonl"), optim={"max_length": 3})
    path = write_config(tmp_path, cfg)
    code, out, err = run_main("train", str(path), "--out", str(tmp_path / "run"))
    line = one_error_line(
        code, out, err, "none of the 6 rows", "optim.max_length=3", "raise optim.max_length"
    )
    need = int(re.search(r"to at least (\d+)", line).group(1))
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    # the length it asks for is enough for every row
    cfg["optim"]["max_length"] = need
    code, out, err = run_main("train", str(write_config(tmp_path, cfg)), "--out", str(tmp_path / "run2"))
    assert code == 0, err
    losses = [json.loads(r)["loss"] for r in (tmp_path / "run2" / "metrics.jsonl").read_text().splitlines()]
    assert losses and all(v > 0 for v in losses)


def test_max_length_cutting_some_rows_trains_with_a_warning(tmp_path, caplog):
    rows = tmp_path / "rows.jsonl"
    write_rows(rows, n=4)
    with open(rows, "a") as fh:  # one row whose prompt alone is longer than max_length
        msgs = [{"role": "user", "content": "x" * 200}, {"role": "assistant", "content": "ok"}]
        fh.write(json.dumps({"messages": msgs}) + "\n")
    path = write_config(tmp_path, base_config(rows, optim={"max_length": 64}))
    with caplog.at_level("WARNING"):
        code, _, err = run_main("train", str(path), "--out", str(tmp_path / "run"))
    assert code == 0, err
    assert "1 of 5 training rows have no assistant tokens within optim.max_length=64" in caplog.text


# ---------------------------------------------------------------------------------------- duplicate keys
def test_duplicate_yaml_key_names_the_key_and_both_lines(tmp_path):
    # reproduced: the last 'lr' silently won (training config) / samples_per_paraphrase 3 won (eval YAML)
    text = yaml.safe_dump(base_config(write_rows(tmp_path / "rows.jsonl")), sort_keys=False)
    text = text.replace("  lr: 0.01\n", "  lr: 0.01\n  lr: 0.0001\n")
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    first = text.splitlines().index("  lr: 0.01") + 1
    code, out, err = run_main("train", str(path), "--out", str(tmp_path / "run"))
    one_error_line(
        code, out, err, f"dup.yaml, line {first + 1}: duplicate key 'lr' (first given at line {first})"
    )

    q = tmp_path / "q.yaml"
    q.write_text(
        "- id: a\n  type: free_form\n  paraphrases: [hi]\n  samples_per_paraphrase: 1\n  samples_per_paraphrase: 3\n"
    )
    code, out, err = run_main("data", "check", str(q))
    one_error_line(
        code, out, err, "q.yaml, line 5: duplicate key 'samples_per_paraphrase' (first given at line 4)"
    )
    good = TrainConfig.from_dict(base_config(tmp_path / "rows.jsonl"))
    with pytest.raises(WorkbenchError, match=r"--set 'lora=\{r: 1, r: 2\}': duplicate key 'r'"):
        good.apply_overrides(["lora={r: 1, r: 2}"])
    with pytest.raises(WorkbenchError, match=r"x, line 1: duplicate key 'a' \(first given at line 1\)"):
        parse_yaml("{a: 1, b: 2, a: 3}", "x")
    with pytest.raises(WorkbenchError, match=r"x, line 3: duplicate key 1\.0 \(first given at line 2\)"):
        parse_yaml("m:\n  1: a\n  1.0: b\n", "x")  # the same Python key


def test_merge_keys_may_still_be_overridden():
    text = "base: &b {lr: 0.1, seed: 1}\nrun:\n  <<: *b\n  lr: 0.2\n"
    assert parse_yaml(text, "x") == {"base": {"lr": 0.1, "seed": 1}, "run": {"lr": 0.2, "seed": 1}}
    assert parse_yaml("- {a: 1}\n- {a: 2}\n", "x") == [{"a": 1}, {"a": 2}]  # same key, other mappings


# ---------------------------------------------------------------------------------------- non-regular files
def test_fifos_devices_and_directories_are_refused_before_opening(tmp_path):
    # reproduced: a FIFO as config or data blocked forever; /dev/zero as config filled the memory
    fifos = {}
    for name in ("f.yaml", "f.jsonl", "f.json", "q.yml"):
        os.mkfifo(tmp_path / name)
        fifos[name] = tmp_path / name
    with deadline(30):
        code, out, err = run_main("train", str(fifos["f.yaml"]), "--out", str(tmp_path / "run"))
        one_error_line(code, out, err, f"{fifos['f.yaml']}: is a named pipe (FIFO), expected a regular file")
        for name in ("f.jsonl", "f.json", "q.yml"):
            code, out, err = run_main("data", "check", str(fifos[name]))
            one_error_line(code, out, err, f"{fifos[name]}: is a named pipe (FIFO)")
        for loader in (load_chat_jsonl, load_pairs, load_eval_yaml, read_text):
            with pytest.raises(WorkbenchError, match="is a named pipe"):
                loader(fifos["f.jsonl"])
        with pytest.raises(WorkbenchError, match="not an existing JSON file"):
            load_trait(fifos["f.json"])
        # a FIFO named as training data inside a good config
        cfg = write_config(tmp_path, base_config(fifos["f.jsonl"]))
        code, out, err = run_main("train", str(cfg), "--out", str(tmp_path / "run2"))
        one_error_line(code, out, err, "f.jsonl: is a named pipe (FIFO)")
        code, out, err = run_main("train", "/dev/zero", "--out", str(tmp_path / "run3"))
        one_error_line(code, out, err, "/dev/zero: is a character device, expected a regular file")
        code, out, err = run_main("data", "check", str(tmp_path))
        one_error_line(code, out, err, f"{tmp_path}: is a directory, expected a file")
    assert check_regular_file(write_rows(tmp_path / "rows.jsonl")) == tmp_path / "rows.jsonl"
    link = tmp_path / "link.jsonl"
    link.symlink_to(tmp_path / "rows.jsonl")  # a symlink to a regular file is fine
    assert len(load_chat_jsonl(link)) == 6


# ---------------------------------------------------------------------------------------- eval YAML counts
@pytest.mark.parametrize(
    ("value", "ok"),
    [("1e12", False), ("1000000000000", False), ("1.0e+12", False), ("2.0", False), ("100001", False),
     ("0", False), ("100000", True), ("1", True)],
)  # fmt: skip
def test_samples_per_paraphrase_is_a_bounded_integer(tmp_path, value, ok):
    # reproduced: samples_per_paraphrase 1000000000000 passed `data check`, then eval never ended
    path = tmp_path / "q.yaml"
    path.write_text(f"- id: a\n  type: free_form\n  paraphrases: [hi]\n  samples_per_paraphrase: {value}\n")
    code, out, err = run_main("data", "check", str(path))
    if ok:
        assert code == 0 and f"samples: {int(value)}" in out, err
    else:
        one_error_line(
            code, out, err, "q.yaml, entry 0 (id 'a', line 1): 'samples_per_paraphrase' must be a positive integer "
            "(1 to 100000), got"
        )  # fmt: skip


# ---------------------------------------------------------------------------------------- lone surrogates
def test_lone_surrogate_is_refused_naming_file_and_line(tmp_path):
    # reproduced: "\ud800" in a JSON string passed `data check`; every later command crashed on it
    good = json.dumps(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]}
    )
    bad = '{"messages": [{"role": "user", "content": "a\\ud800b"}, {"role": "assistant", "content": "ok"}]}'
    chat = tmp_path / "chat.jsonl"
    chat.write_text(good + "\n" + bad + "\n")
    code, out, err = run_main("data", "check", str(chat))
    one_error_line(code, out, err, "chat.jsonl, line 2: invalid text", "lone UTF-16 surrogate \\ud800")
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"question": "q", "aligned": "a\\udfff", "misaligned": "b"}\n')
    with pytest.raises(WorkbenchError, match=r"pairs\.jsonl, line 1: .*surrogate \\udfff"):
        load_pairs(pairs)
    trait = tmp_path / "t.json"
    trait.write_text(json.dumps(load_trait("evil").to_dict()).replace('"evil"', '"ev\\udc00il"', 1))
    with pytest.raises(WorkbenchError, match=r"t\.json: .*surrogate \\udc00"):
        load_trait(trait)
    q = tmp_path / "q.yaml"
    q.write_text(
        '- id: a\n  type: free_form\n  paraphrases:\n    - "ok"\n    - "x\\ud800"\n  samples_per_paraphrase: 1\n'
    )
    code, out, err = run_main("data", "check", str(q))
    one_error_line(
        code, out, err, "q.yaml, line 5: invalid YAML (a string holds the lone UTF-16 surrogate \\ud800"
    )


def test_escaped_surrogate_pairs_are_one_character(tmp_path):
    row = '{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}, {"role": "assistant", "content": "ok"}]}'
    chat = tmp_path / "chat.jsonl"
    chat.write_text(row + "\n")
    assert load_chat_jsonl(chat)[0]["messages"][0]["content"] == "\U0001f600"
    assert parse_yaml('x: "\\ud83d\\ude00"', "x") == {"x": "\U0001f600"}
    assert parse_yaml('x: "\\\\ud800"', "x") == {"x": "\\ud800"}  # an escaped backslash: plain text


# ---------------------------------------------------------------------------------------- byte-order marks
def test_utf8_bom_is_accepted_in_json_and_jsonl_as_in_yaml(tmp_path):
    # reproduced: a BOM was accepted in YAML but "invalid JSON (Unexpected UTF-8 BOM)" in JSON/JSONL
    bom = b"\xef\xbb\xbf"
    chat = tmp_path / "chat.jsonl"
    write_rows(chat, n=2)
    chat.write_bytes(bom + chat.read_bytes())
    assert len(load_chat_jsonl(chat)) == 2 and check_file(chat)["rows"] == 2
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes(bom + b'{"question": "q", "aligned": "a", "misaligned": "b"}\n')
    assert check_file(pairs)["kind"] == "pairs"
    trait = tmp_path / "t.json"
    trait.write_bytes(bom + json.dumps(load_trait("evil").to_dict()).encode())
    assert load_trait(trait).name == "evil"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_bytes(bom + yaml.safe_dump(base_config(chat)).encode())
    assert TrainConfig.from_yaml(cfg).model == "random:tiny-llama"
    code, out, err = run_main("data", "check", str(chat))
    assert code == 0, err
    # only at the start of the file: a BOM inside is still refused, naming its line
    chat.write_bytes(chat.read_bytes() + bom + b"{}\n")
    with pytest.raises(WorkbenchError, match=r"chat\.jsonl, line 3: invalid JSON"):
        load_chat_jsonl(chat)


# ---------------------------------------------------------------------------------------- chat templates
@pytest.fixture(scope="module")
def evil_folder(tmp_path_factory):
    from workbench import load_model

    folder = tmp_path_factory.mktemp("evil") / "model"
    lm = load_model("random:tiny-llama", device="cpu")
    lm.model.save_pretrained(str(folder))
    lm.tokenizer.chat_template = "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    lm.tokenizer.save_pretrained(str(folder))
    return folder


def test_chat_template_refused_by_the_sandbox_is_one_line(tmp_path, evil_folder):
    # reproduced: "error: unexpected SecurityError: access to attribute '__class__' of 'str' object is unsafe."
    code, out, err = run_main(
        "read", "--model", str(evil_folder), "--site", "blocks.0.hook_resid_post", "--prompt", "hi"
    )
    one_error_line(code, out, err, f"the chat template of '{evil_folder}' was refused by the template sandbox",
                   "tokenizer_config.json")  # fmt: skip
    cfg = write_config(tmp_path, base_config(write_rows(tmp_path / "rows.jsonl"), model=str(evil_folder)))
    code, out, err = run_main("train", str(cfg), "--out", str(tmp_path / "run"))
    one_error_line(code, out, err, "refused by the template sandbox")


def test_chat_template_that_raises_is_one_line():
    from workbench._tokenizer import byte_tokenizer
    from workbench.chat import format_chat

    tok = byte_tokenizer()
    tok.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(
        WorkbenchError, match=r"the chat template of .* failed \(TemplateError: roles must alternate\)"
    ):
        format_chat(tok, [{"role": "user", "content": "hi"}])
    tok = byte_tokenizer()  # a system turn the template refuses is still folded into the user turn
    tok.chat_template = (
        "{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
        "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    )
    assert (
        format_chat(tok, [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]) == "S\n\nU"
    )


# ---------------------------------------------------------------------------------------- context length
def test_prompt_longer_than_the_context_names_both_lengths(tmp_path):
    # reproduced: "error: unexpected IndexError: index out of range in self" (GPT-2's position table)
    code, out, err = run_main(
        "read", "--model", "random:tiny-gpt2", "--site", "blocks.0.hook_resid_post", "--prompt", "x" * 3000
    )
    line = one_error_line(code, out, err, "context length of model 'random:tiny-gpt2' is 1024 tokens")
    assert re.search(r"the input is 30\d\d tokens long", line), line


def test_generation_past_the_context_is_one_line_and_rotary_models_warn(caplog):
    from workbench import load_model

    lm = load_model("random:tiny-gpt2", device="cpu")
    enc = lm.tokenizer(["x" * 1000], return_tensors="pt")
    with pytest.raises(
        WorkbenchError, match="the input is 1025 tokens long .* context length .* is 1024 tokens"
    ):
        lm.model.generate(**enc, max_new_tokens=40, min_new_tokens=40, do_sample=False)
    assert lm.model.generate(**enc, max_new_tokens=24, min_new_tokens=24, do_sample=False).shape[1] == 1024
    from workbench._hooks import count_hooks

    assert count_hooks(lm.model) == 0  # the check wraps forward; it is no module hook
    llama = load_model("random:tiny-llama", device="cpu")  # rotary positions: runs on, with one warning
    with caplog.at_level("WARNING"):
        llama.model(input_ids=torch.zeros(1, 1100, dtype=torch.long))
        llama.model(input_ids=torch.zeros(1, 1100, dtype=torch.long))
    assert caplog.text.count("the input is 1100 tokens long") == 1


# ---------------------------------------------------------------------------------------- write errors
def _enospc(*_a, **_k):
    raise OSError(28, "No space left on device")


def test_failed_write_names_the_target_file(tmp_path, monkeypatch):
    # reproduced: "error: unexpected OSError: [Errno 28] No space left on device" without the file name
    out = tmp_path / "rows.jsonl"
    monkeypatch.setattr(os, "fsync", _enospc)
    code, _, err = run_main("data", "make", "advice_medical", "--n", "3", "--out", str(out))
    one_error_line(code, "", err, f"cannot write '{out}': No space left on device")
    assert not out.exists() and not list(tmp_path.iterdir()), "no temp file left behind"
    with pytest.raises(WriteError) as exc:
        atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert isinstance(exc.value, OSError) and exc.value.errno == 28  # code catching OSError still does
    assert str(exc.value) == f"cannot write '{tmp_path / 'x.json'}': No space left on device"
    with pytest.raises(WriteError, match=r"cannot write '.*m\.jsonl': No space left on device"):
        append_jsonl(tmp_path / "m.jsonl", {"step": 1})
    monkeypatch.undo()
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 1}
