"""Arrival batches into ``source.playback``: one Iceberg APPEND commit each, never twice.

Arrival is idempotent, as Flink's Iceberg sink makes its commits: each batch's
id goes into the summary of the snapshot that appends it
(``ipsbench.batch-id``), and the same commit sets the table property
``ipsbench.batch.<id>``. A batch whose id is already recorded is not appended
again. The summary shows which snapshot carried a batch; the property is what
makes the check survive snapshot expiry, which removes summaries but never
properties. Iceberg commits are atomic (the catalog's swap of the metadata
pointer is the commit point), so a kill at any moment of an ingest leaves the
batch committed once or not at all: data files written before the kill are
unreferenced and hold no rows of the table.

Two ingests of one batch at the same moment (a scheduler retrying a step it
thinks hung) both find it absent; the catalog lets one commit land and refuses
the other, whose base metadata is stale (``CommitFailedException``). pyiceberg
would retry that commit on the refreshed table by itself, appending the batch
a second time, so its own retries are off here: the loser reloads the table,
finds the batch committed and adds nothing, or, if another commit won the race
(another batch, a delete), appends again with the files it already wrote.

Also reads a user's own events file, checking DESIGN.md's input contract
before anything is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, TableProperties

from datagen.model import MINUTES_PER_DAY, SOURCE_ARROW_SCHEMA, US_PER_DAY
from pipelines.iceberg_io import conform, data_files
from pipelines.pipeline import SOURCE_TABLE

log = logging.getLogger(__name__)

BATCH_ID_PROPERTY = "ipsbench.batch-id"
BATCH_LEDGER_PREFIX = "ipsbench.batch."
# Commits an ingest tries before giving up while other writers keep winning the race.
COMMIT_ATTEMPTS = 10
# An events file spanning more arrival dates than this is more likely a bad
# ingest_ts (e.g. 0, the epoch) than a real history: refused unless allowed.
DEFAULT_MAX_DAYS = 400
# Zone names whose offset is zero at every instant: their dates are UTC dates.
UTC_ZONES = frozenset({"UTC", "Etc/UTC", "+00:00", "Z", "GMT", "Etc/GMT", "UCT", "Etc/UCT", "Zulu", "Etc/Zulu"})


class BadEventsFile(ValueError):
    """The events file cannot be ingested; the message says why in one line."""


@dataclass(frozen=True)
class Ingested:
    """What ``ingest_arrival`` did with one batch.

    Attributes:
        batch_id: the batch's id, as recorded in the table (None: an empty batch given no id).
        snapshot_id: the snapshot that appended the batch (now or earlier); None
            for an empty batch or when that snapshot has since been expired.
        appended: False when the batch was already committed (or empty) and nothing was written.
        rows: rows appended by this call.
        conflicts: commits of this call the catalog refused because another writer committed first.
    """

    batch_id: str | None
    snapshot_id: int | None
    appended: bool
    rows: int
    conflicts: int = 0


def batch_id_of(batch: pa.Table) -> str:
    """A stable id of a batch: its arrival date(s) and a digest of its rows.

    Logically equal tables get the same id whatever their chunking, slicing or
    bytes under null slots, so the same generated day, or the same day of the
    same user file, is recognised when it is ingested again. Rows are digested
    in their order: the same rows reordered make another batch.
    """
    if batch.num_rows == 0:
        raise ValueError("an empty batch has no id")
    # The columns of whichever source table the batch is for (callers conform it first), nullability aside.
    canonical = pa.schema(
        [pa.field(f.name, pa.string() if pa.types.is_large_string(f.type) else f.type) for f in batch.schema]
    )
    data = batch.select(canonical.names).cast(canonical)
    span = pc.min_max(data.column("ingest_ts")).as_py()
    first, last = span["min"].date(), span["max"].date()
    arrival = str(first) if first == last else f"{first}..{last}"
    return f"{arrival}/{_digest(data)}"


def _digest(data: pa.Table) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(repr([(f.name, str(f.type)) for f in data.schema]).encode())
    h.update(data.num_rows.to_bytes(8, "little"))
    for column in data.columns:
        arr = column.combine_chunks()
        nulls = arr.is_null().to_numpy(zero_copy_only=False)
        h.update(np.packbits(nulls).tobytes())
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
            filled = pc.fill_null(arr, "") if arr.null_count else arr
            width = np.int64 if pa.types.is_large_string(arr.type) else np.int32
            offsets = np.frombuffer(filled.buffers()[1], dtype=width)[filled.offset : filled.offset + len(filled) + 1]
            h.update(np.diff(offsets).tobytes())
            h.update(memoryview(filled.buffers()[2] or b"")[int(offsets[0]) : int(offsets[-1])])
        else:
            # Fixed width (integers, timestamps): the values of the slice, zero under nulls.
            width = arr.type.bit_width // 8
            values = np.frombuffer(arr.buffers()[1], dtype=f"u{width}")[arr.offset : arr.offset + len(arr)]
            h.update(np.where(nulls, 0, values).tobytes() if arr.null_count else values.tobytes())
    return h.hexdigest()


def _ledger_key(batch_id: str) -> str:
    return BATCH_LEDGER_PREFIX + batch_id


def _snapshot_of(table: Table, batch_id: str) -> int | None:
    """The retained snapshot whose summary records ``batch_id``, if any."""
    for snapshot in table.metadata.snapshots:
        if snapshot.summary is not None and snapshot.summary.get(BATCH_ID_PROPERTY) == batch_id:
            return snapshot.snapshot_id
    return None


def is_committed(table: Table, batch_id: str) -> bool:
    """Whether ``batch_id`` is committed to ``table``, even if its snapshot was expired."""
    return _ledger_key(batch_id) in table.metadata.properties or _snapshot_of(table, batch_id) is not None


def ingest_arrival(
    catalog: Catalog, batch: pa.Table, batch_id: str | None = None, table_name: str = SOURCE_TABLE
) -> Ingested:
    """Append one arrival batch unless it is already committed.

    Args:
        catalog: the warehouse's catalog.
        batch: the batch's rows (the schema of ``table_name``).
        table_name: the source table it arrives in (playback events by default).
        batch_id: the batch's id; default ``batch_id_of(batch)``, which every
            caller gets alike, so a batch ingested by the runner is recognised
            when the CLI ingests it again.

    Returns:
        What was done: appended, or nothing because the batch was empty or already committed.
    """
    if batch_id == "":
        raise ValueError("batch_id must not be empty")
    if batch.num_rows == 0:
        return Ingested(batch_id, None, appended=False, rows=0)
    table = catalog.load_table(table_name)
    data = conform(table, batch)
    batch_id = batch_id or batch_id_of(data)
    written: list[DataFile] = []
    conflicts = 0
    for attempt in range(COMMIT_ATTEMPTS):
        if is_committed(table, batch_id):
            existing = _snapshot_of(table, batch_id)
            log.info(
                "batch %s is already committed (snapshot %s); nothing appended",
                batch_id,
                "since expired" if existing is None else existing,
            )
            _delete_unreferenced(table, written)
            return Ingested(batch_id, existing, appended=False, rows=0, conflicts=conflicts)
        # Written once: a retried commit references the same files.
        written = written or data_files(table.metadata, data, table.io, uuid.uuid4())
        try:
            _append_once(table, written, batch_id, data.num_rows)
        except CommitFailedException:
            # Refused as a whole by the catalog: nothing of this commit landed.
            conflicts += 1
            log.info("batch %s: another writer committed first (attempt %d); checking again", batch_id, attempt + 1)
            time.sleep(0.05 * (attempt + 1))
            table = catalog.load_table(table_name)
            continue
        table = catalog.load_table(table_name)
        return Ingested(batch_id, _snapshot_of(table, batch_id), appended=True, rows=data.num_rows, conflicts=conflicts)
    _delete_unreferenced(table, written)
    raise CommitFailedException(
        f"batch {batch_id}: {COMMIT_ATTEMPTS} commits to {table_name} in a row lost to concurrent writers"
    )


def _append_once(table: Table, files: list[DataFile], batch_id: str, rows: int) -> None:
    """One APPEND commit of ``files`` recording ``batch_id``, tried once.

    The batch id goes into the snapshot summary and, in the same commit, a
    table property that outlives snapshot expiry. pyiceberg's own commit
    retries are off (``commit.retry.num-retries`` 0 on this in-memory view of
    the table: the catalog applies only the staged updates, so the table keeps
    its properties): a retry must first check the ledger again.

    Raises:
        CommitFailedException: the catalog refused the commit (its base is stale); nothing landed.
    """
    properties = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    once = Table(
        table.name(),
        table.metadata.model_copy(update={"properties": properties}),
        table.metadata_location,
        table.io,
        table.catalog,
        table.config,
    )
    with once.transaction() as tx:
        tx.set_properties({_ledger_key(batch_id): str(rows)})
        with tx.update_snapshot(snapshot_properties={BATCH_ID_PROPERTY: batch_id}).fast_append() as add:
            for f in files:
                add.append_data_file(f)


def _delete_unreferenced(table: Table, files: list[DataFile]) -> None:
    """Delete data files this ingest wrote but no commit of it references."""
    for f in files:
        table.io.delete(f.file_path)


def ingest_batch(
    catalog: Catalog, batch: pa.Table, batch_id: str | None = None, table_name: str = SOURCE_TABLE
) -> int | None:
    """Append one arrival batch once; returns its snapshot id (None for an empty batch).

    A batch already committed is not appended again: the id of the snapshot
    that appended it is returned (None if that snapshot has been expired).
    See ``ingest_arrival`` for ``batch_id``.
    """
    return ingest_arrival(catalog, batch, batch_id, table_name).snapshot_id


def _check_type(name: str, actual: pa.DataType, expected: pa.DataType) -> None:
    if pa.types.is_timestamp(expected) and pa.types.is_timestamp(actual) and actual.tz not in (None, *UTC_ZONES):
        # Refused rather than converted: the instants would convert exactly, but
        # an event's date is taken in UTC, and a file written in local time most
        # likely means its local dates; the user decides.
        raise BadEventsFile(
            f"column {name!r} has time zone {actual.tz!r}; the input contract takes UTC or naive (read as UTC) "
            "timestamps: convert them to UTC first"
        )
    ok = (
        (pa.types.is_string(expected) and (pa.types.is_string(actual) or pa.types.is_large_string(actual)))
        or (pa.types.is_integer(expected) and pa.types.is_integer(actual))
        or (pa.types.is_timestamp(expected) and pa.types.is_timestamp(actual))
    )
    if not ok:
        raise BadEventsFile(f"column {name!r} has type {actual}, expected {expected}")


def read_events_file(path: Path, max_days: int = DEFAULT_MAX_DAYS, schema: pa.Schema = SOURCE_ARROW_SCHEMA) -> pa.Table:
    """Read a user's events file into a source table's schema, checking the input contract.

    The contract (DESIGN.md): required columns hold no nulls; timestamps are
    UTC or naive (read as UTC); copies of one ``event_id`` share the date of
    ``event_ts`` in UTC. Events dated after their arrival are valid and kept.

    Args:
        path: a Parquet file with the source columns.
        max_days: the most arrival dates (first to last, inclusive) the file may span.
        schema: the source table's columns (playback events by default; impressions too).

    Returns:
        The file's rows in file order, timestamps as UTC.

    Raises:
        BadEventsFile: the file breaks the contract; the message names the first breach in one line.
    """
    if max_days < 1:
        raise ValueError(f"max_days must be at least 1, got {max_days}")
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise BadEventsFile(f"events file not found: {path}") from None
    except (OSError, pa.ArrowInvalid) as e:
        raise BadEventsFile(f"events file {path} is not readable Parquet: {str(e).splitlines()[0]}") from None
    missing = [f.name for f in schema if f.name not in table.column_names]
    if missing:
        raise BadEventsFile(f"events file {path} lacks column(s): {', '.join(missing)}")
    columns = []
    for f in schema:
        col = table.column(f.name)
        _check_type(f.name, col.type, f.type)
        if not f.nullable and col.null_count:
            raise BadEventsFile(f"column {f.name!r} has {col.null_count} null value(s); it is required")
        if pa.types.is_timestamp(f.type) and col.type.tz is None:
            col = pc.assume_timezone(col, "UTC")
        try:
            columns.append(col.cast(pa.field(f.name, f.type, nullable=True).type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise BadEventsFile(f"column {f.name!r} cannot be converted: {str(e).splitlines()[0]}") from None
    out = pa.Table.from_arrays(columns, schema=schema)
    if out.num_rows == 0:
        raise BadEventsFile(f"events file {path} holds no events")
    _check_arrival_span(path, out, max_days)
    _check_one_date_per_event(path, out)
    return out


def _check_arrival_span(path: Path, events: pa.Table, max_days: int) -> None:
    days = arrival_dates(events)
    first: date = pc.min(days).as_py()
    last: date = pc.max(days).as_py()
    span = (last - first).days + 1
    if span > max_days:
        raise BadEventsFile(
            f"events file {path} spans {span:,} arrival dates ({first} to {last}), over the limit of {max_days:,}; "
            "check ingest_ts or raise the limit with --max-days"
        )


def _check_one_date_per_event(path: Path, events: pa.Table) -> None:
    """Copies of one event_id dated on two dates would enter two partitions (DESIGN.md's input contract)."""
    dates = pa.table({"event_id": events.column("event_id"), "d": pc.cast(events.column("event_ts"), pa.date32())})
    spans = dates.group_by("event_id").aggregate([("d", "min"), ("d", "max")])
    split = spans.filter(pc.not_equal(spans.column("d_min"), spans.column("d_max")))
    if split.num_rows:
        # The smallest such event_id, so the message is the same on every read.
        first = split.take(pc.sort_indices(split, [("event_id", "ascending")])[:1]).to_pylist()[0]
        raise BadEventsFile(
            f"events file {path}: event_id {first['event_id']!r} has copies dated {first['d_min']} and "
            f"{first['d_max']} ({split.num_rows:,} such event_id(s)); copies of an event must share the UTC date "
            "of event_ts"
        )


def arrival_dates(events: pa.Table) -> pa.Array:
    """The UTC date of each row's ``ingest_ts``."""
    return pc.cast(events.column("ingest_ts"), pa.date32())


def split_by_arrival(events: pa.Table) -> tuple[date, list[pa.Table]]:
    """One batch per ingest date from the earliest to the latest (empty dates included).

    Rows keep their file order within a batch. One stable sort, then slices:
    the cost does not grow with the number of dates.
    """
    days = pc.cast(arrival_dates(events), pa.int32()).to_numpy(zero_copy_only=False)
    order = np.argsort(days, kind="stable")
    ordered = events.take(pa.array(order))
    first_day, last_day = int(days[order[0]]), int(days[order[-1]])
    bounds = np.searchsorted(days[order], np.arange(first_day, last_day + 2))
    batches = [ordered.slice(a, b - a) for a, b in itertools.pairwise(bounds.tolist())]
    return date(1970, 1, 1) + timedelta(days=first_day), batches


def split_day(batch: pa.Table, day_start: date, batch_minutes: int) -> list[pa.Table]:
    """One arrival day's rows cut into ``1440 / batch_minutes`` batches by ``ingest_ts``.

    Batch ``i`` holds the rows whose arrival falls in ``[i, i + 1)`` times
    ``batch_minutes`` after ``day_start`` (midnight UTC), in their order within
    the day; a whole day (1440 minutes) is the batch itself, untouched. Every
    row must arrive on that day.
    """
    if batch_minutes <= 0 or MINUTES_PER_DAY % batch_minutes:
        raise ValueError(f"batch_minutes must divide {MINUTES_PER_DAY}, got {batch_minutes}")
    count = MINUTES_PER_DAY // batch_minutes
    if count == 1:
        return [batch]
    midnight_us = (day_start - date(1970, 1, 1)).days * US_PER_DAY
    offset = pc.cast(batch.column("ingest_ts"), pa.int64()).to_numpy(zero_copy_only=False) - midnight_us
    if len(offset) and (offset.min() < 0 or offset.max() >= US_PER_DAY):
        raise ValueError(f"a row of the batch of {day_start} arrives on another date")
    slot = offset // (batch_minutes * 60_000_000)
    order = np.argsort(slot, kind="stable")
    ordered = batch.take(pa.array(order))
    bounds = np.searchsorted(slot[order], np.arange(count + 1))
    return [ordered.slice(a, b - a) for a, b in itertools.pairwise(bounds.tolist())]


@dataclass(frozen=True)
class EventsFile:
    """A user's events file, checked once and split into arrival batches once.

    Attributes:
        table: every row, in file order (as ``read_events_file`` returns it).
        first_arrival: the date of the first batch (processing day 0).
        batches: one batch per arrival date from the first to the last, empty dates included.
        path: where it was read from, if from a file.
        impressions: the user's impressions split over the same arrival dates
            (None: none given; the impressions table stays empty).
    """

    table: pa.Table
    first_arrival: date
    batches: tuple[pa.Table, ...]
    path: Path | None = None
    impressions: tuple[pa.Table, ...] | None = None

    def with_impressions(self, impressions: pa.Table, path: Path) -> EventsFile:
        """These events with an impressions file arriving on the same dates (refused if any arrives outside them)."""
        days = pc.subtract(
            pc.cast(arrival_dates(impressions), pa.int32()),
            pa.scalar((self.first_arrival - date(1970, 1, 1)).days, pa.int32()),
        )
        outside = pc.sum(pc.or_(pc.less(days, 0), pc.greater_equal(days, self.days))).as_py() or 0
        if outside:
            raise BadEventsFile(
                f"impressions file {path}: {outside:,} row(s) arrive outside the events file's arrival dates "
                f"({self.first_arrival} to {self.last_arrival})"
            )
        batches = tuple(impressions.filter(pc.equal(days, day)) for day in range(self.days))
        return dataclasses.replace(self, impressions=batches)

    @staticmethod
    def read(path: Path, max_days: int = DEFAULT_MAX_DAYS) -> EventsFile:
        """Read and check ``path`` (see ``read_events_file``), then split it by arrival."""
        return EventsFile.of(read_events_file(path, max_days), path)

    @staticmethod
    def of(events: pa.Table, path: Path | None = None) -> EventsFile:
        first, batches = split_by_arrival(events)
        return EventsFile(events, first, tuple(batches), path)

    @property
    def days(self) -> int:
        return len(self.batches)

    @property
    def last_arrival(self) -> date:
        return self.first_arrival + timedelta(days=self.days - 1)

    def describe(self) -> dict[str, Any]:
        """What the file holds, measured (for a report to describe the input, not generator settings).

        Lateness is arrival date minus event date, in days: late means 1 or
        more, ahead (a device clock ahead of arrival) means below 0.
        """
        event_dates = pc.cast(self.table.column("event_ts"), pa.date32())
        lateness = pc.subtract(
            pc.cast(arrival_dates(self.table), pa.int32()), pc.cast(event_dates, pa.int32())
        ).to_numpy(zero_copy_only=False)
        rows = self.table.num_rows
        return {
            "file": str(self.path) if self.path is not None else None,
            "rows": rows,
            "event_ids": pc.count_distinct(self.table.column("event_id")).as_py(),
            "first_arrival": self.first_arrival.isoformat(),
            "last_arrival": self.last_arrival.isoformat(),
            "arrival_days": self.days,
            "first_event_date": pc.min(event_dates).as_py().isoformat(),
            "last_event_date": pc.max(event_dates).as_py().isoformat(),
            "late_share": float((lateness >= 1).sum() / rows),
            "ahead_share": float((lateness < 0).sum() / rows),
        }
