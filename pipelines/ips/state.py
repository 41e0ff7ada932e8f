"""IPS state: each workflow's watermark and a log of every capture.

The watermark is an Iceberg tag on the workflow's input table
(``ips-wm-<workflow>``): moving it is IpCommit, and being a tag it protects
the snapshot from expiry. The log lives in the catalog's own database
(table ``ips_capture_log``) so ``ipsbench state`` can show what each run
captured and whether it committed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from sqlalchemy import text

from pipelines.ips.capture import Capture

TAG_PREFIX = "ips-wm-"
COMMIT_RETRIES = 5

_DDL = """
CREATE TABLE IF NOT EXISTS ips_capture_log (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT,
  workflow TEXT NOT NULL,
  input_table TEXT NOT NULL,
  from_snapshot_id INTEGER,
  to_snapshot_id INTEGER,
  snapshots INTEGER NOT NULL,
  files INTEGER NOT NULL,
  rows_captured INTEGER NOT NULL,
  bytes_captured INTEGER NOT NULL,
  change_ranges TEXT NOT NULL,
  rewritten_dates INTEGER NOT NULL DEFAULT 0,
  non_append TEXT NOT NULL DEFAULT '[]',
  icdc_table TEXT,
  status TEXT NOT NULL,
  captured_at TEXT NOT NULL,
  committed_at TEXT,
  commit_retries INTEGER NOT NULL DEFAULT 0
)
"""


def tag_name(workflow: str) -> str:
    return f"{TAG_PREFIX}{workflow}"


def watermark(table: Table, workflow: str) -> int | None:
    """The snapshot up to which ``workflow`` has processed ``table`` (None: never)."""
    ref = table.metadata.refs.get(tag_name(workflow))
    return ref.snapshot_id if ref is not None else None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass
class StateLog:
    """The capture log in the catalog database."""

    catalog: SqlCatalog

    def __post_init__(self) -> None:
        with self.catalog.engine.begin() as conn:
            conn.execute(text(_DDL))

    def reconcile(self, workflow: str, input_table: str, mark: int | None) -> None:
        """Settle runs still marked ``captured`` against the watermark, which is the truth.

        A run whose watermark move landed but whose log update did not (a crash
        between the two) is ``committed``; any other unfinished run is
        ``abandoned``. Each input of a workflow has a watermark of its own.
        """
        with self.catalog.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE ips_capture_log SET status = CASE WHEN to_snapshot_id = :mark "
                    "THEN 'committed' ELSE 'abandoned' END "
                    "WHERE workflow = :w AND input_table = :t AND status = 'captured'"
                ),
                {"w": workflow, "t": input_table, "mark": mark},
            )

    def record_capture(self, cap: Capture) -> int:
        """Log a capture as ``captured`` (reconcile earlier runs first)."""
        ranges = [[a.isoformat(), b.isoformat()] for a, b in cap.ranges()]
        with self.catalog.engine.begin() as conn:
            result = conn.execute(
                text(
                    "INSERT INTO ips_capture_log (workflow, input_table, from_snapshot_id, to_snapshot_id, "
                    "snapshots, files, rows_captured, bytes_captured, change_ranges, rewritten_dates, non_append, "
                    "icdc_table, status, captured_at) "
                    "VALUES (:w, :t, :f, :to, :s, :n, :r, :b, :cr, :rw, :na, :icdc, 'captured', :at)"
                ),
                {
                    "w": cap.workflow,
                    "t": cap.input_table,
                    "f": cap.from_snapshot_id,
                    "to": cap.to_snapshot_id,
                    "s": len(cap.snapshots),
                    "n": len(cap.files),
                    "r": cap.rows,
                    "b": cap.bytes,
                    "cr": json.dumps(ranges),
                    "rw": len(cap.rewritten_dates),
                    "na": json.dumps([[sid, op] for sid, op in cap.non_append]),
                    "icdc": cap.icdc_table,
                    "at": _now(),
                },
            )
            run_id = result.lastrowid
        assert run_id is not None
        return int(run_id)

    def mark_committed(self, run_id: int, retries: int) -> None:
        with self.catalog.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE ips_capture_log SET status = 'committed', committed_at = :at, commit_retries = :r "
                    "WHERE run_id = :id"
                ),
                {"at": _now(), "r": retries, "id": run_id},
            )

    def runs(self, workflow: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        sql = "SELECT * FROM ips_capture_log"
        params: dict[str, Any] = {"limit": limit}
        if workflow is not None:
            sql += " WHERE workflow = :w"
            params["w"] = workflow
        sql += " ORDER BY run_id DESC LIMIT :limit"
        with self.catalog.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def ip_commit(catalog: SqlCatalog, input_table_name: str, workflow: str, snapshot_id: int) -> int:
    """IpCommit: move the workflow's watermark tag to ``snapshot_id``.

    A concurrent commit to the input table (an ingest) makes the catalog
    reject ours; the table is reloaded and the tag set again, at most
    ``COMMIT_RETRIES`` times. Returns the number of retries used.
    """
    for attempt in range(COMMIT_RETRIES + 1):
        table = catalog.load_table(input_table_name)
        try:
            table.manage_snapshots().create_tag(snapshot_id, tag_name(workflow)).commit()
            return attempt
        except CommitFailedException:
            if attempt == COMMIT_RETRIES:
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")
