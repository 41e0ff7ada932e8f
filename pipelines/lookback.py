"""The lookback strategy: recompute the last X event dates, INSERT OVERWRITE them.

The baseline teams really run, made as lean as the stage logic allows: the
scan is pruned to the window's partitions, DuckDB reads only the columns the
statement uses, and each stage writes once.
"""

from __future__ import annotations

from datetime import date, timedelta

from pipelines import logic
from pipelines.catalog import SOURCE_TABLE
from pipelines.context import StageContext
from pipelines.engine import in_dates, partitioned_input
from pipelines.iceberg_io import plan_dates

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
    dates = window_dates(processing_date, lookback_days)
    if stage == "playback_daily":
        source = ctx.catalog.load_table(SOURCE_TABLE)
        column = "CAST(event_ts AS DATE)"
    else:
        source = ctx.catalog.load_table(f"{STRATEGY}.playback_daily")
        column = "event_date"
    target = ctx.catalog.load_table(f"{STRATEGY}.{stage}")
    relation = logic.STAGE_INPUT[stage]
    with ctx.recorder.phase("plan"):
        files = plan_dates(source, dates)
    ctx.recorder.read(files.rows, files.bytes, files.files)
    ctx.recorder.note(pattern="lookback", partitions=len(dates))
    ctx.engine.bind_input(relation, source, files, in_dates(column, dates))
    pieces = partitioned_input(ctx.engine, relation, source, column, files.rows)
    ctx.engine.replace_partitions(ctx, target, logic.stage_sql(stage, relation), dates, pieces)
