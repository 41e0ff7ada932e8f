"""Row-by-row comparison of a strategy's tables with the oracle.

Mismatches are counted per key. For the lookback, a mismatch is *explained*
when its key holds an event the window could not account for:

- a late event whose first arrival came ``lookback_days`` or more days after
  its event date: the window had already moved past that date, so the
  lookback never saw it;
- an event the lookback still holds but the source no longer does (deleted
  upstream, e.g. a privacy request) after its date had left the window.

Anything else is unexplained: a bug.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines.catalog import STAGES, TARGETS
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import plan
from pipelines.oracle import PREFIX

# What identifies the rows a beyond-window event can make wrong, per stage.
AFFECTED_BY = {
    "playback_daily": ("event_id",),
    "playback_daily_agg": ("event_date", "account_id"),
    "title_daily_rank": ("event_date", "country"),
}


@dataclass
class Verdict:
    """A strategy's agreement with the oracle."""

    equal_to_oracle: bool
    mismatched_rows: int
    unexplained_mismatched_rows: int
    late_events_beyond_window: int | None = None
    deleted_events_beyond_window: int | None = None
    per_stage: dict[str, dict[str, int]] = field(default_factory=dict)

    def as_dict(self, explained: bool) -> dict[str, Any]:
        d = asdict(self)
        if not explained:
            d.pop("unexplained_mismatched_rows")
            d.pop("late_events_beyond_window")
            d.pop("deleted_events_beyond_window")
        return d


def bind_beyond_window(engine: DuckDBEngine, lookback_days: int) -> int:
    """Valid events first arriving ``lookback_days`` or more days late; returns their count."""
    return engine.materialize(
        "beyond_window_events",
        f"""
        SELECT event_id, CAST(MIN(event_ts) AS DATE) AS event_date, MIN(account_id) AS account_id,
               MIN(country) AS country
        FROM {PREFIX}events
        WHERE title_id IS NOT NULL AND view_seconds > 0
        GROUP BY event_id
        HAVING date_diff('day', CAST(MIN(event_ts) AS DATE), CAST(MIN(ingest_ts) AS DATE)) >= {int(lookback_days)}
        """,
    )


def bind_deleted_upstream(engine: DuckDBEngine, relation: str) -> int:
    """Events ``relation`` (a strategy's playback_daily) holds that the source no longer has."""
    return engine.materialize(
        "deleted_upstream_events",
        f"SELECT event_id, event_date, account_id, country FROM {relation} d "
        f"WHERE NOT EXISTS (SELECT 1 FROM {PREFIX}events e WHERE e.event_id = d.event_id)",
    )


def _bind(engine: DuckDBEngine, catalog: Catalog, strategy: str, stage: str) -> str:
    table = catalog.load_table(f"{strategy}.{stage}")
    rel = f"{strategy}_{stage}"
    files = plan(table, AlwaysTrue())
    if files.delete_files:
        # Merge-on-read (Spark): pyiceberg's scan applies the row-level deletes.
        engine.bind_arrow(rel, table.scan().to_arrow())
    else:
        engine.bind_files(rel, files, schema_to_pyarrow(table.schema(), include_field_ids=False))
    return rel


def compare(engine: DuckDBEngine, catalog: Catalog, strategy: str, lookback_days: int | None = None) -> Verdict:
    """Compare ``strategy``'s three tables with the oracle relations already computed.

    Args:
        lookback_days: for the lookback, the window that explains mismatches.
    """
    rels = {stage: _bind(engine, catalog, strategy, stage) for stage in STAGES}
    beyond = deleted = None
    if lookback_days is not None:
        beyond = bind_beyond_window(engine, lookback_days)
        deleted = bind_deleted_upstream(engine, rels["playback_daily"])
        engine.materialize(
            "unseen_events",
            "SELECT event_id, event_date, account_id, country FROM beyond_window_events "
            "UNION ALL SELECT event_id, event_date, account_id, country FROM deleted_upstream_events",
        )
    total = unexplained = 0
    per_stage = {}
    for stage in STAGES:
        rel = rels[stage]
        cols = ", ".join(f.name for f in TARGETS[stage].schema.fields)
        key = ", ".join(TARGETS[stage].key)
        oracle = f"{PREFIX}{stage}"
        engine.materialize(
            "mismatched_keys",
            f"SELECT {key} FROM (SELECT {cols} FROM {rel} EXCEPT ALL SELECT {cols} FROM {oracle}) "
            f"UNION SELECT {key} FROM (SELECT {cols} FROM {oracle} EXCEPT ALL SELECT {cols} FROM {rel})",
        )
        mismatched = engine.scalar("SELECT COUNT(*) FROM mismatched_keys")
        stage_unexplained = mismatched
        if beyond is not None and mismatched:
            # Keys of rank rows do not carry the date/country pair directly: join on them.
            by = AFFECTED_BY[stage]
            cond = " AND ".join(f"m.{c} = b.{c}" for c in by)
            stage_unexplained = engine.scalar(
                f"SELECT COUNT(*) FROM mismatched_keys m WHERE NOT EXISTS (SELECT 1 FROM unseen_events b WHERE {cond})"
            )
        per_stage[stage] = {"mismatched_rows": mismatched, "unexplained_mismatched_rows": stage_unexplained}
        total += mismatched
        unexplained += stage_unexplained
    return Verdict(total == 0, total, unexplained, beyond, deleted, per_stage)
