#!/usr/bin/env bash
# Installs what the real-browser test of the explorer needs (tests/integration/test_app_browser.py):
# Debian's chromium at /usr/bin/chromium, and the playwright package in the project's virtualenv.
# Playwright's own browser download is never used (the test launches /usr/bin/chromium).
# Usage: .ci/install-browser.sh [PYTHON]   (default: .venv/bin/python beside this folder)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${1:-.venv/bin/python}"

if [ ! -x /usr/bin/chromium ]; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -q
    $SUDO apt-get install -y -q --no-install-recommends chromium
fi
/usr/bin/chromium --version 2>/dev/null  # its launcher script warns on stderr about a memory check

if ! "$PY" -c "import playwright" 2>/dev/null; then
    "$PY" -m pip install -q playwright
fi
"$PY" -c "import importlib.metadata as m; print('playwright', m.version('playwright'))"
