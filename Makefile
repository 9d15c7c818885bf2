# quantlab: the two commands are `make run` and `make test`; everything else is a convenience.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: run live lab dashboard test test-fast notebooks lint format typecheck contracts bench reliability model clean help

help:
	@echo "make run        create .venv, install, run the main job on embedded defaults"
	@echo "make test       install test tools, then lint, type checks, import contracts, all tests"
	@echo "make test-fast  the quick loop: tests not marked slow, without the reliability suite"
	@echo "make live       run the engine live on the synthetic source until Ctrl-C"
	@echo "make lab        JupyterLab on the quantlab kernel (notebooks/research, notebooks/production)"
	@echo "make notebooks  run every notebook under nbval (part of make test)"
	@echo "make dashboard  the live dashboard on http://127.0.0.1:5006/dashboard (run make live beside it)"
	@echo "make bench      every benchmark in its --quick mode, one table (quantlab bench --quick)"
	@echo "make reliability the reliability suite and its report (quantlab check reliability)"
	@echo "make model      retrain and register the bundled models (needs the ml extra)"
	@echo "make lint | format | typecheck | contracts | clean"

$(PY):
	$(PYTHON) -m venv $(VENV)

# Install stamps: re-run pip only when pyproject.toml changes.
$(VENV)/.run-deps: pyproject.toml | $(PY)
	$(PIP) -e . 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@

$(VENV)/.test-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[dev,live,ml,db]' 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@ $(VENV)/.run-deps

$(VENV)/.lab-deps: pyproject.toml | $(PY)
	$(PIP) -e '.[research,live,ml]' 2> >(grep -v "is ignored: it is neither" >&2)
	@touch $@ $(VENV)/.run-deps

# The `quantlab` Jupyter kernel: this venv's python, registered inside the venv.
KERNEL := $(VENV)/share/jupyter/kernels/quantlab/kernel.json
$(KERNEL): $(VENV)/.run-deps
	$(PY) -m ipykernel install --sys-prefix --name quantlab --display-name "Python (quantlab)" >/dev/null

# Debian packages the tests use: chromium for the dashboard's browser tests (Playwright drives
# it; it never downloads a browser), PostgreSQL and redis-server, which the tests start
# themselves on 127.0.0.1 (throwaway instances, stopped at the end).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
SYSTEM_PACKAGES := chromium postgresql redis-server
$(VENV)/.system-deps: | $(PY)
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/redis-server ] || \
	    ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		$(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $(SYSTEM_PACKAGES) >/dev/null); \
	fi
	@touch $@

# `make run`: the production notebook on its embedded defaults, through papermill.
run: $(VENV)/.run-deps $(KERNEL)
	$(BIN)/quantlab run

dashboard: $(VENV)/.run-deps
	$(BIN)/quantlab dashboard

lab: $(VENV)/.lab-deps $(KERNEL)
	$(BIN)/jupyter lab --ip 127.0.0.1 --no-browser --notebook-dir notebooks

live: $(VENV)/.run-deps
	$(BIN)/quantlab live

bench: $(VENV)/.test-deps $(VENV)/.system-deps
	$(BIN)/quantlab bench --quick

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

# The tests start their servers (redis-server, PostgreSQL, chroma) on 127.0.0.1 and stop them;
# whatever a killed test process left behind is stopped afterwards, pass or fail.
STOP_SERVICES := $(PY) -m quantlab.testing.services --stop-leftovers

test: lint typecheck contracts $(KERNEL) $(VENV)/.system-deps
	$(PY) -m pytest -n 2 --dist loadfile -m "not reliability" $(PYTEST_ARGS); status=$$?; \
		$(STOP_SERVICES); exit $$status
	$(MAKE) --no-print-directory reliability RELIABILITY_OUT=$$(mktemp -d)
	$(MAKE) --no-print-directory notebooks

test-fast: $(VENV)/.test-deps $(KERNEL) $(VENV)/.system-deps
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow and not reliability" $(PYTEST_ARGS); \
		status=$$?; $(STOP_SERVICES); exit $$status

# The reliability suite (tests/reliability) and its report: reports/reliability/ by default.
RELIABILITY_OUT ?= reports/reliability
reliability: $(VENV)/.test-deps $(VENV)/.system-deps
	$(BIN)/quantlab check reliability --out $(RELIABILITY_OUT); status=$$?; $(STOP_SERVICES); \
		exit $$status

# Every notebook top to bottom on the quantlab kernel (nbval, outputs not compared except
# cells marked NBVAL_CHECK_OUTPUT); runs go to a scratch folder, not ./runs.
notebooks: $(VENV)/.test-deps $(KERNEL)
	scratch=$$(mktemp -d) && trap 'rm -rf "$$scratch"' EXIT && \
	QUANTLAB_STORAGE__RUNS_DIR=$$scratch/runs QUANTLAB_STORAGE__STATE_DIR=$$scratch/state \
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadscope --nbval-lax \
		--nbval-kernel-name quantlab --nbval-cell-timeout=180 \
		--nbval-sanitize-with tests/nbval_sanitize.cfg -o addopts="" -o testpaths="" notebooks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache runs var
