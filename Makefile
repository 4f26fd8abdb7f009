# Two set-up commands: `make demo` and `make test`. Both create and reuse .venv, installed from the
# committed lock (requirements.lock): a fresh machine gets exactly the versions the suite passed with.
# `make lock` re-resolves within pyproject.toml's ranges in a scratch venv, runs the suite there and,
# only if it passes, rewrites the lock.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed-stamp
LOCK   := requirements.lock
# pip itself is pinned too (pip freeze leaves it out); the machine's own pip configuration (its indexes
# and find-links, which provide the CPU build of torch) is used as it is: no index is named here.
PIP_VERSION   := 26.3
TORCH_VERSION := 2.13.0

.PHONY: demo test lint setup lock clean-venv

# The stamp depends on the lock and pyproject.toml: a change of either reinstalls; otherwise nothing runs.
# torch first (from the machine's CPU wheel), then every locked package with --no-deps (the lock is the
# complete, transitive set, so pip resolves nothing), then this project itself, editable, without deps.
$(STAMP): $(LOCK) pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==$(PIP_VERSION)
	$(PIP) install -q torch==$(TORCH_VERSION)
	$(PIP) install -q --no-deps -r $(LOCK)
	$(PIP) install -q --no-deps -e .
	$(PY) .ci/check_deps.py
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/workbench demo

test: $(STAMP)
	bash .ci/install-browser.sh $(PY)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q tests

lock:
	bash .ci/lock.sh $(PYTHON) $(PIP_VERSION) $(TORCH_VERSION) $(LOCK)

lint: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

clean-venv:
	rm -rf $(VENV)
