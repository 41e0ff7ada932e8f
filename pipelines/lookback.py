"""The lookback strategy: recompute the last X event dates, INSERT OVERWRITE them.

The baseline teams really run, made as lean as the stage logic allows: the
scan is pruned to the window's partitions, DuckDB reads only the columns the
statement uses, and each stage writes once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta

from pipelines.context import StageContext
from pipelines.pipeline import PIPELINE, Stage, Strategy, stage
from pipelines.recompute import recompute

STRATEGY: Strategy = "lookback"


def window(processing_date: date, lookback_days: int) -> tuple[date, date]:
    """First and last event date a run on ``processing_date`` recomputes."""
    if lookback_days < 1:
        raise ValueError("lookback_days must be at least 1")
    return processing_date - timedelta(days=lookback_days - 1), processing_date


def window_dates(processing_date: date, lookback_days: int) -> list[date]:
    first, last = window(processing_date, lookback_days)
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


def run_stage(
    ctx: StageContext,
    stage_name: str,
    processing_date: date,
    lookback_days: int,
    *,
    pipeline: Sequence[Stage] = PIPELINE,
) -> None:
    """Recompute stage ``stage_name`` of ``pipeline`` for the window ending on ``processing_date``."""
    declared = stage(stage_name, pipeline)
    dates = window_dates(processing_date, lookback_days)
    ctx.recorder.note(pattern="lookback", partitions=len(dates))
    # The floor is the IPS pattern's to know (the runner shows it beside both strategies).
    recompute(ctx, declared, STRATEGY, dates, floor=False)
