"""Upstream repopulation: the source's partitions over a date range rewritten with corrected data.

The story: a client bug recorded ``view_seconds`` doubled on some devices; once
fixed, the provider re-sends those days whole. The source's event-date
partitions in the range are replaced by their corrected rows in one OVERWRITE
snapshot (not an APPEND): IPS captures them as rewritten partitions, the
lookback only sees what its window recomputes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog

from pipelines.iceberg_io import overwrite_partitions, partition_dates, partition_files
from pipelines.pipeline import SOURCE_TABLE
from pipelines.recorder import NullRecorder, Recorder

# The devices whose view time the bug doubled (halved by the correction).
MIS_SCALED_DEVICES: tuple[str, ...] = ("tablet", "console")


@dataclass(frozen=True)
class Repopulated:
    """What a repopulation rewrote."""

    dates: tuple[date, ...]
    rows: int
    corrected_rows: int
    snapshot_id: int | None


def corrected(rows: pa.Table, devices: tuple[str, ...] = MIS_SCALED_DEVICES) -> tuple[pa.Table, int]:
    """``rows`` with ``view_seconds`` halved on ``devices`` (nulls stay null); and how many rows changed."""
    hit = pc.fill_null(pc.is_in(rows.column("device"), pa.array(devices)), False)
    hit = pc.and_(hit, pc.is_valid(rows.column("view_seconds")))
    view = rows.column("view_seconds")
    halved = pc.cast(pc.divide(view, pa.scalar(2, view.type)), view.type)
    fixed = pc.if_else(hit, halved, view)
    index = rows.schema.get_field_index("view_seconds")
    return rows.set_column(index, rows.schema.field(index), fixed), int(pc.sum(pc.cast(hit, pa.int64())).as_py() or 0)


def repopulate(
    catalog: Catalog,
    first: date,
    last: date,
    devices: tuple[str, ...] = MIS_SCALED_DEVICES,
    recorder: Recorder | None = None,
) -> Repopulated:
    """Rewrite the source partitions ``first``..``last`` with corrected rows, as one OVERWRITE snapshot.

    ``recorder`` is told what it read and wrote.
    """
    rec = recorder or NullRecorder()
    table = catalog.load_table(SOURCE_TABLE)
    dates = tuple(d for d in partition_dates(table) if first <= d <= last)
    if not dates:
        return Repopulated((), 0, 0, None)
    start = datetime.combine(dates[0], time(), tzinfo=UTC)
    end = datetime.combine(dates[-1] + timedelta(days=1), time(), tzinfo=UTC)
    rows = table.scan(row_filter=f"event_ts >= '{start.isoformat()}' AND event_ts < '{end.isoformat()}'").to_arrow()
    rec.read(rows.num_rows, sum(f.file_size_in_bytes for f in partition_files(table, dates)), 0)
    fixed, changed = corrected(rows, devices)
    overwrite_partitions(table, [fixed], dates, rec)
    return Repopulated(dates, fixed.num_rows, changed, catalog.load_table(SOURCE_TABLE).metadata.current_snapshot_id)
