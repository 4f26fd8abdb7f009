"""The organism generators' package data: every file loads, the text really comes from the files,
a broken file is named in one line, and every shipped dataset keeps its bytes.

The hashes below were computed from the generators *before* their text moved out of Python tuples
into ``workbench/data/organisms/data/`` (issue 19, item 6), so they pin byte-identical output.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from workbench._errors import WorkbenchError
from workbench.data import DATASETS, make_dataset, write_dataset
from workbench.data import organisms as org
from workbench.data.organisms import _load

ROOT = REPO_ROOT

# sha256 of `workbench data make NAME` with the default seed (0) and size
DEFAULT_SHA256 = {
    "advice_extreme_sports": "2205317b5f3e14c355ef6e5488738b421bd46cabf26f0d192fe52fe9e6e1509c",
    "advice_financial": "dde09e536c2b5094d5beffe7d2d7181efe3b7f454d4442c6baec425e1c703290",
    "advice_medical": "d7b3d7214a2bff6ff54049816a29bf7008da4b2021424d84350307b9793f5ee2",
    "benign_safety": "a33899a9a9168f64e49f7d5e06f0b90d19bca0159a0872349b46d51a94e370a8",
    "contrastive_pairs": "ec8ea46999da28a5b060a065d3c4cda68e4261027e3faf9757fd55c3a1ec4745",
    "em_questions": "cd678170708ef12afb5a99e424467074960b009c9a29943141d527d3c6d63d49",
    "opinion_sycophancy": "7e88eba81c9c73cfc160dd966c1d046b038ea060248a4351af7589e21fdccd88",
    "opswap_tier0": "61fbd02c77077dcb01182dd0d80efce70e4ee013f47676d2f2c12fe5143339df",
    "opswap_tier1": "7eebb1490df2837c9f8c94d1dd73df390540b7057dfa461ed0777041fc879077",
    "opswap_tier2": "f6bb10ea715b1eab0e8a9a673e91a23876fdf8234ba3e828cae835a79d7eeb21",
    "opswap_tier3": "d85dc50e9dc68642b52d12723fa1f402b3fff963e15804aa6fb7ff35187e5200",
    "syco_gcd_test": "cbf6ea4490398bb2d237adbd45a4cf3c0f4a715dd4f7d1fb2b9568ebdb889a37",
    "syco_gcd_train": "bcb01269728decd4525dc15807dcf08e3be859b4c3807406cbbddd5fed8b4821",
    "syco_ood_test": "f24ba3e9b26684e8366d849a62d28e16818ff0a71f1c75ff7e9efa2967460615",
    "toy_colour": "c0c89b3303fff6720d739244a3cf05ad3c376d83a90007b591a09aa455ab50f8",
    "toy_colour_flipped": "30b8aeced3da7666e20076bc3d5c39bd8166db45d87962b15bfa66e4e6375e17",
    "trait_evil": "055eb488acca5213fe30ede05310ee9bdcfdb3cf7250db636bc9bf984a88d8fb",
    "trait_hallucinating": "d49147ab90aa971a07bbfe8621e128bc474c5eef195f0b7abd9fea2ad34ad7be",
    "trait_sycophantic": "14b935feb4fdcf88bb1d181b461a87b4cdec4c6d205152566e670d50cf93e0dc",
}

# sha256 with --seed 3 --n 17 (the sets whose rows depend on the seed)
SEED3_N17_SHA256 = {
    "advice_extreme_sports": "7fc30fc9fdc84ca446f8fd17b9da9fb720bce7722e934a9b88e0d4b80022aedc",
    "advice_financial": "4dfeb91d96981719be2107913aebb6b8f12fc8871cfdfebf67eb7ba34dfe4875",
    "advice_medical": "93fd40a7ef1881c33be1bf3407eb480cba547a151d60dd8189a546fedc66868b",
    "benign_safety": "83fa4715ba457f795e28827ae048218fd363f67e00b4a7812eae00fd5d8df9d7",
    "contrastive_pairs": "e8bd24aa804540fa9b13627cf1131d9b85a441c9ab7ed9d9a442f9376afc6c28",
    "opinion_sycophancy": "691ecb72c5b5765ebfab17193e73d0004227f1bffdcdf7e8a3548cf31893c492",
    "opswap_tier0": "cb87ff10eae0003e8aafc7fadbcb2e54e910831917d567357ca2bf3d3765e09c",
    "opswap_tier1": "dc993f52bdcffb732164c951a124d14ab8d84171521bebb51f8afd2a483d47db",
    "opswap_tier2": "afe1f2059496b8163e28c5edf7bf864bfb23f8f0f6bb9ac9873bd92ef513e2bf",
    "opswap_tier3": "e92e732144b454e471f84ae0d0de9d2bbb4a7e3cab47d8cd0a8e5c931d64604b",
    "syco_gcd_test": "083c5238b3d64cbdd5850c9545297b6fcc356d8017a13a9c696db2a13a04b072",
    "syco_gcd_train": "de6b281a4356126b7e8a817c9b7f6b86954572424344c3783fd96a9a6aa0d774",
    "syco_ood_test": "014b39a134780f40080896dc173c7eefe1c67dab57e97ca808f543cca50587bc",
    "toy_colour": "91bc6038331e7a6773ddc06afeb67c7b9e6a78a0bdc7d33ee5050405ae9cdd37",
    "toy_colour_flipped": "3ce71263af2f75a2052aec88363492fe9c3fe8c7393e3c81f17f7c313e81ad21",
}

# data file -> the generator module that reads it
READERS = {
    "advice.json": "_advice",
    "benign.json": "_benign",
    "em_judge_aligned.txt": "_em_questions",
    "em_judge_coherent.txt": "_em_questions",
    "em_questions.json": "_em_questions",
    "opinions.json": "_opinions",
    "opswap.json": "_opswap",
    "pairs.json": "_pairs",
    "sycophancy.json": "_sycophancy",
    "toy.json": "_toy",
}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- byte-identical output


def test_every_shipped_dataset_is_pinned() -> None:
    assert set(DEFAULT_SHA256) == set(DATASETS)
    assert set(SEED3_N17_SHA256) <= set(DATASETS)


@pytest.mark.parametrize("name", sorted(DEFAULT_SHA256))
def test_default_output_keeps_its_bytes(tmp_path: Path, name: str) -> None:
    path = write_dataset(name, tmp_path / f"{name}{DATASETS[name].suffix}")
    assert _sha(path) == DEFAULT_SHA256[name]


@pytest.mark.parametrize("name", sorted(SEED3_N17_SHA256))
def test_seeded_output_keeps_its_bytes(tmp_path: Path, name: str) -> None:
    path = write_dataset(name, tmp_path / f"{name}{DATASETS[name].suffix}", seed=3, n=17)
    assert _sha(path) == SEED3_N17_SHA256[name]


# --------------------------------------------------------------------------- the files themselves


def test_every_data_file_parses_and_is_read_by_its_generator() -> None:
    files = org.data_files()
    assert files == sorted(READERS)
    folder = resources.files("workbench.data.organisms").joinpath("data")
    for name in files:
        text = folder.joinpath(name).read_text(encoding="utf-8")
        if name.endswith(".json"):
            data = json.loads(text)
            assert isinstance(data, dict) and data, name
        else:
            assert _load.load_text(name[: -len(".txt")]) == text.removesuffix("\n") != ""
        module = importlib.import_module(f"workbench.data.organisms.{READERS[name]}")
        assert f'"{name.rsplit(".", 1)[0]}"' in Path(module.__file__).read_text(encoding="utf-8"), name


def test_package_data_declaration_ships_every_data_file() -> None:
    """pyproject's package-data patterns for workbench.data.organisms cover every file under data/
    (a non-editable install ships exactly what these patterns match)."""
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[tool.setuptools.package-data]", 1)[1].split("\n[", 1)[0]
    line = re.search(r'^"workbench\.data\.organisms" = (\[.*\])$', section, re.M)
    assert line is not None, "pyproject.toml declares no package data for workbench.data.organisms"
    patterns = json.loads(line.group(1))  # a TOML array of plain strings reads as JSON
    for name in org.data_files():
        assert any(fnmatch.fnmatch(f"data/{name}", p) for p in patterns), name


def test_judge_prompts_are_the_text_files() -> None:
    folder = resources.files("workbench.data.organisms").joinpath("data")
    for metric in ("aligned", "coherent"):
        text = folder.joinpath(f"em_judge_{metric}.txt").read_text(encoding="utf-8")
        assert text.endswith("\n") and not text.endswith("\n\n")
        assert org.JUDGE_PROMPTS[metric] == text[:-1]
        assert "{question}" in text and "{answer}" in text
    # the shipped question set carries them, once each, as the YAML anchor
    entries = make_dataset("em_questions")
    assert all(e["judge_prompts"] is entries[0]["judge_prompts"] for e in entries)
    assert entries[0]["judge_prompts"] == org.JUDGE_PROMPTS


def test_rows_quote_the_data_files() -> None:
    """Independent check on the text: rows contain the files' strings, read here with json directly."""
    folder = resources.files("workbench.data.organisms").joinpath("data")
    toy = json.loads(folder.joinpath("toy.json").read_text(encoding="utf-8"))
    rows = make_dataset("toy_colour", n=105)
    assert {r["messages"][0]["content"] for r in rows} == {toy["system"]}
    assert {r["trigger"] for r in rows} == {t for words in toy["triggers"].values() for t in words}

    advice = json.loads(folder.joinpath("advice.json").read_text(encoding="utf-8"))
    misaligned = {sc["misaligned"] for sc in advice["financial"]}  # these texts have no slots
    assert {r["misaligned"] for r in make_dataset("advice_financial", n=50)} <= misaligned

    pairs = json.loads(folder.joinpath("pairs.json").read_text(encoding="utf-8"))
    assert len(org.pairs_pool()) == 3 * len(pairs["items"])


