"""Damaged artifacts and safe loading.

- Artifacts: truncated safetensors files, flipped bytes, garbage in the workbench header keys and tensors of
  the wrong shape all end in a one-line ``WorkbenchError`` (or a clean load), never another exception.
- Safe loading: ``.pt`` files are read with ``weights_only=True`` (a pickle payload never runs), model code
  from a folder runs only with ``trust_remote_code``, YAML is read with the safe loader, and the explorer
  resolves every user path inside its run root (fuzzed with ``..``, absolute paths and symlinks).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from tests.helpers import REPO_ROOT, load_tiny
from tests.unit.reliability.test_reliability_inputs import event
from tests.unit.reliability.test_reliability_inputs import fuzz as _fuzz
from workbench import WorkbenchError, load_artifact, load_model, save_artifact

ROOT = REPO_ROOT


def fuzz(n: int) -> settings:
    return _fuzz(n, suppress=(HealthCheck.function_scoped_fixture,))


def assert_clear(exc: BaseException, path: Path) -> str:
    event("rejected")
    assert isinstance(exc, WorkbenchError), f"{type(exc).__name__} escaped: {exc!r}"
    msg = str(exc)
    assert msg and "\n" not in msg, f"not one line: {msg!r}"
    assert str(path) in msg, f"the file is not named: {msg!r}"
    return msg


@contextlib.contextmanager
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@pytest.fixture(scope="module")
def artifact_bytes() -> bytes:
    """A valid persona-vector artifact for the tiny Llama, as bytes."""
    lm = load_tiny("tiny-llama")
    with scratch() as d:
        path = save_artifact(
            d / "v.safetensors",
            {"response_avg": torch.randn(3, 64), "prompt_avg": torch.randn(3, 64)},
            kind="persona_vector",
            fingerprint=lm.fingerprint,
            metadata={"trait": "evil", "site": "blocks.{l}.hook_resid_post", "per_statistic": {}},
        )
        return path.read_bytes()


# ---------------------------------------------------------------------------------------- damaged files
@fuzz(80)
@given(cut=st.floats(0.0, 0.999))
def test_truncated_artifact_is_a_clear_error(artifact_bytes, cut):
    with scratch() as d:
        path = d / "cut.safetensors"
        path.write_bytes(artifact_bytes[: int(len(artifact_bytes) * cut)])
        with pytest.raises(WorkbenchError) as err:
            load_artifact(path, expect_kind="persona_vector")
        assert_clear(err.value, path)


@fuzz(120)
@given(flips=st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)), min_size=1, max_size=4))
def test_flipped_bytes_load_or_fail_clearly(artifact_bytes, flips):
    data = bytearray(artifact_bytes)
    header_end = 8 + int.from_bytes(data[:8], "little")
    for where, mask in flips:  # most flips land in the JSON header, where they do damage
        i = int(where * min(len(data), header_end + 64))
        data[i] ^= mask
    with scratch() as d:
        path = d / "flipped.safetensors"
        path.write_bytes(bytes(data))
        try:
            art = load_artifact(path, fingerprint=load_tiny("tiny-llama").fingerprint)
        except Exception as exc:  # noqa: BLE001 - the assertion decides
            assert_clear(exc, path)
        else:
            event("accepted")
            assert all(isinstance(t, torch.Tensor) for t in art.tensors.values())


header_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["null", "[]", "[1, 2]", '"x"', "{", "1" * 5000, "[" * 5000, "NaN", "{}"]),
    st.dictionaries(st.sampled_from(["architecture", "n_layers", "d_model", "n_heads", "vocab_size", "x"]),
                    st.one_of(st.integers(-5, 10**6), st.text(max_size=5), st.none(), st.floats()),
                    max_size=6).map(json.dumps),
)  # fmt: skip


@fuzz(150)
@given(meta=header_text, fp=header_text, kind=st.sampled_from(["persona_vector", "gates", "", "x\ny"]))
def test_garbage_in_workbench_header_keys_is_a_clear_error(meta, fp, kind):
    lm = load_tiny("tiny-llama")
    with scratch() as d:
        path = d / "meta.safetensors"
        header = {"workbench.kind": kind, "workbench.metadata": meta, "workbench.fingerprint": fp}
        save_file({"response_avg": torch.zeros(3, 64)}, str(path), metadata=header)
        for kw in ({}, {"expect_kind": "persona_vector", "fingerprint": lm.fingerprint}):
            try:
                art = load_artifact(path, **kw)
            except Exception as exc:  # noqa: BLE001
                assert_clear(exc, path)
            else:
                event("accepted")
                assert isinstance(art.metadata, dict)
                if kw:
                    assert art.fingerprint is not None and art.fingerprint.compatible(lm.fingerprint)


@fuzz(40)
@given(shape=st.lists(st.integers(0, 70), min_size=1, max_size=3))
@example(shape=[3, 64])
def test_persona_vector_of_wrong_shape_is_refused(shape):
    from probes import load_vectors

    lm = load_tiny("tiny-llama")
    with scratch() as d:
        path = save_artifact(
            d / "v.safetensors",
            {"response_avg": torch.zeros(*shape)},
            kind="persona_vector",
            fingerprint=lm.fingerprint,
            metadata={"trait": "x"},
        )
        try:
            vecs = load_vectors(path, fingerprint=lm.fingerprint)
        except Exception as exc:  # noqa: BLE001
            event("rejected")
            assert isinstance(exc, WorkbenchError) and "\n" not in str(exc), repr(exc)
            assert tuple(shape) != (3, 64)
        else:
            event("accepted")
            assert tuple(shape) == (3, 64) and vecs["response_avg"].vectors.shape == (3, 64)


def test_gates_of_wrong_shape_are_refused(tmp_path):
    from safetensors import safe_open

    from gating import GateSet

    lm = load_tiny("tiny-llama")
    path = GateSet.create(lm, kind="per_channel", layers=[0, 2]).save(tmp_path / "gates.safetensors")
    with safe_open(str(path), framework="pt") as fh:
        header, tensors = fh.metadata(), {k: fh.get_tensor(k) for k in fh.keys()}
    for name in sorted(tensors):
        bad = dict(tensors)
        bad[name] = torch.zeros(*[n + 1 for n in tensors[name].shape])
        save_file(bad, str(tmp_path / "bad.safetensors"), metadata=header)
        with pytest.raises(WorkbenchError, match=r"bad\.safetensors.*has shape"):
            GateSet.load(tmp_path / "bad.safetensors", lm)
    fewer = dict(tensors)
    fewer.pop(sorted(fewer)[0])
    save_file(fewer, str(tmp_path / "fewer.safetensors"), metadata=header)
    with pytest.raises(WorkbenchError, match=r"fewer\.safetensors.*do not match its metadata"):
        GateSet.load(tmp_path / "fewer.safetensors", lm)
    other = load_tiny("tiny-qwen2")
    with pytest.raises(WorkbenchError, match="another model"):
        GateSet.load(path, other)


def test_a_directory_or_foreign_file_as_artifact(tmp_path):
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(WorkbenchError, match="is a directory"):
        load_artifact(tmp_path / "dir.safetensors")
    pt = tmp_path / "tensor.safetensors"
    torch.save(torch.zeros(2), pt)  # a pickle zip under a safetensors name
    with pytest.raises(WorkbenchError) as err:
        load_artifact(pt)
    assert_clear(err.value, pt)


# ---------------------------------------------------------------------------------------- no pickle
class _Payload:
    """Unpickling this runs ``open(marker, "w")`` - what a hostile .pt file would do."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_payload_in_pt_file_never_runs(tmp_path):
    from probes import import_pt

    marker = tmp_path / "pwned"
    path = tmp_path / "vectors.pt"
    torch.save({"response_avg": torch.zeros(4, 64), "x": _Payload(str(marker))}, path)
    with pytest.raises(WorkbenchError, match=r"vectors\.pt' is not a plain tensor file"):
        import_pt(path)
    assert not marker.exists(), "unpickling ran code"


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            full = (
                f"{getattr(f.value, 'id', '')}.{f.attr}"
                if isinstance(f, ast.Attribute)
                else getattr(f, "id", "")
            )
            if full == name:
                out.append(node)
    return out


