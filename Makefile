# quantlab: the two commands are `make run` and `make test`; everything else is a convenience.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: run live test test-fast lint format typecheck contracts bench model clean help

help:
	@echo "make run        create .venv, install, run the main job on embedded defaults"
	@echo "make test       install test tools, then lint, type checks, import contracts, all tests"
	@echo "make test-fast  the quick loop: tests not marked slow"
	@echo "make live       run the engine live on the synthetic source until Ctrl-C"
	@echo "make bench      run the benchmarks in their --quick mode"
	@echo "make model      retrain and register the bundled models (needs the ml extra)"
	@echo "make lint | format | typecheck | contracts | clean"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Install stamps: re-run pip only when pyproject.toml changes.
$(VENV)/.run-deps: pyproject.toml | $(PY)
	$(PIP) -e . 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[dev,live,ml]' 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@ $(VENV)/.run-deps

run: $(VENV)/.run-deps
	$(BIN)/quantlab run

live: $(VENV)/.run-deps
	$(BIN)/quantlab live

bench: $(VENV)/.test-deps
	$(PY) benchmarks/bench_ingest.py --quick
	$(PY) benchmarks/bench_features.py --quick
	$(PY) benchmarks/bench_signals.py --quick
	$(PY) benchmarks/bench_execution.py --quick

# Retrains the bundled models; same seed and data give the same bytes, so an unchanged model
# keeps its version.
model: $(VENV)/.test-deps
	$(BIN)/quantlab model train --registry src/quantlab/_data/models
	$(BIN)/quantlab model train --registry src/quantlab/_data/models --name direction_gru \
		--kind gru --hidden 16 --epochs 2 --lr 1e-3

lint: $(VENV)/.test-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: $(VENV)/.test-deps
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks

typecheck: $(VENV)/.test-deps
	$(BIN)/mypy

contracts: $(VENV)/.test-deps
	$(BIN)/lint-imports

test: lint typecheck contracts
	$(PY) -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: $(VENV)/.test-deps
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs var
