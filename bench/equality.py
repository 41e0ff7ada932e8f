"""Row-by-row comparison of a strategy's tables with the oracle.

Mismatches are counted per key. For the lookback, a mismatch is *explained*
when its key holds an event the window could not account for:

- a late event whose first arrival came ``lookback_days`` or more days after
  its event date: the window had already moved past that date, so the
  lookback never saw it;
- an event dated after the last processing day (a device clock ahead): no
  window has reached its date yet;
- an event the lookback still holds but the source no longer does (deleted
  upstream, e.g. a privacy request) after its date had left the window.

Anything else is unexplained: a bug.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines import logic, oracle
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import plan
from pipelines.pipeline import PIPELINE, SOURCE_TABLE, SOURCES, Stage, sources_of

SOURCE = oracle.relation(SOURCE_TABLE)


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


# What identifies an unseen event, from whichever source table it came.
UNSEEN_COLUMNS = "source_table, event_id, event_date, account_id, country, title_id"


def bind_beyond_window(engine: DuckDBEngine, lookback_days: int) -> int:
    """Valid events, of every source table, no lookback window saw; returns their count.

    Those whose first arrival came ``lookback_days`` or more days after their
    event date, and those dated after the last processing day (the latest
    arrival date). Each is described by the copy the stages keep.
    """
    event_date = logic.EVENT_DATE
    arrivals = " UNION ALL ".join(f"SELECT ingest_ts FROM {oracle.relation(s.name)}" for s in SOURCES)
    engine.materialize("last_arrival", f"SELECT MAX(CAST(ingest_ts AS DATE)) AS arrival_date FROM ({arrivals})")
    unseen = (
        f"date_diff('day', {event_date}, CAST(ingest_ts AS DATE)) >= {int(lookback_days)} "
        f"OR {event_date} > (SELECT arrival_date FROM last_arrival)"
    )
    # Only an event with at least one such copy can qualify: rank just those copies.
    parts = [
        f"""
        SELECT '{s.name}' AS source_table, event_id, {event_date} AS event_date, account_id, country, title_id
        FROM (
          SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY {", ".join(s.kept_copy_order)}) AS copy_rank
          FROM {oracle.relation(s.name)}
          WHERE {s.valid} AND event_id IN (SELECT event_id FROM {oracle.relation(s.name)} WHERE {unseen})
        ) AS copies
        WHERE copy_rank = 1 AND ({unseen})
        """
        for s in SOURCES
    ]
    return engine.materialize("beyond_window_events", " UNION ALL ".join(parts))


def bind_deleted_upstream(engine: DuckDBEngine, daily: str, candidates: str) -> int:
    """Events ``daily`` (a strategy's playback_daily) holds that the source no longer has.

    Args:
        candidates: a relation of ``event_id``s to look among; such an event is
            always a stage-1 mismatch, so its mismatched keys suffice.
    """
    engine.materialize(
        "held_events",
        f"SELECT '{SOURCE_TABLE}' AS source_table, event_id, event_date, account_id, country, title_id FROM {daily} "
        f"WHERE event_id IN (SELECT event_id FROM {candidates})",
    )
    # Look the few held events up in the source (hash table on them), not the source up in them.
    return engine.materialize(
        "deleted_upstream_events",
        "SELECT * FROM held_events WHERE event_id NOT IN "
        f"(SELECT event_id FROM {SOURCE} WHERE event_id IN (SELECT event_id FROM held_events))",
    )


# Iceberg type -> the SQL type both sides are cast to before hashing.
_SQL_TYPES = {"string": "VARCHAR", "long": "BIGINT", "int": "INTEGER", "date": "DATE", "timestamptz": "TIMESTAMPTZ"}


def _row_hash(stage: Stage) -> str:
    """A 64-bit hash of a row's every column, typed alike on both sides."""
    fields = stage.schema.fields
    return "hash(" + ", ".join(f"CAST({f.name} AS {_SQL_TYPES[str(f.field_type)]})" for f in fields) + ")"


def _mismatched_keys(engine: DuckDBEngine, stage: Stage, rel: str, oracle: str) -> int:
    """Materialize ``mismatched_keys``: keys whose rows differ between ``rel`` and ``oracle``; returns their count.

    Partitions are first compared by fingerprint (row count and the sum of
    64-bit row hashes); only the partitions whose fingerprints differ are
    compared row by row, as (key, row hash) multisets. Two different rows
    compare equal only if their 64-bit hashes collide.
    """
    h = _row_hash(stage)
    key = ", ".join(stage.key)

    def fingerprint(relation: str) -> str:
        return f"SELECT event_date, COUNT(*) AS n, SUM(CAST({h} AS HUGEINT)) AS s FROM {relation} GROUP BY event_date"

    differing = engine.materialize(
        "differing_dates",
        f"SELECT COALESCE(a.event_date, b.event_date) AS event_date FROM ({fingerprint(rel)}) a "
        f"FULL OUTER JOIN ({fingerprint(oracle)}) b ON a.event_date = b.event_date "
        "WHERE a.n IS DISTINCT FROM b.n OR a.s IS DISTINCT FROM b.s",
    )
    if not differing:
        engine.materialize("mismatched_keys", f"SELECT {key} FROM {rel} WHERE FALSE")
        return 0

    def hashes(relation: str) -> str:
        return f"SELECT {h} AS row_hash FROM {relation} WHERE event_date IN (SELECT event_date FROM differing_dates)"

    # Rows one side holds and the other lacks, as hashes; then the keys holding them.
    engine.materialize(
        "mismatched_hashes",
        f"({hashes(rel)} EXCEPT ALL {hashes(oracle)}) UNION ({hashes(oracle)} EXCEPT ALL {hashes(rel)})",
    )

    def keys(relation: str) -> str:
        return (
            f"SELECT {key} FROM {relation} WHERE event_date IN (SELECT event_date FROM differing_dates) "
            f"AND {h} IN (SELECT row_hash FROM mismatched_hashes)"
        )

    return engine.materialize("mismatched_keys", f"{keys(rel)} UNION {keys(oracle)}")


def _bind(engine: DuckDBEngine, catalog: Catalog, strategy: str, stage: Stage) -> str:
    table = catalog.load_table(stage.table(strategy))
    rel = f"{strategy}_{stage.name}"
    # The engine applies the position deletes of merge-on-read tables (either engine's) itself.
    engine.bind_files(rel, plan(table, AlwaysTrue()), schema_to_pyarrow(table.schema(), include_field_ids=False))
    return rel


def compare(
    engine: DuckDBEngine,
    catalog: Catalog,
    strategy: str,
    lookback_days: int | None = None,
    *,
    pipeline: Sequence[Stage] = PIPELINE,
) -> Verdict:
    """Compare ``strategy``'s table of every stage of ``pipeline`` with the oracle relations already computed.

    Args:
        lookback_days: for the lookback, the window that explains mismatches.
        pipeline: the stages to compare (``oracle.compute`` ran the same).
    """
    rels = {s.name: _bind(engine, catalog, strategy, s) for s in pipeline}
    beyond = deleted = None
    if lookback_days is not None:
        beyond = bind_beyond_window(engine, lookback_days)
    total = unexplained = 0
    per_stage = {}
    first = pipeline[0]  # its key is the event's: its mismatches name the deleted events
    for s in pipeline:
        mismatched = _mismatched_keys(engine, s, rels[s.name], oracle.relation(s.name))
        if lookback_days is not None and s is first:
            deleted = bind_deleted_upstream(engine, rels[first.name], "mismatched_keys")
            engine.materialize(
                "unseen_events",
                f"SELECT {UNSEEN_COLUMNS} FROM beyond_window_events "
                f"UNION ALL SELECT {UNSEEN_COLUMNS} FROM deleted_upstream_events",
            )
        stage_unexplained = mismatched
        if beyond is not None and mismatched:
            reaching = ", ".join(f"'{name}'" for name in sources_of(s.name, pipeline))
            cond = " AND ".join([f"b.source_table IN ({reaching})", *(f"m.{c} = b.{c}" for c in s.affected_by)])
            if s.carry is not None:  # carried forward: the rows on and after the event's date
                cond += " AND m.event_date >= b.event_date"
            stage_unexplained = engine.scalar(
                f"SELECT COUNT(*) FROM mismatched_keys m WHERE NOT EXISTS (SELECT 1 FROM unseen_events b WHERE {cond})"
            )
        per_stage[s.name] = {"mismatched_rows": mismatched, "unexplained_mismatched_rows": stage_unexplained}
        total += mismatched
        unexplained += stage_unexplained
    return Verdict(total == 0, total, unexplained, beyond, deleted, per_stage)
