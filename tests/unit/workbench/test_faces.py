"""Faces that tell the truth: an underscore name is private to the package that owns it.

For an import of ``a.b._c`` (or ``from a.b import _x``, or ``from a.b._c import y``) the owning package is
``a.b``, the dotted path up to the first private segment; only modules inside ``a.b`` (dotted name starting
with ``a.b.``) may import it. Relative imports are resolved first. Dunder names (``__version__``) are not
private. Scope: every module of the shipped packages; tests and notebooks may reach in. The rule is about the
seams between this repository's packages: another project's private modules (``torch._dynamo``) are that
project's business.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

ROOT = REPO_ROOT
PACKAGES = ("workbench", "probes", "steering", "gating", "apps", "benchmarks")


def _private(segment: str) -> bool:
    return segment.startswith("_") and not (segment.startswith("__") and segment.endswith("__"))


def _module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of a source file and whether it is a package ``__init__``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    is_pkg = parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join(parts), is_pkg


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def _owner(dotted: str) -> str | None:
    """The package that owns ``dotted`` (the path before its first private segment), or None if public."""
    parts = dotted.split(".")
    for i, seg in enumerate(parts):
        if _private(seg):
            return ".".join(parts[:i])
    return None


def private_imports(source: str, module: str, is_pkg: bool) -> list[tuple[int, str, str]]:
    """``(line, imported name, owner)`` for every import in ``source`` of a name private to a package that
    does not contain ``module``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, is_pkg)
            targets = [f"{base}.{alias.name}" if alias.name != "*" else base for alias in node.names]
        for target in targets:
            owner = _owner(target)
            if not owner or owner.split(".")[0] not in PACKAGES:
                continue
            if not (module + ".").startswith(owner + "."):
                found.append((node.lineno, target, owner))
    return found


def violations(root: Path = ROOT) -> list[str]:
    """``file:line: imports X (private to Y)`` for every cross-package private import under ``root``."""
    out = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            module, is_pkg = _module_name(path, root)
            for line, target, owner in private_imports(path.read_text(encoding="utf-8"), module, is_pkg):
                out.append(f"{path.relative_to(root)}:{line}: imports {target} (private to {owner})")
    return out


@pytest.mark.parametrize(
    ("source", "module", "is_pkg", "expected"),
    [
        # inside the owner: allowed, absolute or relative
        ("from workbench._io import atomic_write_text", "workbench.training._loop", False, []),
        ("from .._io import read_text", "workbench.training._loop", False, []),
        ("from ._hooks import add_hooks", "workbench", True, []),
        ("from workbench.data._check import check_file", "workbench.data.organisms._load", False, []),
        # outside the owner: refused, whichever spelling
        (
            "from workbench.data._check import check_file",
            "workbench.evaluation",
            False,
            [(1, "workbench.data._check.check_file", "workbench.data")],
        ),
        ("import workbench._io", "probes._cli", False, [(1, "workbench._io", "workbench")]),
        ("from workbench import _io", "probes._cli", False, [(1, "workbench._io", "workbench")]),
        (
            "from workbench.cli import _load",
            "apps.demo",
            False,
            [(1, "workbench.cli._load", "workbench.cli")],
        ),
        (
            "from ..data import _check",
            "workbench.training._loop",
            False,
            [(1, "workbench.data._check", "workbench.data")],
        ),
        ("from gating import _gate", "gating._cli", False, []),
        (
            "from workbench._hooks import _first",
            "gating._gateset",
            False,
            [(1, "workbench._hooks._first", "workbench")],
        ),
        # public names and dunders are not private
        ("from workbench import __version__, load_model", "probes._cli", False, []),
        ("import workbench.io", "probes._cli", False, []),
        # only this repository's packages
        ("import torch._dynamo", "workbench._compiled", False, []),
    ],
)
def test_rule_resolves_owner_and_relative_imports(source, module, is_pkg, expected):
    assert private_imports(source, module, is_pkg) == expected


def test_scan_reports_file_and_line_of_a_planted_violation(tmp_path):
    """The scan walks real files: in a planted tree only the cross-package import is reported."""
    (tmp_path / "probes" / "sub").mkdir(parents=True)
    (tmp_path / "workbench").mkdir()
    (tmp_path / "probes" / "__init__.py").write_text("from ._x import f\n")
    (tmp_path / "probes" / "sub" / "__init__.py").write_text("")
    (tmp_path / "probes" / "sub" / "y.py").write_text(
        "import os\n\nfrom ...workbench._hooks import add_hooks\n"
    )
    (tmp_path / "workbench" / "__init__.py").write_text("from workbench._io import read_text\n")
    assert violations(tmp_path) == [
        "probes/sub/y.py:3: imports workbench._hooks.add_hooks (private to workbench)"
    ]


def test_no_module_imports_another_packages_private_names():
    found = violations()
    assert not found, f"{len(found)} private imports across packages:\n" + "\n".join(found)
