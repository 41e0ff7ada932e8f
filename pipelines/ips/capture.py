"""IpCapture: the data files added since a workflow's watermark, from metadata only.

The walk goes from the input table's current snapshot back along the parent
chain to the watermark, reading manifest lists and manifests, never a data
file. The captured files become an ICDC table (an Iceberg table of its own
whose one snapshot references exactly those files: zero-copy), and their
column bounds give the change ranges of a field.

Snapshots that are not APPENDs are never skipped silently:

- REPLACE (compaction: files rewritten, table data unchanged) carries no
  change; it is counted and passed over, as is an OVERWRITE written by our
  compactor (pyiceberg cannot write REPLACE) that kept every record.
- A merge by key written merge-on-read (``pipelines.row_level``: an
  OVERWRITE marked ``ROW_DELTA_PROPERTY``) is a row-level change: every row
  its position deletes remove is replaced by a row of the same key in the
  data files it adds, so those data files hold exactly the changed rows and
  are captured like appended ones (downstream gets the changed keys, not
  whole partitions). The small partitions it rewrites whole keep that
  promise too: the files it removes leave the capture, and the rows they held
  are among the rows it adds. One exception keeps the ICDC rows
  live: when its deletes fall in a partition where a file captured earlier in
  the same range lies (those deleted rows would still show in the ICDC
  table), that partition is rewritten.
- OVERWRITE and DELETE (rows rewritten or removed, e.g. a privacy delete, or
  a merge-on-read written by another writer, whose deletes carry no such
  promise) make the partitions they touched *rewritten*: the patterns
  recompute those whole partitions from the input instead of processing
  their ICDC rows.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent, ManifestEntryStatus
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation, Snapshot
from pyiceberg.types import DateType, StringType, TimestamptzType

from pipelines.iceberg_io import EPOCH, added_files, contiguous, live_files, own_entries
from pipelines.recorder import NullRecorder, Recorder
from pipelines.row_level import FILE_PATH_ID, MERGE_BY_KEY, ROW_DELTA_PROPERTY

ICDC_NAMESPACE = "ips_icdc"
# Set by maintenance.compact on the snapshots it writes.
COMPACTION_PROPERTY = "ipsbench.compaction"


class NonAppendSnapshot(Exception):
    """The input table changed by something other than an APPEND since the watermark."""


class WatermarkLost(Exception):
    """The watermark snapshot is no longer an ancestor of the table's current snapshot."""


@dataclass
class Capture:
    """What one IpCapture found.

    Attributes:
        workflow: the workflow that captured.
        input_table: the table whose changes were captured.
        from_snapshot_id: the watermark (exclusive), None for a first run.
        to_snapshot_id: the input's snapshot captured up to (inclusive).
        files: the data files added in between.
        snapshots: the snapshots walked (newest first).
        icdc_table: the ICDC table's name, once built.
        change_dates: the event dates the captured files cover.
        rewritten_dates: partitions touched by OVERWRITE/DELETE snapshots: recomputed whole.
        non_append: ``(snapshot_id, operation)`` of every non-APPEND snapshot walked.
        first_run: no watermark yet: a backfill, every partition recomputed whole.
    """

    workflow: str
    input_table: str
    from_snapshot_id: int | None
    to_snapshot_id: int | None
    files: list[DataFile] = field(default_factory=list)
    snapshots: list[int] = field(default_factory=list)
    icdc_table: str | None = None
    change_dates: list[date] = field(default_factory=list)
    rewritten_dates: list[date] = field(default_factory=list)
    non_append: list[tuple[int, str]] = field(default_factory=list)
    first_run: bool = False

    @property
    def empty(self) -> bool:
        return not self.files and not self.rewritten_dates

    @property
    def all_dates(self) -> list[date]:
        """Every partition this capture makes stale: changed or rewritten."""
        return sorted(set(self.change_dates) | set(self.rewritten_dates))

    @property
    def appended_only_dates(self) -> list[date]:
        """Changed partitions that no rewrite touched: processed from ICDC rows."""
        rewritten = set(self.rewritten_dates)
        return [d for d in self.change_dates if d not in rewritten]

    @property
    def rows(self) -> int:
        return sum(f.record_count for f in self.files)

    @property
    def bytes(self) -> int:
        return sum(f.file_size_in_bytes for f in self.files)

    def ranges(self) -> list[tuple[date, date]]:
        """The stale dates merged into contiguous ``(first, last)`` ranges."""
        return contiguous(self.all_dates)


