# Two entry points that work on a fresh machine (Debian with python3 >= 3.11, node and npm):
#   make demo   set up and run the whole system on this machine (`rotor demo`; no cluster needed)
#   make test   set up and run every check and test that CI runs
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: demo test setup setup-dev system-deps lint check pytest

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q -e '.[demo]'

setup-dev: $(BIN)/python system-deps
	$(BIN)/pip install -q -e '.[dev]'

# Real servers and compilers the tests use: promtool and prometheus (Debian), moc (npm).
system-deps:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian package prometheus"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null) \
	  || echo "WARNING: could not install prometheus (not root?); its tests will skip locally"; }
	@if [ -f canister/package.json ]; then npm ci --prefix canister --no-audit --no-fund --loglevel=error; fi

demo: setup
	$(BIN)/rotor demo

lint: setup-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

pytest: setup-dev
	$(BIN)/python -m pytest -q

test: lint pytest
