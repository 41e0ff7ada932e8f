"""The comparison with the oracle finds every differing row, by fingerprint and row hash."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bench.equality import compare
from bench.metrics import StageRecorder
from bench.runner import simulate
from bench.scenario import from_preset
from pipelines import oracle
from pipelines.catalog import open_catalog
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import overwrite_partitions


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One tiny run, IPS equal to the oracle, kept aside as files (Iceberg metadata holds absolute paths).

    Three days (one warm-up): every IPS table holds rows on several dates.
    """
    root = tmp_path_factory.mktemp("equality")
    warehouse = root / "warehouse"
    run = simulate(from_preset("tiny", days=3, warmup_days=1), warehouse, progress=False)
    assert run.verdicts["ips"].equal_to_oracle
    shutil.copytree(warehouse, root / "kept")
    return warehouse, root / "kept"


@pytest.fixture
def warehouse(built: tuple[Path, Path]) -> Path:
    """The run's warehouse at its own path, as the run left it: each test corrupts its own copy."""
    path, kept = built
    shutil.rmtree(path)
    shutil.copytree(kept, path)
    return path


def _verdict(warehouse: Path):
    engine = DuckDBEngine()
    try:
        catalog = open_catalog(warehouse)
        oracle.compute(engine, catalog)
        return compare(engine, catalog, "ips")
    finally:
        engine.close()


@pytest.mark.slow
def test_one_changed_value_and_one_duplicated_row_are_found(warehouse: Path) -> None:
    catalog = open_catalog(warehouse)
    table = catalog.load_table("ips.playback_daily_agg")
    rows = table.scan().to_arrow()
    day = rows.column("event_date")[0].as_py()
    part = rows.filter(pc.equal(rows.column("event_date"), day))
    # One value off by one in one row, and another row stored twice.
    changed = part.slice(0, 1).set_column(
        2, "total_view_seconds", pa.array([part.column("total_view_seconds")[0].as_py() + 1], pa.int64())
    )
    corrupted = pa.concat_tables([changed.cast(part.schema), part.slice(1), part.slice(1, 1)])
    overwrite_partitions(table, [corrupted], [day], StageRecorder())

    verdict = _verdict(warehouse)
    assert not verdict.equal_to_oracle
    assert verdict.per_stage["playback_daily_agg"]["mismatched_rows"] == 2
    assert verdict.per_stage["playback_daily"]["mismatched_rows"] == 0
    assert verdict.per_stage["title_daily_rank"]["mismatched_rows"] == 0


@pytest.mark.slow
def test_a_missing_partition_is_found(warehouse: Path) -> None:
    catalog = open_catalog(warehouse)
    table = catalog.load_table("ips.title_daily_rank")
    rows = table.scan().to_arrow()
    day = rows.column("event_date")[0].as_py()
    lost = rows.filter(pc.equal(rows.column("event_date"), day)).num_rows
    overwrite_partitions(table, [rows.slice(0, 0)], [day], StageRecorder())

    verdict = _verdict(warehouse)
    assert verdict.per_stage["title_daily_rank"]["mismatched_rows"] == lost > 0
    assert verdict.mismatched_rows == lost