@dataclass
class Walk:
    """What the snapshot walk found between the watermark and the current snapshot."""

    to_snapshot_id: int | None
    snapshots: list[int] = field(default_factory=list)
    appended: list[DataFile] = field(default_factory=list)
    rewritten_days: set[int] = field(default_factory=set)
    non_append: list[tuple[int, str]] = field(default_factory=list)
    first_run: bool = False


def _is_compaction(snapshot: Snapshot) -> bool:
    """An OVERWRITE our compactor marked, that kept every live record (see maintenance.compact).

    The records it added are those of the data files it removed less the rows
    the position deletes it removed (folded into the new files) had deleted.
    """
    summary = snapshot.summary
    if summary is None or summary.get(COMPACTION_PROPERTY) != "rows-preserved":
        return False
    added = int(summary.get("added-records") or 0)
    deleted = int(summary.get("deleted-records") or 0)
    return added == deleted - int(summary.get("removed-position-deletes") or 0)


def _is_row_delta(snapshot: Snapshot) -> bool:
    """A merge by key written merge-on-read by this project (it may also rewrite small partitions whole)."""
    summary = snapshot.summary
    return summary is not None and summary.get(ROW_DELTA_PROPERTY) == MERGE_BY_KEY


def _may_name(delete_file: DataFile, data_file: DataFile) -> bool:
    """Whether a position-delete file may delete rows of ``data_file`` (its partition, its ``file_path`` bounds)."""
    if delete_file.partition != data_file.partition:
        return False
    lower = (delete_file.lower_bounds or {}).get(FILE_PATH_ID)
    upper = (delete_file.upper_bounds or {}).get(FILE_PATH_ID)
    if lower is None or upper is None:
        return True
    return bool(from_bytes(StringType(), lower) <= data_file.file_path <= from_bytes(StringType(), upper))


def changed_files(table: Table, from_exclusive: int | None) -> Walk:
    """Walk the parent chain from the current snapshot back to ``from_exclusive``.

    A first run (no watermark) takes every live file and marks every partition rewritten.

    Raises:
        NonAppendSnapshot: a snapshot's operation is not one IPS knows how to handle.
        WatermarkLost: the watermark is not an ancestor of the current snapshot.
    """
    current = table.current_snapshot()
    name = ".".join(table.name())
    if current is None or current.snapshot_id == from_exclusive:
        return Walk(current.snapshot_id if current else None)
    if from_exclusive is None:
        # A first run is a backfill: every live file, every partition recomputed whole
        # (a crashed earlier attempt may have left rows the source no longer has, and
        # expiry may have cut the chain back to the table's first snapshot).
        files = live_files(table, current, ManifestContent.DATA)
        return Walk(current.snapshot_id, [current.snapshot_id], files, {int(f.partition[0]) for f in files}, [], True)
    walked: list[Snapshot] = []
    snap: Snapshot | None = current
    while snap is not None and snap.snapshot_id != from_exclusive:
        walked.append(snap)
        snap = table.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    if snap is None:
        raise WatermarkLost(
            f"{name}: watermark snapshot {from_exclusive} is not an ancestor of current snapshot "
            f"{current.snapshot_id} (rolled back or its history expired)"
        )
    walk = Walk(current.snapshot_id, [s.snapshot_id for s in walked])
    removed: set[str] = set()
    for s in reversed(walked):
        op = s.summary.operation if s.summary is not None else None
        if op == Operation.APPEND:
            walk.appended.extend(added_files(table, s))
        elif op == Operation.OVERWRITE and _is_row_delta(s):
            entries = own_entries(table, s)
            captured = list(walk.appended)
            for status, f in entries:
                if status == ManifestEntryStatus.DELETED:
                    removed.add(f.file_path)
                elif f.content == DataFileContent.DATA:
                    walk.appended.append(f)
                elif any(_may_name(f, c) for c in captured):
                    walk.rewritten_days.add(int(f.partition[0]))
        elif op == Operation.REPLACE or _is_compaction(s):
            walk.non_append.append((s.snapshot_id, "replace"))
        elif op in (Operation.OVERWRITE, Operation.DELETE):
            walk.non_append.append((s.snapshot_id, op.value))
            for status, f in own_entries(table, s):
                walk.rewritten_days.add(int(f.partition[0]))
                if status == ManifestEntryStatus.DELETED:
                    removed.add(f.file_path)
        else:
            raise NonAppendSnapshot(
                f"{name}: snapshot {s.snapshot_id} has operation {op.value if op else 'unknown'}, "
                "which IPS cannot interpret; it stops rather than skip it"
            )
    # A file appended and later rewritten within the range is covered by the rewrite.
    walk.appended = [f for f in walk.appended if f.file_path not in removed]
    return walk


