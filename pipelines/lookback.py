"""The lookback strategy: recompute the last X event dates, INSERT OVERWRITE them.

The baseline teams really run, made as lean as the stage logic allows: the
scan is pruned to the window's partitions, DuckDB reads only the columns the
statement uses, and each stage writes once.
"""

from __future__ import annotations

from datetime import date, timedelta

from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines import logic
from pipelines.catalog import SOURCE_TABLE
from pipelines.context import StageContext
from pipelines.iceberg_io import overwrite_partitions, plan_dates

STRATEGY = "lookback"


def window(processing_date: date, lookback_days: int) -> tuple[date, date]:
    """First and last event date a run on ``processing_date`` recomputes."""
    if lookback_days < 1:
        raise ValueError("lookback_days must be at least 1")
    return processing_date - timedelta(days=lookback_days - 1), processing_date


def window_dates(processing_date: date, lookback_days: int) -> list[date]:
    first, last = window(processing_date, lookback_days)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def run_stage(ctx: StageContext, stage: str, processing_date: date, lookback_days: int) -> None:
    """Recompute ``stage`` for the window ending on ``processing_date``."""
    first, last = window(processing_date, lookback_days)
    dates = window_dates(processing_date, lookback_days)
    if stage == "playback_daily":
        source = ctx.catalog.load_table(SOURCE_TABLE)
        end = last + timedelta(days=1)
        where = f"event_ts >= TIMESTAMPTZ '{first} 00:00:00+00' AND event_ts < TIMESTAMPTZ '{end} 00:00:00+00'"
    else:
        source = ctx.catalog.load_table(f"{STRATEGY}.playback_daily")
        where = f"event_date BETWEEN DATE '{first}' AND DATE '{last}'"
    target = ctx.catalog.load_table(f"{STRATEGY}.{stage}")
    relation = logic.STAGE_INPUT[stage]

    with ctx.recorder.phase("plan"):
        files = plan_dates(source, dates)
    ctx.recorder.read(files.rows, files.bytes, files.files)
    ctx.recorder.note(pattern="lookback", partitions=len(dates))
    with ctx.recorder.phase("transform"):
        ctx.engine.bind_files(relation, files, schema_to_pyarrow(source.schema(), include_field_ids=False), where)
        out = ctx.engine.query(logic.stage_sql(stage, relation))
    ctx.fault("before_write")
    with ctx.recorder.phase("write"):
        overwrite_partitions(target, out, dates, ctx.recorder)