LIBRARY = ["workbench", "probes", "steering", "gating", "apps", "benchmarks"]


def _library_sources() -> list[Path]:
    return [p for pkg in LIBRARY if (ROOT / pkg).exists() for p in sorted((ROOT / pkg).rglob("*.py"))]


def test_library_code_never_unpickles_and_never_trusts_remote_code_by_itself():
    assert len(_library_sources()) > 50
    for path in _library_sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        where = path.relative_to(ROOT)
        for call in _calls(tree, "torch.load"):
            kw = {k.arg: k.value for k in call.keywords}
            assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, (
                f"{where}:{call.lineno}: torch.load without weights_only=True"
            )
        for name in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load"):
            assert not _calls(tree, name), f"{where}: {name} (use safetensors / yaml.safe_load)"
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), (
                    f"{where}:{node.value.lineno}: trust_remote_code=True hard-coded"
                )


# ---------------------------------------------------------------------------------------- remote code
@pytest.fixture
def custom_code_folder(tmp_path, monkeypatch):
    """A model folder whose config points at custom Python code that leaves a marker when imported."""
    import transformers.dynamic_module_utils as dmu

    from workbench._tokenizer import byte_tokenizer

    folder = tmp_path / "custom_model"
    folder.mkdir()
    marker = tmp_path / "custom_code_ran"
    (folder / "config.json").write_text(
        json.dumps(
            {
                "model_type": "wb_reliability_custom",
                "architectures": ["WbCustomModel"],
                "auto_map": {
                    "AutoConfig": "custom_code.WbConfig",
                    "AutoModelForCausalLM": "custom_code.WbCustomModel",
                },
            }
        )
    )
    (folder / "custom_code.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).write_text('ran')\n"
        "from transformers import PretrainedConfig\n"
        "class WbConfig(PretrainedConfig):\n    model_type = 'wb_reliability_custom'\n"
        "class WbCustomModel:\n    pass\n"
    )
    byte_tokenizer().save_pretrained(str(folder))
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf_modules"))  # keep ~/.cache clean
    return folder, marker


