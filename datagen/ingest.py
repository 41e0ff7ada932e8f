"""Arrival batches into ``source.playback``: one Iceberg APPEND commit each.

Also reads a user's own events file, validating it before anything is written.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog

from datagen.model import SOURCE_ARROW_SCHEMA
from pipelines.catalog import SOURCE_TABLE
from pipelines.iceberg_io import append_files


class BadEventsFile(ValueError):
    """The events file cannot be ingested; the message says why in one line."""


def ingest_batch(catalog: Catalog, batch: pa.Table) -> int | None:
    """Append one arrival batch; returns the new snapshot id (None for an empty batch)."""
    if batch.num_rows == 0:
        return None
    table = catalog.load_table(SOURCE_TABLE)
    append_files(table, batch)
    return table.metadata.current_snapshot_id


def _check_type(name: str, actual: pa.DataType, expected: pa.DataType) -> None:
    ok = (
        (pa.types.is_string(expected) and (pa.types.is_string(actual) or pa.types.is_large_string(actual)))
        or (pa.types.is_integer(expected) and pa.types.is_integer(actual))
        or (
            pa.types.is_timestamp(expected)
            and pa.types.is_timestamp(actual)
            and actual.tz in (None, "UTC", "+00:00", "Etc/UTC")
        )
    )
    if not ok:
        raise BadEventsFile(f"column {name!r} has type {actual}, expected {expected}")


def read_events_file(path: Path) -> pa.Table:
    """Read and validate a user's events file into the source schema.

    Timestamps must be UTC (or naive, taken as UTC). Raises ``BadEventsFile``.
    """
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise BadEventsFile(f"events file not found: {path}") from None
    except (OSError, pa.ArrowInvalid) as e:
        raise BadEventsFile(f"events file {path} is not readable Parquet: {str(e).splitlines()[0]}") from None
    missing = [f.name for f in SOURCE_ARROW_SCHEMA if f.name not in table.column_names]
    if missing:
        raise BadEventsFile(f"events file {path} lacks column(s): {', '.join(missing)}")
    columns = []
    for f in SOURCE_ARROW_SCHEMA:
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
    out = pa.Table.from_arrays(columns, schema=SOURCE_ARROW_SCHEMA)
    if out.num_rows == 0:
        raise BadEventsFile(f"events file {path} holds no events")
    return out


def arrival_dates(events: pa.Table) -> pa.Array:
    return pc.cast(events.column("ingest_ts"), pa.date32())


def split_by_arrival(events: pa.Table) -> tuple[date, list[pa.Table]]:
    """One batch per ingest date from the earliest to the latest (empty dates included)."""
    days = arrival_dates(events)
    first: date = pc.min(days).as_py()
    last: date = pc.max(days).as_py()
    batches = []
    for i in range((last - first).days + 1):
        d = first + timedelta(days=i)
        batches.append(events.filter(pc.equal(days, pa.scalar(d, pa.date32()))))
    return first, batches