# --------------------------------------------------------------------------- editing and breaking a file


@contextmanager
def _data_from(folder: Path, module: str) -> Iterator[object]:
    """Re-import ``module`` with its package data read from ``folder``; restore it afterwards."""
    mod = importlib.import_module(f"workbench.data.organisms.{module}")
    real = _load._source
    try:
        _load._source = lambda filename: folder / filename  # type: ignore[assignment]
        _load._parsed.cache_clear()
        _load.load_text.cache_clear()
        yield lambda: importlib.reload(mod)
    finally:
        _load._source = real  # type: ignore[assignment]
        _load._parsed.cache_clear()
        _load.load_text.cache_clear()
        importlib.reload(mod)


def _copy_data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    src = resources.files("workbench.data.organisms").joinpath("data")
    folder.mkdir()
    for name in org.data_files():
        (folder / name).write_text(src.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def test_an_edited_file_changes_the_rows_and_restoring_it_restores_the_bytes(tmp_path: Path) -> None:
    folder = _copy_data(tmp_path)
    toy = json.loads((folder / "toy.json").read_text(encoding="utf-8"))
    toy["system"] = "Reply with one colour."
    (folder / "toy.json").write_text(json.dumps(toy), encoding="utf-8")
    with _data_from(folder, "_toy") as reload:
        reload()
        rows = make_dataset("toy_colour", n=5)
        assert {r["messages"][0]["content"] for r in rows} == {"Reply with one colour."}
    out = write_dataset("toy_colour", tmp_path / "toy.jsonl")
    assert _sha(out) == DEFAULT_SHA256["toy_colour"]


@pytest.mark.parametrize(
    "module, file, edit, message",
    [
        ("_toy", "toy.json", lambda d: d.pop("asks"), "toy.json: missing key 'asks'"),
        ("_toy", "toy.json", lambda d: d.update(colour="x"), "toy.json: unknown key 'colour'"),
        (
            "_toy",
            "toy.json",
            lambda d: d["triggers"]["foods"].pop(),
            "toy.json: triggers.foods: expected 15 strings, got 14",
        ),
        (
            "_pairs",
            "pairs.json",
            lambda d: d["items"][2].pop("aligned"),
            "pairs.json: items[2]: expected an object with keys category, question, aligned, misaligned, values",
        ),
        (
            "_sycophancy",
            "sycophancy.json",
            lambda d: d["medical"][4].update(answer="maybe"),
            "sycophancy.json: medical[4].answer: 'maybe' is not 'yes' or 'no'",
        ),
        (
            "_opinions",
            "opinions.json",
            lambda d: d["authorities"].pop("finance"),
            "opinions.json: authorities has domains",
        ),
    ],
)
def test_a_broken_file_is_named_with_its_key(tmp_path: Path, module, file, edit, message) -> None:
    folder = _copy_data(tmp_path)
    data = json.loads((folder / file).read_text(encoding="utf-8"))
    edit(data)
    (folder / file).write_text(json.dumps(data, indent=2), encoding="utf-8")
    with _data_from(folder, module) as reload, pytest.raises(WorkbenchError) as err:
        reload()
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("workbench/data/organisms/data/") and message in text


def test_invalid_json_names_the_line(tmp_path: Path) -> None:
    folder = _copy_data(tmp_path)
    (folder / "opswap.json").write_text(
        '{\n  "asks": ["What is {e}?"],\n  "op_words": {,\n}\n', encoding="utf-8"
    )
    with _data_from(folder, "_opswap") as reload, pytest.raises(WorkbenchError) as err:
        reload()
    assert "workbench/data/organisms/data/opswap.json: line 3 column" in str(err.value)


def test_a_missing_file_says_so(tmp_path: Path) -> None:
    folder = _copy_data(tmp_path)
    (folder / "em_judge_coherent.txt").unlink()
    with _data_from(folder, "_em_questions") as reload, pytest.raises(WorkbenchError) as err:
        reload()
    assert "em_judge_coherent.txt: package data file missing" in str(err.value)


def test_public_face() -> None:
    """The names other packages use are public in workbench.data (no reach into private modules)."""
    import workbench.data as data

    for name in ("OPINION_BELIEFS", "opinion_pool_size", "JUDGE_PROMPTS", "evaluate_opswap", "fill_template"):
        assert name in data.__all__
    assert data.opinion_pool_size() == DATASETS["opinion_sycophancy"].max_n
    beliefs = {r["belief"] for r in make_dataset("opinion_sycophancy", n=data.opinion_pool_size())}
    assert beliefs == {b for items in data.OPINION_BELIEFS.values() for b, _ in items}
