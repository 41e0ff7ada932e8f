"""Table maintenance: snapshot expiry and compaction, both safe for IPS.

Commit cost grows with retained snapshots; expiring old ones restores it.
Snapshots older than the oldest tagged watermark are removed (tags protect
their own snapshots), so captures can always walk from the current snapshot
back to their watermark. Metadata only: no data file is deleted.

Incremental MERGEs append one small file per changed partition each run, so
partitions fragment and every later scan pays for it; compaction merges the
small files, a snapshot IpCapture knows changes no row.
"""

from __future__ import annotations

import itertools
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType

from pipelines.iceberg_io import data_files, live_files
from pipelines.ips.capture import COMPACTION_PROPERTY
from pipelines.row_level import commit_row_delta, read_live


def expire_history(table: Table) -> int:
    """Expire snapshots no workflow needs; returns how many were removed."""
    current = table.current_snapshot()
    if current is None:
        return 0
    tagged_ids = {
        ref.snapshot_id for ref in table.metadata.refs.values() if ref.snapshot_ref_type == SnapshotRefType.TAG
    }
    tagged = [s for s in (table.snapshot_by_id(i) for i in tagged_ids) if s is not None]
    horizon_ms = min([s.timestamp_ms for s in tagged] + [current.timestamp_ms])
    doomed = [
        s.snapshot_id
        for s in table.metadata.snapshots
        if s.timestamp_ms < horizon_ms and s.snapshot_id != current.snapshot_id and s.snapshot_id not in tagged_ids
    ]
    if not doomed:
        return 0
    table.maintenance.expire_snapshots().older_than(datetime.fromtimestamp(horizon_ms / 1000, tz=UTC)).commit()
    return len(doomed)


def files_to_merge(files: list[DataFile], min_files: int, keep_main_file: bool = True) -> list[DataFile]:
    """The files of one partition that compaction merges into one (none: leave the partition).

    A partition with ``min_files`` or more files is compacted. When its largest
    file holds at least half of its rows, that file stays and the others are
    merged: Iceberg's ``rewrite_data_files`` likewise bin-packs only files
    below its minimum size and leaves full-size ones alone, and here a day's
    main file (the day's own batch) stands in for a full-size file while the
    late data's small files are what fragments the partition. Otherwise every
    file is merged. Either way the partition is left with at most two files.
    Without ``keep_main_file`` every file of the partition is merged into one.
    """
    if len(files) < min_files:
        return []
    largest = max(files, key=lambda f: f.record_count)
    if keep_main_file and 2 * largest.record_count >= sum(f.record_count for f in files):
        rest = [f for f in files if f is not largest]
        return rest if len(rest) >= 2 else []
    return files


def compact(table: Table, min_files: int = 4, keep_main_file: bool = True) -> tuple[int, int]:
    """Merge each fragmented partition's small files into one file (see ``files_to_merge``).

    pyiceberg 0.12 cannot write Iceberg's REPLACE operation, so this commits an
    OVERWRITE (public ``update_snapshot().overwrite()``) marked with the summary
    property ``COMPACTION_PROPERTY``; IpCapture passes over such a snapshot (as
    over a REPLACE) when it also added exactly as many records as it deleted.
    A partition with position-delete files (merge-on-read) counts as
    fragmented whatever its file count: all its data files are rewritten with
    the deletes applied, and its delete files are removed in the same commit
    (no delete file is left naming a file that is gone). Files are read and
    written through ``table.io``, so any FileIO (local, S3, ...) works.

    Returns:
        Files removed and files written.
    """
    snapshot = table.current_snapshot()
    if snapshot is None:
        return 0, 0
    by_partition: dict[Any, list[DataFile]] = defaultdict(list)
    for f in live_files(table, snapshot, ManifestContent.DATA):
        by_partition[f.partition].append(f)
    deletes: dict[Any, list[DataFile]] = defaultdict(list)
    for f in live_files(table, snapshot, ManifestContent.DELETES):
        deletes[f.partition].append(f)
    groups = [
        (files if deletes.get(part) else merged, deletes.get(part, []))
        for part, files in by_partition.items()
        if deletes.get(part) or (merged := files_to_merge(files, min_files, keep_main_file))
    ]
    if not groups:
        return 0, 0
    old = [f for files, _ in groups for f in files]
    old_deletes = [d for _, ds in groups for d in ds]
    schema = schema_to_pyarrow(table.schema(), include_field_ids=False)
    commit_uuid = uuid.uuid4()
    counter = itertools.count(0)
    # One partition in memory at a time.
    new = [
        f
        for files, ds in groups
        for f in data_files(
            table.metadata,
            read_live(table, files, ds, schema),
            table.io,
            commit_uuid,
            counter,
        )
    ]
    if old_deletes:
        # pyiceberg's overwrite cannot remove delete files: a row delta removes both kinds.
        commit_row_delta(table, new, [*old, *old_deletes], commit_uuid, {COMPACTION_PROPERTY: "rows-preserved"})
        return len(old) + len(old_deletes), len(new)
    with table.transaction() as tx:
        # The table has a snapshot, so overwrite() commits an OVERWRITE (on an empty table it would be an APPEND).
        snapshot_update = tx.update_snapshot(snapshot_properties={COMPACTION_PROPERTY: "rows-preserved"})
        with snapshot_update.overwrite(commit_uuid=commit_uuid) as replace:
            for f in old:
                replace.delete_data_file(f)
            for f in new:
                replace.append_data_file(f)
    return len(old), len(new)
