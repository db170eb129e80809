# Quick start: `make demo` (install + run the default backtest) and `make test` (install + suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint install clean

$(BIN)/python:
	@test -n "$(PYTHON)" || { echo "error: no python3.11 found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 2; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mltrader backtest -c configs/default.yaml

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-logo

test: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/lint-imports --no-logo  # the one-way layers and no import cycles (pyproject.toml)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache .hypothesis .import_linter_cache .grimp_cache
