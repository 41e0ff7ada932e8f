"""Reading file lists from, and writing partitions to, Iceberg tables.

Scans are planned from Iceberg metadata so that what a job reads is known
exactly (files, rows, bytes of the files opened); writes report what the new
snapshots added, read from their summaries.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import BooleanExpression
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import (
    _dataframe_to_data_files,
    bin_pack_arrow_table,
    pyarrow_to_schema,
    schema_to_pyarrow,
    write_file,
)
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent, ManifestEntryStatus, ManifestFile
from pyiceberg.partitioning import PartitionFieldValue, PartitionKey
from pyiceberg.table import Table, TableProperties, WriteTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.utils.properties import property_as_int

from pipelines.recorder import Recorder

EPOCH = date(1970, 1, 1)


class UnsupportedTableState(Exception):
    """A table holds something this engine path cannot read correctly."""


@dataclass(frozen=True)
class FileSet:
    """Data files a job reads, with what Iceberg metadata says they hold."""

    paths: tuple[str, ...] = ()
    rows: int = 0
    bytes: int = 0
    # Row-level delete files (merge-on-read tables written by Spark): bytes included above.
    delete_files: int = 0
    # (day partition in days since EPOCH, rows, bytes) of the files above: where the rows lie.
    days: tuple[tuple[int, int, int], ...] = ()
    # The position-delete files among them (merge-on-read): every reader applies them.
    delete_paths: tuple[str, ...] = ()

    @property
    def files(self) -> int:
        return len(self.paths) + self.delete_files

    @staticmethod
    def of(data_files: Iterable[DataFile], delete_files: Iterable[DataFile] = ()) -> FileSet:
        # Largest file first. DuckDB estimates a read_parquet list's rows as its first
        # file's rows times the number of files: led by a small late-data file, a 21M-row
        # target scan was estimated at 20k rows, and a join built its hash table on the
        # whole target instead of the 35k changed keys (7x the probe's CPU on a `medium` day).
        # Led by the largest, the estimate is an upper bound.
        files = sorted(data_files, key=lambda f: -f.record_count)
        deletes = {f.file_path: f for f in delete_files}
        if any(f.content != DataFileContent.POSITION_DELETES for f in deletes.values()):
            # No reader here applies equality deletes: refuse rather than read deleted rows.
            raise UnsupportedTableState("the scan has equality delete files; only position deletes are read")
        days: dict[int, tuple[int, int]] = {}
        for f in (*files, *deletes.values()):
            rows, size = days.get(int(f.partition[0]), (0, 0))
            data_rows = f.record_count if f.content == DataFileContent.DATA else 0
            days[int(f.partition[0])] = (rows + data_rows, size + f.file_size_in_bytes)
        return FileSet(
            tuple(f.file_path for f in files),
            sum(f.record_count for f in files),
            sum(f.file_size_in_bytes for f in files) + sum(f.file_size_in_bytes for f in deletes.values()),
            len(deletes),
            tuple((day, rows, size) for day, (rows, size) in sorted(days.items())),
            tuple(deletes),
        )

    def by_date(self) -> dict[date, tuple[int, int]]:
        """Rows and bytes of these files by the date of the day partition they lie in."""
        return {EPOCH + timedelta(days=day): (rows, size) for day, rows, size in self.days}


def plan(table: Table, row_filter: BooleanExpression, snapshot_id: int | None = None) -> FileSet:
    """The data files a scan with ``row_filter`` must open (metadata only)."""
    if table.metadata.current_snapshot_id is None and snapshot_id is None:
        return FileSet()
    tasks = list(table.scan(row_filter=row_filter, snapshot_id=snapshot_id).plan_files())
    return FileSet.of((t.file for t in tasks), (d for t in tasks for d in t.delete_files))


def live_data_files(manifest: ManifestFile, io: FileIO) -> list[DataFile]:
    """The files ``manifest`` lists as live (not deleted)."""
    return [e.data_file for e in manifest.fetch_manifest_entry(io, discard_deleted=True)]


def live_files(
    table: Table, snapshot: Snapshot | None = None, content: ManifestContent | None = None
) -> list[DataFile]:
    """Every live file of ``snapshot`` (default: the current one), from its manifests.

    ``content``: only the files of DATA (or DELETES) manifests; default both.
    """
    snapshot = snapshot or table.current_snapshot()
    if snapshot is None:
        return []
    return [
        f
        for m in snapshot.manifests(table.io)
        if content is None or m.content == content
        for f in live_data_files(m, table.io)
    ]


def own_entries(table: Table, snapshot: Snapshot) -> list[tuple[ManifestEntryStatus, DataFile]]:
    """Entries ``snapshot`` itself added or deleted, data and delete files alike."""
    io = table.io
    out: list[tuple[ManifestEntryStatus, DataFile]] = []
    for manifest in snapshot.manifests(io):
        if manifest.added_snapshot_id != snapshot.snapshot_id:
            continue
        for entry in manifest.fetch_manifest_entry(io, discard_deleted=False):
            if entry.snapshot_id == snapshot.snapshot_id and entry.status != ManifestEntryStatus.EXISTING:
                out.append((entry.status, entry.data_file))
    return out


def added_files(table: Table, snapshot: Snapshot) -> list[DataFile]:
    """Files (data and delete files) that ``snapshot`` itself added."""
    return [f for status, f in own_entries(table, snapshot) if status == ManifestEntryStatus.ADDED]


def added_after(table: Table, before: int | None) -> list[DataFile]:
    """Files the snapshots committed after ``before`` added and that are still live."""
    added: list[DataFile] = []
    removed: set[str] = set()
    snap = table.current_snapshot()
    while snap is not None and snap.snapshot_id != before:
        for status, f in own_entries(table, snap):
            if status == ManifestEntryStatus.DELETED:
                removed.add(f.file_path)
            elif f.file_path not in removed:
                added.append(f)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return added


def partition_entries(table: Table, dates: Sequence[date]) -> tuple[list[DataFile], list[DataFile]]:
    """Data files and row-level delete files of the partitions holding ``dates`` (metadata only).

    For tables whose first partition field is a day (``identity(event_date)``
    or ``day(event_ts)``). Matching each manifest entry's partition value costs
    a fraction of pyiceberg's generic ``In`` evaluation, which grows with the
    number of dates.
    """
    snapshot = table.current_snapshot()
    if snapshot is None or not dates:
        return [], []
    wanted = {(d - EPOCH).days for d in dates}
    data: list[DataFile] = []
    deletes: list[DataFile] = []
    for manifest in snapshot.manifests(table.io):
        bucket = data if manifest.content == ManifestContent.DATA else deletes
        bucket.extend(f for f in live_data_files(manifest, table.io) if f.partition[0] in wanted)
    return data, deletes


def contiguous(dates: Iterable[date]) -> list[tuple[date, date]]:
    """``dates`` (sorted) merged into contiguous ``(first, last)`` ranges."""
    out: list[tuple[date, date]] = []
    for d in dates:
        if out and d == out[-1][1] + timedelta(days=1):
            out[-1] = (out[-1][0], d)
        else:
            out.append((d, d))
    return out


def partition_dates(table: Table) -> list[date]:
    """The dates of the table's non-empty day partitions (metadata only)."""
    return sorted({EPOCH + timedelta(days=int(f.partition[0])) for f in live_files(table)})


