# Two entry points for people (README quick start) and one for CI (.ci/run calls `make test`).
# Each target creates .venv itself, so a fresh machine needs only python3 and make.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: demo test lint typecheck unit dist dashboard kubernetes bench clean

demo: $(VENV)/.runtime-installed
	$(BIN)/atlas-endpoint-monitor demo

test: lint typecheck unit dist

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint Dockerfile

typecheck: $(VENV)/.dev-installed
	$(BIN)/mypy --strict monitor grafana/dashboard.py deploy/kubernetes/prometheusrule.py

unit: $(VENV)/.dev-installed
	$(BIN)/pytest

# The release artefacts: an sdist and a wheel in dist/, with metadata and README that PyPI
# accepts (twine check --strict); part of `make test`, so CI builds them on every run.
dist: $(VENV)/.dev-installed
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/twine check --strict dist/*

# Regenerate grafana/dashboards/ from grafana/dashboard.py (tests fail until it is committed).
dashboard: $(VENV)/.dev-installed
	$(BIN)/python grafana/dashboard.py --write

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.runtime-installed

$(VENV)/.bench-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@ $(VENV)/.dev-installed $(VENV)/.runtime-installed

# Regenerate deploy/kubernetes/prometheusrule.yaml from config/prometheus/rules/ (tests fail
# until it is committed).
kubernetes: $(VENV)/.dev-installed
	$(BIN)/python deploy/kubernetes/prometheusrule.py --write

# Throughput, CPU, memory and /metrics latency of the daemon against the simulator, beside a
# plain requests + threads poller (bench/poll.py; minutes, not part of `make test`).
# Extra options: make bench BENCH_ARGS="--sizes 100,1000"
bench: $(VENV)/.bench-installed
	$(BIN)/python bench/poll.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache dist build
