# Two commands on a fresh machine: `make bench` and `make test`; `make check` while editing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SPARK_STAMP := $(VENV)/.spark-installed
SQLITE_JDBC := /usr/share/java/sqlite-jdbc.jar
POSTGRES_JDBC := /usr/share/java/postgresql.jar

.PHONY: bench test check lint types unit fast spark-deps benchmark clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

## Run the main job (preset small, DuckDB + local catalog) into runs/small.
bench: $(STAMP)
	rm -rf runs/small
	$(BIN)/ipsbench run --preset small --out runs/small

## Lint, types and the whole test suite: Spark (needs spark-deps), the kill loop, the
## PostgreSQL catalog (needs the postgresql package: .ci/run installs it as root). CI runs this.
test: lint types unit

## The edit loop: lint, types and every test not marked slow (no JVM, no kill loop, no long run).
check: lint types fast

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

# Two pytest workers (pytest-xdist), each test file on one of them: module fixtures (a
# tiny run, the PostgreSQL server) are built once, a Spark application once per worker.
# The workers take the files longest first (tests/conftest.py). Every JVM a test starts
# (Spark drivers, the standalone cluster) reads tests/spark-conf: options for short-lived JVMs.
PYTEST_WORKERS ?= 2

unit: $(STAMP) $(SPARK_STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile --durations=15

fast: $(STAMP)
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" --durations=5

## Spark engine: pyspark 3.5.9 + the Iceberg 1.10.2 runtime jar (`.[spark]`) into .venv,
## and the JDBC drivers of both catalog databases, sqlite and PostgreSQL (Debian packages;
## installed when missing and run as root). Java 17 must be on the machine. The DuckDB
## default needs none of this.
spark-deps: $(SPARK_STAMP)

$(SPARK_STAMP): $(STAMP)
	@command -v java >/dev/null || { echo "spark-deps: no java: install a Java 17 runtime (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@if [ -f $(SQLITE_JDBC) ] && [ -f $(POSTGRES_JDBC) ]; then \
		echo "spark-deps: JDBC drivers present ($(SQLITE_JDBC), $(POSTGRES_JDBC))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libxerial-sqlite-jdbc-java libpostgresql-jdbc-java; \
	else \
		echo "spark-deps: missing $(SQLITE_JDBC) or $(POSTGRES_JDBC): as root run: apt-get install libxerial-sqlite-jdbc-java libpostgresql-jdbc-java"; \
		exit 1; \
	fi
	$(BIN)/pip install --quiet -e '.[spark]'
	touch $(SPARK_STAMP)

## pytest-benchmark suite (not part of `make test`).
benchmark: $(STAMP)
	$(BIN)/pytest -q -o addopts="" -p no:cacheprovider tests/benchmarks --benchmark-enable --benchmark-autosave

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .hypothesis
