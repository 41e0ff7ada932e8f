# Two commands on a fresh machine: `make bench` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: bench test lint types unit benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

## Run the main job (preset small, DuckDB + local catalog) into runs/small.
bench: $(STAMP)
	rm -rf runs/small
	$(BIN)/ipsbench run --preset small --out runs/small
	@echo "report: runs/small/report.md"

## Lint, types and the whole test suite.
test: lint types unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

## pytest-benchmark suite (not part of `make test`).
benchmark: $(STAMP)
	$(BIN)/pytest -q -o addopts="" -p no:cacheprovider tests/benchmarks --benchmark-enable --benchmark-autosave

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .hypothesis
