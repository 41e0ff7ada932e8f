"""Hand-built playback events for tests: exact lateness, duplicates, malformed rows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa

from datagen.model import SOURCE_ARROW_SCHEMA

START = date(2026, 3, 1)


@dataclass(frozen=True)
class Event:
    event_id: str
    account_id: int
    title_id: int | None
    country: str
    device: str
    event_ts: datetime
    view_seconds: int | None
    ingest_ts: datetime

    def resent(self, day: int) -> Event:
        """The same payload re-sent in arrival batch ``day``."""
        return replace(self, ingest_ts=at(day, 23))


def at(day: int, hour: int) -> datetime:
    return datetime.combine(START + timedelta(days=day), datetime.min.time(), tzinfo=UTC) + timedelta(hours=hour)


def batch(events: list[Event]) -> pa.Table:
    cols = {f.name: [getattr(e, f.name) for e in events] for f in SOURCE_ARROW_SCHEMA}
    return pa.Table.from_pydict(cols, schema=SOURCE_ARROW_SCHEMA)


def run_ips_day(catalog, day_batch: pa.Table, fault=None) -> None:
    """Ingest one batch and run the three IPS workflows."""
    from datagen.ingest import ingest_batch
    from pipelines.catalog import STAGES
    from pipelines.context import StageContext
    from pipelines.engine import DuckDBEngine
    from pipelines.ips import workflow

    ingest_batch(catalog, day_batch)
    engine = DuckDBEngine()
    try:
        for stage in STAGES:
            ctx = StageContext(catalog, engine)
            if fault is not None:
                ctx.fault = fault
            workflow.run_stage(ctx, stage)
    finally:
        engine.close()
