"""The MERGE probes by the narrow event_key and confirms on event_id: a collision never drops an event."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.scenario import DEFAULT_MERGE_MODE
from pipelines.catalog import create_tables, open_catalog
from pipelines.engine import DuckDBEngine, Key
from pipelines.iceberg_io import append, plan_dates
from pipelines.pipeline import stage
from pipelines.recorder import NullRecorder, no_fault
from tests.events import Event, at, batch

STAGE = stage("playback_daily")
E1 = Event("e1", 1, 10, "US", "tv", at(0, 1), 100, at(0, 2))
E2 = Event("e2", 2, 11, "BR", "web", at(0, 5), 200, at(1, 6))
E3 = Event("e3", 3, 12, "GB", "tv", at(1, 7), 300, at(1, 8))


@pytest.mark.parametrize("key", [Key("event_id", "event_key"), Key("event_id")], ids=["probe", "identity"])
def test_a_resend_is_not_inserted_and_a_colliding_key_does_not_hide_a_new_event(tmp_path: Path, key: Key) -> None:
    catalog = open_catalog(tmp_path / "warehouse", create=True)
    create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
    target = catalog.load_table(STAGE.table("ips"))
    engine = DuckDBEngine()
    try:
        engine.bind_arrow("events", batch([E1, E2, E3]))
        rows = engine.query(STAGE.statement())
        by_id = {r["event_id"]: r for r in rows.to_pylist()}
        # Stored: e1 itself, and another event whose event_key equals e2's (a forged collision).
        forged = {
            **by_id["e3"],
            "event_id": "forged",
            "event_key": by_id["e2"]["event_key"],
            "event_date": by_id["e2"]["event_date"],
        }
        append(target, pa.Table.from_pylist([by_id["e1"], forged], schema=rows.schema), NullRecorder())
        target = catalog.load_table(STAGE.table("ips"))

        # The next batch: a re-send of e1, and the new e2 (whose key collides) and e3.
        engine.bind_arrow("events", batch([E1, E2, E3]))
        dates = sorted({r["event_date"] for r in by_id.values()})
        engine.insert_missing(
            target, STAGE.statement(), key, dates, plan_dates(target, dates), NullRecorder(), no_fault
        )
    finally:
        engine.close()
    stored = catalog.load_table(STAGE.table("ips")).scan().to_arrow()
    assert sorted(stored.column("event_id").to_pylist()) == ["e1", "e2", "e3", "forged"]
    e2 = stored.filter(pc.equal(stored.column("event_id"), "e2"))
    assert e2.column("event_key").to_pylist() == [forged["event_key"]]


def test_a_probe_builds_its_hash_table_on_the_new_keys_not_on_the_target(tmp_path: Path) -> None:
    """DuckDB estimates a file list's rows from its first file: the largest comes first.

    Led by a small late-data file, a large target looked smaller than the new
    keys and the join hashed the whole target (7x the probe's CPU on a `medium` day).
    """
    catalog = open_catalog(tmp_path / "warehouse", create=True)
    create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
    engine = DuckDBEngine()
    try:
        events = [Event(f"e{i}", i, 10, "US", "tv", at(0, 1), 100, at(0, 2)) for i in range(3000)]
        engine.bind_arrow("events", batch(events))
        rows = engine.query(STAGE.statement())
        target = catalog.load_table(STAGE.table("ips"))
        append(target, rows, NullRecorder())  # the day's batch
        append(target, rows.slice(0, 1), NullRecorder())  # a late file, planned first (newest)
        target = catalog.load_table(STAGE.table("ips"))
        files = plan_dates(target, [at(0, 0).date()])
        sizes = [pq.ParquetFile(p.removeprefix("file://")).metadata.num_rows for p in files.paths]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] == 3000
        engine.bind_files("existing", files, rows.schema)
        engine.materialize("new_keys", "SELECT event_key FROM existing LIMIT 100")
        plan = engine.con.execute(
            "EXPLAIN SELECT COUNT(*) FROM existing WHERE event_key IN (SELECT event_key FROM new_keys)"
        ).fetchall()[0][1]
    finally:
        engine.close()
    assert "SEMI" in plan and "RIGHT_SEMI" not in plan, plan
