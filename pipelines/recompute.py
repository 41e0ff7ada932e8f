"""Recompute whole ``event_date`` partitions of a stage from its input and overwrite them.

The lookback's job for its window, and IPS's for the range pattern and for
partitions rewritten upstream: one job, so the two strategies differ only in
which dates they pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pipelines.context import StageContext
from pipelines.engine import PartitionedInput
from pipelines.iceberg_io import plan_dates
from pipelines.pipeline import Stage


def recompute(ctx: StageContext, stage: Stage, strategy: str, dates: Sequence[date]) -> None:
    """INSERT OVERWRITE the partitions ``dates`` of ``strategy``'s ``stage`` from its input's same dates."""
    source_input = stage.input
    source = ctx.catalog.load_table(source_input.table(strategy))
    target = ctx.catalog.load_table(stage.table(strategy))
    with ctx.recorder.phase("plan"):
        files = plan_dates(source, dates)
    ctx.recorder.read(files.rows, files.bytes, files.files)
    rows = PartitionedInput(source_input.relation, source, source_input.date_column, dates, files)
    ctx.engine.replace_partitions(target, stage.statement(), rows, ctx.recorder, ctx.fault)
