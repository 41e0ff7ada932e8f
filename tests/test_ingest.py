"""Arrival is idempotent: a batch already committed adds nothing, even after expiry, a kill or a concurrent ingest."""

from __future__ import annotations

import dataclasses
import multiprocessing
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import TableProperties

from bench.scenario import DEFAULT_MERGE_MODE, from_preset
from datagen.ingest import (
    BATCH_ID_PROPERTY,
    BATCH_LEDGER_PREFIX,
    batch_id_of,
    ingest_arrival,
    ingest_batch,
    is_committed,
)
from datagen.model import EventModel, arrival_batch
from pipelines.catalog import create_tables, open_catalog
from pipelines.iceberg_io import conform, live_files
from pipelines.maintenance import expire_history
from pipelines.pipeline import SOURCE_TABLE
from tests.events import Event, at, batch

MODEL: EventModel = dataclasses.replace(
    from_preset("small", events_per_day=2_000).event_model(), duplicate_fraction=0.02, late_fraction=0.05
)


def source_rows(catalog: SqlCatalog) -> pa.Table:
    return catalog.load_table(SOURCE_TABLE).scan().to_arrow()


def test_reingest_of_day_0_adds_nothing(catalog: SqlCatalog) -> None:
    day0 = arrival_batch(MODEL, 0)
    first = ingest_arrival(catalog, day0)
    again = ingest_arrival(catalog, arrival_batch(MODEL, 0))
    assert first.appended and first.rows == day0.num_rows
    assert again == dataclasses.replace(first, appended=False, rows=0)
    table = catalog.load_table(SOURCE_TABLE)
    assert len(table.metadata.snapshots) == 1
    assert source_rows(catalog).num_rows == day0.num_rows
    assert ingest_batch(catalog, day0) == first.snapshot_id


def test_the_batch_id_is_in_its_snapshot_summary_and_a_table_property(catalog: SqlCatalog) -> None:
    day0 = arrival_batch(MODEL, 0)
    done = ingest_arrival(catalog, day0)
    table = catalog.load_table(SOURCE_TABLE)
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.snapshot_id == done.snapshot_id
    assert done.batch_id is not None and done.batch_id.startswith("2026-01-01/")
    assert snapshot.summary is not None and snapshot.summary[BATCH_ID_PROPERTY] == done.batch_id
    assert table.metadata.properties[BATCH_LEDGER_PREFIX + done.batch_id] == str(day0.num_rows)


def test_a_retried_batch_whose_snapshot_was_expired_adds_nothing(catalog: SqlCatalog) -> None:
    days = [arrival_batch(MODEL, d) for d in range(3)]
    done = [ingest_arrival(catalog, b) for b in days]
    table = catalog.load_table(SOURCE_TABLE)
    assert expire_history(table) == 2
    table = catalog.load_table(SOURCE_TABLE)
    assert table.snapshot_by_id(done[0].snapshot_id or 0) is None
    assert is_committed(table, done[0].batch_id or "")
    again = ingest_arrival(catalog, days[0])
    # Its snapshot is gone, so there is no id to return; what matters is that nothing was appended.
    assert again == dataclasses.replace(done[0], snapshot_id=None, appended=False, rows=0)
    assert source_rows(catalog).num_rows == sum(b.num_rows for b in days)


def test_other_batches_append(catalog: SqlCatalog) -> None:
    day0 = arrival_batch(MODEL, 0)
    ingest_batch(catalog, day0)
    ingest_batch(catalog, arrival_batch(MODEL, 1))
    # The same day with one value changed is another batch.
    changed = day0.set_column(1, "account_id", pc.add(day0.column("account_id"), 1))
    assert ingest_arrival(catalog, changed).appended
    assert len(catalog.load_table(SOURCE_TABLE).metadata.snapshots) == 3