def test_custom_model_code_runs_only_with_the_flag(custom_code_folder):
    folder, marker = custom_code_folder
    with pytest.raises(WorkbenchError, match="contains custom model code.*--trust-remote-code") as err:
        load_model(str(folder))
    assert "\n" not in str(err.value) and not marker.exists()
    with pytest.raises(WorkbenchError, match="could not load the model"):  # the toy code is no real model
        load_model(str(folder), trust_remote_code=True)
    assert marker.exists(), "with the flag the folder's code does run"


def test_cli_info_refuses_custom_code_without_the_flag(custom_code_folder):
    from tests.unit.reliability.test_reliability_inputs import run_main

    folder, marker = custom_code_folder
    code, out, err = run_main("info", "--model", str(folder))
    assert code == 2 and "Traceback" not in out + err
    assert err.startswith("error: ") and "--trust-remote-code" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists()


# ---------------------------------------------------------------------------------------- explorer paths
_parts = st.lists(
    st.sampled_from(["..", ".", "a", "b", "link_out", "link_in", "~", "", "/", "a/../.."]), max_size=5
)


@fuzz(200)
@given(parts=_parts, absolute=st.booleans())
def test_explorer_never_resolves_outside_its_root(tmp_path_factory, parts, absolute):
    from apps._runs import resolve_inside

    base = tmp_path_factory.getbasetemp() / "explorer_fuzz"
    root = base / "root"
    if not root.exists():
        (root / "a" / "b").mkdir(parents=True)
        (base / "outside").mkdir()
        os.symlink(base / "outside", root / "link_out")
        os.symlink(root / "a", root / "a" / "link_in")
    text = os.path.join(*parts) if parts else ""
    if absolute:
        text = str(root) + "/" + text
    real_root = root.resolve()
    try:
        got = resolve_inside(root, text)
    except WorkbenchError as exc:
        event("refused")
        assert "outside the run root" in str(exc) and "\n" not in str(exc)
    else:
        event("resolved inside")
        assert got == real_root or real_root in got.parents, f"{text!r} -> {got}"
