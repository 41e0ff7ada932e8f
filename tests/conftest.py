"""Shared fixtures and hypothesis profiles (``ci`` by default, ``dev`` for longer runs)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from pyiceberg.catalog.sql import SqlCatalog

from pipelines.catalog import create_tables, open_catalog

settings.register_profile(
    "ci", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[SqlCatalog]:
    """A fresh warehouse with the source table and both strategies' tables."""
    cat = open_catalog(tmp_path / "warehouse", create=True)
    create_tables(cat, ("lookback", "ips"))
    yield cat
    cat.engine.dispose()


# The longest test files, longest first (measured on two cores, each a few minutes in
# `make test`): scheduled first, so that two pytest workers (`--dist loadfile`) do not
# end with one of them alone on a long file while the other idles.
LONGEST_FILES = ("test_stateful.py", "test_postgres_catalog.py", "test_spark_engine.py", "test_kill.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)

    items.sort(key=rank)  # stable: every file keeps its own order