def partition_files(table: Table, dates: Sequence[date]) -> list[DataFile]:
    """Data files of the partitions holding ``dates``, for a copy-on-write rewrite."""
    data, deletes = partition_entries(table, dates)
    if deletes:
        raise UnsupportedTableState(
            f"{'.'.join(table.name())} has row-level delete files in the partitions to rewrite; "
            "rewrite them with overwrite_partitions, which removes the delete files too"
        )
    return data


def plan_dates(table: Table, dates: Sequence[date]) -> FileSet:
    """The files a scan of the ``dates`` partitions opens (delete files included)."""
    return FileSet.of(*partition_entries(table, dates))


def conform(table: Table, data: pa.Table) -> pa.Table:
    """Cast an engine's output to the table's exact Arrow schema (nullability included)."""
    target = schema_to_pyarrow(table.schema(), include_field_ids=False)
    return data.select(target.names).cast(target)


def data_files(
    metadata: TableMetadata,
    data: pa.Table,
    io: FileIO,
    write_uuid: uuid.UUID,
    counter: itertools.count[int] | None = None,
) -> list[DataFile]:
    """Write ``data`` as Parquet data files of the table ``metadata`` describes, one per partition.

    Like pyiceberg's own writer, but the rows are split into partitions by one
    sort on the partition value instead of one full-table filter per partition
    (which grows with partitions x rows and dominated the writes here). Tables
    whose spec is not a single partition field go through pyiceberg's writer.
    """
    spec = metadata.spec()
    if data.num_rows == 0:
        return []
    if len(spec.fields) != 1:
        return list(_dataframe_to_data_files(metadata, data, io, write_uuid=write_uuid, counter=counter))
    schema = metadata.schema()
    part = spec.fields[0]
    column = schema.find_column_name(part.source_id)
    assert column is not None
    keys = part.transform.pyarrow_transform(schema.find_field(part.source_id).field_type)(data.column(column))
    runs = pc.run_end_encode(keys.combine_chunks())
    # Each partition's rows are contiguous exactly when no value starts two runs.
    if len(runs.values) != pc.count_distinct(runs.values).as_py():
        # A partition's rows are not contiguous: sort them together (engines that
        # hand over their output ordered by partition skip this copy).
        order = pc.sort_indices(keys)
        data = data.take(order)
        runs = pc.run_end_encode(keys.take(order).combine_chunks())
    target_size = property_as_int(
        metadata.properties,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
        TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
    )
    assert target_size is not None
    task_schema = pyarrow_to_schema(
        data.schema, name_mapping=schema.name_mapping, format_version=metadata.format_version
    )
    counter = counter or itertools.count(0)
    tasks = []
    start = 0
    for end, value in zip(runs.run_ends.to_pylist(), runs.values.to_pylist(), strict=True):
        key = PartitionKey([PartitionFieldValue(part, value)], spec, schema)
        for batches in bin_pack_arrow_table(data.slice(start, end - start).combine_chunks(), target_size):
            tasks.append(WriteTask(write_uuid, next(counter), task_schema, batches, partition_key=key))
        start = end
    return list(write_file(io, metadata, iter(tasks)))