def test_an_explicit_batch_id_decides(catalog: SqlCatalog) -> None:
    a = batch([Event("a", 1, 1, "US", "tv", at(0, 5), 60, at(0, 23))])
    b = batch([Event("b", 1, 1, "US", "tv", at(0, 6), 60, at(0, 23))])
    assert ingest_arrival(catalog, a, batch_id="day-0").appended
    assert not ingest_arrival(catalog, b, batch_id="day-0").appended
    assert ingest_arrival(catalog, b, batch_id="day-0-late").appended
    assert sorted(source_rows(catalog).column("event_id").to_pylist()) == ["a", "b"]


def test_an_empty_batch_writes_nothing(catalog: SqlCatalog) -> None:
    empty = arrival_batch(MODEL, 0).slice(0, 0)
    assert ingest_arrival(catalog, empty).appended is False
    assert ingest_batch(catalog, empty) is None
    assert catalog.load_table(SOURCE_TABLE).metadata.snapshots == []


def test_batch_id_depends_on_rows_not_layout() -> None:
    day = arrival_batch(MODEL, 3)
    rechunked = pa.concat_tables([day.slice(0, 7), day.slice(7, 900), day.slice(907)])
    # A slice of a larger table keeps the larger table's buffers (offset > 0).
    sliced = pa.concat_tables([day, day]).slice(day.num_rows, day.num_rows).combine_chunks()
    # Values under null slots are unspecified in Arrow: another writer may leave other bytes there.
    views = day.column("view_seconds")
    other_bytes = pc.if_else(pc.is_null(views), pa.scalar(None, pa.int32()), views)
    large = day.cast(pa.schema([f.with_type(pa.large_string()) if f.type == pa.string() else f for f in day.schema]))
    ids = {batch_id_of(t) for t in (day, rechunked, sliced, day.set_column(6, "view_seconds", other_bytes), large)}
    assert ids == {batch_id_of(day)}
    assert batch_id_of(day.slice(1)) != batch_id_of(day)
    assert batch_id_of(arrival_batch(MODEL, 4)).startswith("2026-01-05/")
    two_days = pa.concat_tables([arrival_batch(MODEL, 4), arrival_batch(MODEL, 5)])
    assert batch_id_of(two_days).startswith("2026-01-05..2026-01-06/")


def test_batch_id_sees_nulls() -> None:
    day = arrival_batch(MODEL, 2).slice(0, 50)
    titles = day.column("title_id").to_pylist()
    titles[0] = None if titles[0] is not None else 7
    assert batch_id_of(day.set_column(2, "title_id", pa.array(titles, pa.int64()))) != batch_id_of(day)


# -- a scheduler retries an ingest that is killed at random moments ---------------

KILL_DAYS = 6
KILL_SEED = 18
KILL_BUDGET_S = 15.0
KILL_MID_INGEST = 5
KILL_EPISODES = 20


def ingest_days(warehouse: Path, days: int, progress: Path) -> None:
    """The job a scheduler runs: ingest every day in order, each one once.

    Older snapshots are expired after each commit, so that a retried day can
    only be recognised by the table property, not by its snapshot's summary.
    """
    catalog = open_catalog(warehouse)
    for day in range(days):
        ingest_arrival(catalog, arrival_batch(MODEL, day))
        with progress.open("a") as f:
            f.write(f"{day}\n")
        expire_history(catalog.load_table(SOURCE_TABLE))


def kill_until_done(context: Any, warehouse: Path, progress: Path, rng: random.Random) -> int:
    """Run the job on ``warehouse``, SIGKILLed at random moments, until a try completes.

    Returns how many kills landed inside the job's ingests (before the last day's commit).
    """
    setup = open_catalog(warehouse, create=True)
    create_tables(setup, ("ips",), DEFAULT_MERGE_MODE)
    setup.engine.dispose()
    mid_ingest = 0
    t0 = time.perf_counter()
    while True:
        job = context.Process(target=ingest_days, args=(warehouse, KILL_DAYS, progress))
        job.start()
        if time.perf_counter() - t0 < KILL_BUDGET_S:
            time.sleep(rng.uniform(0.0, 1.0))
            if job.is_alive():
                job.kill()
        job.join(timeout=120)
        if job.exitcode == 0:
            return mid_ingest
        assert job.exitcode == -signal.SIGKILL
        done = progress.read_text().splitlines() if progress.exists() else []
        # A kill before the last day's commit is a kill inside the job's ingests.
        mid_ingest += str(KILL_DAYS - 1) not in done


