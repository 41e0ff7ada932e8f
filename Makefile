# Two commands on a fresh machine: `make bench` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.spark-installed
SQLITE_JDBC := /usr/share/java/sqlite-jdbc.jar

.PHONY: bench test lint types unit spark-deps benchmark clean

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

## Lint, types and the whole test suite (the Spark tests included: they need spark-deps).
test: lint types unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(SPARK_STAMP)
	$(BIN)/pytest -q

## Spark engine: pyspark 3.5.9 + the Iceberg 1.10.2 runtime jar (`.[spark]`) into .venv,
## and the sqlite JDBC driver (Debian package; installed when missing and run as root).
## Java 17 must be on the machine. The DuckDB default needs none of this.
spark-deps: $(SPARK_STAMP)

$(SPARK_STAMP): $(STAMP)
	@command -v java >/dev/null || { echo "spark-deps: no java: install a Java 17 runtime (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@if [ -f $(SQLITE_JDBC) ]; then \
		echo "spark-deps: sqlite JDBC driver present ($(SQLITE_JDBC))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libxerial-sqlite-jdbc-java; \
	else \
		echo "spark-deps: missing $(SQLITE_JDBC): as root run: apt-get install libxerial-sqlite-jdbc-java"; \
		exit 1; \
	fi
	$(BIN)/pip install --quiet -e '.[spark]'
	touch $(SPARK_STAMP)

## pytest-benchmark suite (not part of `make test`).
benchmark: $(STAMP)
	$(BIN)/pytest -q -o addopts="" -p no:cacheprovider tests/benchmarks --benchmark-enable --benchmark-autosave

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .hypothesis
