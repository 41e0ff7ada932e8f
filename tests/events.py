"""Hand-built playback events for tests: exact lateness, duplicates, malformed rows."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

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


def impressions_of(events: pa.Table) -> pa.Table:
    """Impressions for tests: every event with a title, as a title shown (copies and late ones included)."""
    shown = events.filter(pc.is_valid(events.column("title_id")))
    return shown.select(["event_id", "account_id", "title_id", "country", "event_ts", "ingest_ts"])


def run_ips_day(catalog, day_batch: pa.Table, fault=None) -> None:
    """Ingest one batch (and its impressions) and run the IPS workflows on its arrival date (the processing date)."""
    from datagen.ingest import ingest_batch
    from pipelines.context import StageContext
    from pipelines.engine import DuckDBEngine
    from pipelines.ips import workflow
    from pipelines.pipeline import IMPRESSIONS_TABLE, STAGES

    ingest_batch(catalog, day_batch)
    ingest_batch(catalog, impressions_of(day_batch), table_name=IMPRESSIONS_TABLE)
    last_arrival = pc.max(day_batch.column("ingest_ts")).as_py()
    processing_date = last_arrival.date() if last_arrival is not None else None
    engine = DuckDBEngine()
    try:
        for stage in STAGES:
            ctx = StageContext(catalog, engine, processing_date=processing_date)
            if fault is not None:
                ctx.fault = fault
            workflow.run_stage(ctx, stage)
    finally:
        engine.close()


def is_valid(e: Event) -> bool:
    """Whether stage 1 keeps the event (a title and a positive view time)."""
    return e.title_id is not None and e.view_seconds is not None and e.view_seconds > 0


def run_ips_workflows(catalog, engine=None, fault=None) -> None:
    """Run the three IPS workflows once, without ingesting: a scheduler's (re)run of the day."""
    from pipelines.context import StageContext
    from pipelines.engine import DuckDBEngine
    from pipelines.ips import workflow
    from pipelines.pipeline import STAGES
    from pipelines.recorder import no_fault

    own = engine is None
    eng = DuckDBEngine() if engine is None else engine
    try:
        for stage in STAGES:
            workflow.run_stage(StageContext(catalog, eng, fault=fault or no_fault), stage)
    finally:
        if own:
            eng.close()


def ips_event_ids(catalog) -> list[str]:
    """The event_id of every row of ``ips.playback_daily``, duplicates kept, sorted."""
    table = catalog.load_table("ips.playback_daily")
    if table.current_snapshot() is None:
        return []
    return sorted(table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist())


def catalog_state(catalog) -> dict[str, tuple[int | None, dict[str, int]]]:
    """Every table's current snapshot id and refs: equal before and after means nothing was committed."""
    state = {}
    for ns in catalog.list_namespaces():
        for ident in catalog.list_tables(ns):
            meta = catalog.load_table(ident).metadata
            refs = {name: ref.snapshot_id for name, ref in meta.refs.items()}
            state[".".join(ident)] = (meta.current_snapshot_id, refs)
    return state