def assert_each_batch_once(warehouse: Path) -> int:
    """The source holds every day's batch exactly once; returns the orphan data files (killed tries')."""
    expected = pa.concat_tables([arrival_batch(MODEL, d) for d in range(KILL_DAYS)])
    catalog = open_catalog(warehouse)
    got = source_rows(catalog)
    key = [(c, "ascending") for c in ("event_id", "ingest_ts")]
    assert got.num_rows == expected.num_rows
    assert got.sort_by(key).equals(expected.sort_by(key).cast(got.schema))
    table = catalog.load_table(SOURCE_TABLE)
    ledger = [k for k in table.metadata.properties if k.startswith(BATCH_LEDGER_PREFIX)]
    assert len(ledger) == KILL_DAYS
    # Files written by a try killed before its commit: never part of the table.
    live = {f.file_path.removeprefix("file://") for f in live_files(table)}
    orphans = [p for p in warehouse.rglob("*.parquet") if str(p) not in live]
    catalog.engine.dispose()
    return len(orphans)


@pytest.mark.slow
def test_sigkilled_ingests_hold_each_batch_exactly_once(tmp_path: Path) -> None:
    # Children forked from a server that has imported pyiceberg once: a fresh
    # interpreter per try would spend seconds importing, and kills would be few.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    rng = random.Random(KILL_SEED)
    # On an idle machine the whole job can end within the first kill's delay; each
    # episode starts over on a new warehouse until enough kills have landed inside.
    mid_ingest = orphans = episodes = 0
    t0 = time.perf_counter()
    while mid_ingest < KILL_MID_INGEST and episodes < KILL_EPISODES:
        warehouse, progress = tmp_path / f"warehouse-{episodes}", tmp_path / f"progress-{episodes}"
        mid_ingest += kill_until_done(context, warehouse, progress, rng)
        orphans += assert_each_batch_once(warehouse)
        episodes += 1
    print(
        f"{episodes} episodes, {mid_ingest} kills inside the ingests, {orphans} orphan data files, "
        f"{time.perf_counter() - t0:.1f} s"
    )
    assert mid_ingest >= KILL_MID_INGEST


# -- two ingests of one batch at the same moment ---------------------------------


class CommitsFirst:
    """Another process's commit landing between our check of the ledger and our commit.

    Wraps our catalog's ``commit_table``: on its first call, ``other`` (its own
    catalog connection, as another process would have) ingests ``rival`` first,
    so the catalog refuses our commit, whose base metadata is now stale.
    """

    def __init__(self, catalog: SqlCatalog, other: SqlCatalog, rival: pa.Table) -> None:
        self.other, self.rival = other, rival
        self.commit = catalog.commit_table
        self.raced = False

    def commit_table(self, table: Any, requirements: Any, updates: Any) -> Any:
        if not self.raced:
            self.raced = True
            assert ingest_arrival(self.other, self.rival).appended
        return self.commit(table, requirements, updates)


def data_file_names(warehouse: Path) -> set[str]:
    return {p.name for p in (warehouse / "source" / "playback").rglob("*.parquet")}


@pytest.fixture
def other(tmp_path: Path, catalog: SqlCatalog) -> Iterator[SqlCatalog]:
    second = open_catalog(tmp_path / "warehouse")
    yield second
    second.engine.dispose()


