# qlib-alpaca-trader — every target does its own setup, so `make demo` and `make test` are all a
# newcomer needs. Run `make help` for the list.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
# uv from PATH, else the copy `make setup` installs with pip (run as a module: no PATH change needed).
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
RUN := $(UV) run --frozen

.PHONY: help setup demo test test-fast lint fmt bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## install uv (with pip) if missing, then the locked environment into .venv
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 \
		|| { echo "uv not found: installing it with pip"; $(PYTHON) -m pip install --quiet uv; }
	@$(UV) sync --frozen --quiet
	@$(RUN) pre-commit install >/dev/null 2>&1 || true

demo: setup ## run the main job on embedded defaults (SQLite, local files, built-in paper broker)
	@$(RUN) python -m trader.demo

test: setup lint ## lint, type-check and run the whole test suite (needs PostgreSQL and Redis; see README)
	@$(RUN) pytest

test-fast: setup ## unit tests only
	@$(RUN) pytest tests/unit -q

lint: setup ## ruff (lint + format check) and mypy
	@$(RUN) ruff check src tests bench
	@$(RUN) ruff format --check src tests bench
	@$(RUN) mypy

fmt: setup ## format and auto-fix
	@$(RUN) ruff format src tests bench
	@$(RUN) ruff check --fix src tests bench

bench: setup ## run the benchmarks under bench/, results in bench/results/*.json
	@$(RUN) python -m bench

clean: ## remove the embedded state (var/, data/, artifacts/) - asks first
	@read -r -p "Delete var/, data/ and artifacts/? [y/N] " a && [ "$$a" = y ] && rm -rf var data artifacts || echo "kept"