def change_dates(table: Table, files: list[DataFile], field_name: str) -> list[date]:
    """Dates covered by ``files`` for ``field_name``, from their lower/upper bounds."""
    f = table.schema().find_field(field_name)
    dates: set[date] = set()
    for df in files:
        lo_b, hi_b = df.lower_bounds.get(f.field_id), df.upper_bounds.get(f.field_id)
        if lo_b is None or hi_b is None:
            raise ValueError(f"{df.file_path} carries no bounds for {field_name}; change ranges need column metrics")
        if not isinstance(f.field_type, (DateType, TimestamptzType)):
            raise TypeError(f"change ranges on {field_name} ({f.field_type}) are not supported")
        lo_v, hi_v = int(from_bytes(f.field_type, lo_b)), int(from_bytes(f.field_type, hi_b))
        if isinstance(f.field_type, DateType):
            lo, hi = EPOCH + timedelta(days=lo_v), EPOCH + timedelta(days=hi_v)
        else:
            lo = datetime.fromtimestamp(lo_v / 1e6, tz=UTC).date()
            hi = datetime.fromtimestamp(hi_v / 1e6, tz=UTC).date()
        dates.update(lo + timedelta(days=i) for i in range((hi - lo).days + 1))
    return sorted(dates)


def build_icdc(catalog: Catalog, input_table: Table, workflow: str, files: list[DataFile]) -> str:
    """(Re)create the workflow's ICDC table referencing exactly ``files`` (nothing copied).

    The table is dropped without purge and created anew, so its single
    snapshot holds only this capture. Never purge an ICDC table: its files
    belong to the input table.
    """
    name = f"{ICDC_NAMESPACE}.{workflow}"
    catalog.create_namespace_if_not_exists(ICDC_NAMESPACE)
    with contextlib.suppress(NoSuchTableError):
        catalog.drop_table(name)
    icdc = catalog.create_table(name, input_table.schema(), partition_spec=input_table.spec())
    if files:
        with icdc.transaction() as tx, tx.update_snapshot().fast_append() as append:
            for f in files:
                append.append_data_file(f)
    return name


def find_changes(workflow: str, input_table: Table, watermark: int | None, range_field: str) -> Capture:
    """The changes since ``watermark`` and their change ranges (metadata only; no ICDC table yet)."""
    walk = changed_files(input_table, watermark)
    cap = Capture(
        workflow,
        ".".join(input_table.name()),
        watermark,
        walk.to_snapshot_id,
        walk.appended,
        walk.snapshots,
        rewritten_dates=sorted(EPOCH + timedelta(days=d) for d in walk.rewritten_days),
        non_append=walk.non_append,
        first_run=walk.first_run,
    )
    if cap.files:
        cap.change_dates = change_dates(input_table, cap.files, range_field)
    return cap


def ip_capture(
    catalog: Catalog,
    workflow: str,
    input_table: Table,
    watermark: int | None,
    range_field: str,
    recorder: Recorder | None = None,
    icdc_name: str | None = None,
) -> Capture:
    """IpCapture: find the changes and their change ranges (phase ``capture``), build the ICDC table (``icdc``).

    Args:
        icdc_name: the ICDC table's name in its namespace (default: the workflow's).
    """
    rec = recorder or NullRecorder()
    with rec.phase("capture"):
        cap = find_changes(workflow, input_table, watermark, range_field)
    if not cap.empty:
        with rec.phase("icdc"):
            cap.icdc_table = build_icdc(catalog, input_table, icdc_name or workflow, cap.files)
    return cap