@dataclass
class WriteStats:
    rows: int = 0
    bytes: int = 0
    files: int = 0
    commits: int = 0


def added_since(table: Table, before: int | None) -> WriteStats:
    """What the snapshots committed after ``before`` added (one catalog commit)."""
    stats = WriteStats(commits=1)
    snap = table.current_snapshot()
    while snap is not None and snap.snapshot_id != before:
        s = snap.summary
        if s is not None:
            stats.rows += int(s.get("added-records", 0) or 0)
            stats.bytes += int(s.get("added-files-size", 0) or 0)
            stats.files += int(s.get("added-data-files", 0) or 0)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return stats


def overwrite_partitions(
    table: Table, chunks: Iterable[pa.Table], dates: Sequence[date], recorder: Recorder
) -> WriteStats:
    """Replace exactly the ``event_date`` partitions ``dates`` with the rows of ``chunks``.

    One OVERWRITE snapshot that removes the partitions' files and adds the new
    ones (Iceberg's replace-partitions), instead of pyiceberg's delete-then-append
    pair of snapshots. Each chunk is written to files before the next is asked
    for, so memory holds one chunk, not the whole output; a partition's rows
    must all be in one chunk (one file per partition).
    """
    if not dates:
        return WriteStats()
    old, old_deletes = partition_entries(table, dates)
    commit_uuid = uuid.uuid4()
    counter = itertools.count(0)
    new = [
        f for chunk in chunks for f in data_files(table.metadata, conform(table, chunk), table.io, commit_uuid, counter)
    ]
    if not old and not new:
        return WriteStats()
    before = table.metadata.current_snapshot_id
    if old_deletes:
        # Merge-on-read partitions: their delete files go with their data files
        # (pyiceberg's overwrite cannot remove delete files).
        from pipelines.row_level import commit_row_delta

        commit_row_delta(table, new, [*old, *old_deletes], commit_uuid)
    else:
        with table.transaction() as tx, tx.update_snapshot().overwrite(commit_uuid=commit_uuid) as replace:
            for f in old:
                replace.delete_data_file(f)
            for f in new:
                replace.append_data_file(f)
    stats = added_since(table, before)
    recorder.wrote(stats.rows, stats.bytes, stats.files, stats.commits, len(dates))
    return stats


def append_files(
    table: Table,
    data: pa.Table,
    snapshot_properties: dict[str, str] | None = None,
    table_properties: dict[str, str] | None = None,
) -> None:
    """One APPEND snapshot adding ``data`` (cast to the table's schema), written by ``data_files``.

    Args:
        table: the table to append to.
        data: the rows to append.
        snapshot_properties: extra entries of the new snapshot's summary.
        table_properties: table properties set by the same commit. Unlike a
            summary entry, a property outlives the expiry of the snapshot, and
            being one commit with the append it is set exactly when the rows land.
    """
    commit_uuid = uuid.uuid4()
    new = data_files(table.metadata, conform(table, data), table.io, commit_uuid)
    with table.transaction() as tx:
        if table_properties:
            tx.set_properties(table_properties)
        with tx.update_snapshot(snapshot_properties=dict(snapshot_properties or {})).fast_append() as add:
            for f in new:
                add.append_data_file(f)


def append(table: Table, data: pa.Table, recorder: Recorder) -> WriteStats:
    """Append ``data`` as one APPEND commit (nothing when it is empty)."""
    if data.num_rows == 0:
        return WriteStats()
    before = table.metadata.current_snapshot_id
    append_files(table, data)
    stats = added_since(table, before)
    partitions = pc.count_distinct(data.column("event_date")).as_py() if "event_date" in data.column_names else 0
    recorder.wrote(stats.rows, stats.bytes, stats.files, stats.commits, partitions)
    return stats
