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