def test_an_ingest_that_loses_the_race_to_the_same_batch_adds_nothing(
    tmp_path: Path, catalog: SqlCatalog, other: SqlCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    day0 = arrival_batch(MODEL, 0)
    racer = CommitsFirst(catalog, other, day0)
    monkeypatch.setattr(catalog, "commit_table", racer.commit_table)
    done = ingest_arrival(catalog, day0)
    assert racer.raced
    assert (done.appended, done.rows, done.conflicts) == (False, 0, 1)
    table = catalog.load_table(SOURCE_TABLE)
    assert len(table.metadata.snapshots) == 1 and done.snapshot_id == table.metadata.current_snapshot_id
    assert source_rows(catalog).num_rows == day0.num_rows
    # The loser's data files are deleted: only the winner's remain, every one live.
    live = {Path(f.file_path).name for f in live_files(table)}
    assert data_file_names(tmp_path / "warehouse") == live
    # pyiceberg's retries were turned off for our commit only, never in the table.
    assert TableProperties.COMMIT_NUM_RETRIES not in table.metadata.properties


def test_an_ingest_that_loses_the_race_to_another_batch_appends_once(
    tmp_path: Path, catalog: SqlCatalog, other: SqlCatalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    day0, day1 = arrival_batch(MODEL, 0), arrival_batch(MODEL, 1)
    racer = CommitsFirst(catalog, other, day1)
    monkeypatch.setattr(catalog, "commit_table", racer.commit_table)
    done = ingest_arrival(catalog, day0)
    assert racer.raced
    assert (done.appended, done.rows, done.conflicts) == (True, day0.num_rows, 1)
    table = catalog.load_table(SOURCE_TABLE)
    assert [s.summary[BATCH_ID_PROPERTY] for s in table.metadata.snapshots if s.summary] == [
        batch_id_of(conform(table, day1)),
        batch_id_of(conform(table, day0)),
    ]
    assert source_rows(catalog).num_rows == day0.num_rows + day1.num_rows
    assert data_file_names(tmp_path / "warehouse") == {Path(f.file_path).name for f in live_files(table)}


RACE_ROUNDS = 6


def ingest_at_once(warehouse: Path, day: int, start: Any, results: Any) -> None:
    """One of two processes ingesting batch ``day``: both pass ``start`` together, then ingest."""
    catalog = open_catalog(warehouse)
    day_batch = arrival_batch(MODEL, day)
    catalog.load_table(SOURCE_TABLE)  # connected and warm, so that both reach the ledger check together
    start.wait(timeout=60)
    done = ingest_arrival(catalog, day_batch)
    results.put((day, done.appended, done.conflicts))
    catalog.engine.dispose()


@pytest.mark.slow
def test_two_processes_ingesting_one_batch_at_once_commit_it_once(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse"
    setup = open_catalog(warehouse, create=True)
    create_tables(setup, ("ips",), DEFAULT_MERGE_MODE)
    setup.engine.dispose()
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    results = context.Queue()
    for day in range(RACE_ROUNDS):
        start = context.Barrier(2)
        jobs = [context.Process(target=ingest_at_once, args=(warehouse, day, start, results)) for _ in range(2)]
        for job in jobs:
            job.start()
        for job in jobs:
            job.join(timeout=120)
            assert job.exitcode == 0
    outcomes = sorted(results.get(timeout=10) for _ in range(2 * RACE_ROUNDS))
    # Each round: one ingest appended, the other added nothing.
    assert [(day, appended) for day, appended, _ in outcomes] == [
        (day, appended) for day in range(RACE_ROUNDS) for appended in (False, True)
    ]
    # The race happened: a loser passed the ledger check too, and the catalog refused its commit.
    raced = sum(1 for _, appended, conflicts in outcomes if not appended and conflicts)
    print(f"{raced} of {RACE_ROUNDS} rounds: the loser's commit was refused and it found the batch committed")
    assert raced >= 1
    catalog = open_catalog(warehouse)
    expected = pa.concat_tables([arrival_batch(MODEL, d) for d in range(RACE_ROUNDS)])
    got = source_rows(catalog)
    key = [(c, "ascending") for c in ("event_id", "ingest_ts")]
    assert got.sort_by(key).equals(expected.sort_by(key).cast(got.schema))
    table = catalog.load_table(SOURCE_TABLE)
    assert len(table.metadata.snapshots) == RACE_ROUNDS
    assert data_file_names(warehouse) == {Path(f.file_path).name for f in live_files(table)}
    catalog.engine.dispose()
