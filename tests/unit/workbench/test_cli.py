"""The CLI: help on every command, one-line errors with a non-zero exit."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from tests.helpers import load_tiny
from workbench import save_artifact


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "workbench", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_commands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("info", "read", "inspect", "demo"):
        assert cmd in r.stdout


def test_info_on_tiny_model():
    r = run_cli("info", "--model", "random:tiny-gemma2")
    assert r.returncode == 0, r.stderr
    assert "layers: 3" in r.stdout and "d_model: 64" in r.stdout and "attn.hook_z" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["info", "--model", "bogus-model"], "unknown model spec 'bogus-model'"),
        (
            ["read", "-m", "random:tiny-llama", "--site", "blocks.0.hook_bad", "--prompt", "x"],
            "blocks.0.hook_bad",
        ),
        (
            ["read", "-m", "random:tiny-llama", "--site", "blocks.7.hook_resid_post", "--prompt", "x"],
            "layer 7",
        ),
    ],
)
def test_bad_input_is_one_line_error(args, needle):
    r = run_cli(*args)
    assert r.returncode == 2
    err = r.stderr.strip()
    assert (
        err.startswith("error: ") and needle in err and "Traceback" not in err and len(err.splitlines()) == 1
    )


def test_inspect_refuses_artifact_for_other_model(tmp_path):
    lm = load_tiny("tiny-llama")
    path = save_artifact(
        tmp_path / "v.safetensors",
        {"v": torch.zeros(3, 64)},
        kind="persona_vector",
        fingerprint=lm.fingerprint,
    )
    ok = run_cli("inspect", str(path), "--model", "random:tiny-llama")
    assert ok.returncode == 0 and "fits model random:tiny-llama: yes" in ok.stdout
    bad = run_cli("inspect", str(path), "--model", "random:tiny-gpt2")
    assert bad.returncode == 2 and "another model" in bad.stderr and "gpt2" in bad.stderr


def test_read_prints_shapes():
    r = run_cli(
        "read",
        "-m",
        "random:tiny-qwen3",
        "-s",
        "blocks.2.attn.hook_z",
        "-s",
        "blocks.0.hook_mlp_out",
        "-p",
        "hi",
    )
    assert r.returncode == 0, r.stderr
    assert "blocks.2.attn.hook_z" in r.stdout and ", 4, 16)" in r.stdout


def test_debug_shows_traceback():
    r = run_cli("--debug", "info", "--model", "bogus-model")
    assert r.returncode != 0 and "Traceback" in r.stderr
