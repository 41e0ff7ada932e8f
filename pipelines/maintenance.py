"""Snapshot expiry that keeps every IPS watermark and the chain above it.

Commit cost grows with retained snapshots; expiring old ones restores it.
Snapshots older than the oldest tagged watermark are removed (tags protect
their own snapshots), so captures can always walk from the current snapshot
back to their watermark. Metadata only: no data file is deleted.
"""

from __future__ import annotations

from datetime import UTC, datetime

from pyiceberg.table import Table
from pyiceberg.table.refs import SnapshotRefType


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
