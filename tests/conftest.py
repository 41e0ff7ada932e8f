"""Shared fixtures, hypothesis profiles (``ci`` by default, ``dev`` for longer runs) and the
order in which two pytest-xdist workers take the test files."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from hypothesis import HealthCheck, settings
from pyiceberg.catalog.sql import SqlCatalog

from bench.scenario import DEFAULT_MERGE_MODE
from pipelines.catalog import create_tables, open_catalog

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

settings.register_profile(
    "ci", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The in-process Spark application of this pytest process (an xdist worker): local[*],
# as the engine starts it (pipelines.spark_engine.SparkEngine).
SPARK_MASTER = "local[*]"

# Every JVM the tests start, in this process or a child (a CLI subprocess, the standalone
# cluster's master, worker and executors), reads Spark's configuration directory: there,
# JVM options for short-lived JVMs (C1 only, serial GC). The project's own settings
# (pipelines.spark_session) are unchanged and still apply. A SPARK_CONF_DIR set by hand
# wins (SPARK_CONF_DIR=/nowhere runs the tests on the JVMs' defaults).
os.environ.setdefault("SPARK_CONF_DIR", str(Path(__file__).parent / "spark-conf"))


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqlCatalog]:
    """A fresh warehouse with the source table and both strategies' tables."""
    cat = open_catalog(tmp_path / "warehouse", create=True)
    create_tables(cat, ("lookback", "ips"), DEFAULT_MERGE_MODE)
    yield cat
    cat.engine.dispose()


@pytest.fixture(scope="session")
def spark_app() -> Iterator[Callable[[Path], SparkSession]]:
    """A Spark session on a warehouse's catalog, from one Spark application per pytest process.

    The application (its SparkContext, in the JVM pyspark keeps for the process) starts
    once per xdist worker, not again after each file that stopped its own: every
    in-process Spark test asks for this fixture (``SparkEngine`` in ``simulate`` or
    ``main`` reuses the running application too). It stops when the worker ends.
    """
    from pipelines.spark_session import spark_session  # raises SparkUnavailable naming what to install

    def session(warehouse: Path) -> SparkSession:
        return spark_session(warehouse, master=SPARK_MASTER)

    yield session
    if "pyspark" in sys.modules:
        from pyspark.sql import SparkSession

        active = SparkSession.getActiveSession()
        if active is not None:
            active.stop()


# The order in which two pytest workers (`--dist loadfile`) take the files: longest
# first, so that neither ends alone on a long file while the other idles. A file's
# length is its seconds in the last full `make test` (13 min 36 s for pytest, 361 tests,
# on a shared 2-core machine at load 6-11) when it runs its slow tests; otherwise, and
# for files not listed, an estimate from the tests selected: SLOW_TEST_S per slow test,
# FAST_TEST_S per other test. Only the order matters: a rough figure is enough, but a
# long file estimated short (a few slow tests of minutes each) would be handed out
# last, so every file of more than about 45 s is listed.
FILE_SECONDS = {
    "test_batches.py": 176,
    "test_spark_engine.py": 158,
    "test_ips_equals_oracle.py": 125,
    "test_postgres_catalog.py": 101,
    "test_backfill.py": 100,
    "test_sweep.py": 92,
    "test_stateful.py": 88,
    "test_kill.py": 86,
    "test_cli.py": 84,
    "test_merge_on_read_duckdb.py": 83,
    "test_user_events.py": 58,
    "test_bench_stages.py": 57,
    "test_concurrent.py": 47,
    "test_paths.py": 47,
}
SLOW_TEST_S = 10
FAST_TEST_S = 1


def pytest_configure(config: pytest.Config) -> None:
    # pytest-xdist reorders files by their number of tests, most first (--loadscope-reorder,
    # its default): the long files, which hold one or two tests, went last. Keep ours.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    files: dict[Path, list[pytest.Item]] = {}
    for item in items:
        files.setdefault(item.path, []).append(item)

    def seconds(path: Path) -> float:
        slow = sum(1 for item in files[path] if item.get_closest_marker("slow") is not None)
        if slow and path.name in FILE_SECONDS:
            return FILE_SECONDS[path.name]
        return slow * SLOW_TEST_S + (len(files[path]) - slow) * FAST_TEST_S

    length = {path: seconds(path) for path in files}
    items.sort(key=lambda item: (-length[item.path], str(item.path)))  # stable: a file keeps its order
