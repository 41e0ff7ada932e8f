"""Recompute whole ``event_date`` partitions of a stage from its input and overwrite them.

The lookback's job for its window, and IPS's for the range pattern and for
partitions rewritten upstream: one job, so the two strategies differ only in
which dates they pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyiceberg.table import Table

from pipelines.context import StageContext
from pipelines.engine import Inputs, PartitionedInput
from pipelines.iceberg_io import partition_dates, plan_dates
from pipelines.pipeline import Stage


def bind_carry(ctx: StageContext, stage: Stage, target: Table, before: str, dates: Sequence[date]) -> None:
    """Bind the value ``stage`` carries forward, from its own rows on ``dates`` matching ``before``.

    Args:
        before: a SQL predicate on the target's rows (``t.``) that keeps those
            before the dates being recomputed.
        dates: the target partitions that may hold such rows.
    """
    assert stage.carry is not None
    with ctx.recorder.phase("plan"):
        files = plan_dates(target, dates)
    ctx.recorder.read(files.rows, files.bytes, files.files)
    ctx.engine.bind_input("carry_rows", target, files)
    ctx.engine.bind_sql("carry_before", f"SELECT t.* FROM carry_rows t WHERE {before}")
    ctx.engine.bind_sql(stage.carry.relation, stage.carry.sql.format(before="carry_before"))


def recompute(ctx: StageContext, stage: Stage, strategy: str, dates: Sequence[date]) -> None:
    """INSERT OVERWRITE the partitions ``dates`` of ``strategy``'s ``stage`` from its inputs' same dates.

    A stage that carries a value forward takes it from its own rows before the first of ``dates``.
    """
    parts = []
    for stage_input in stage.inputs:
        source = ctx.catalog.load_table(stage_input.table(strategy))
        with ctx.recorder.phase("plan"):
            files = plan_dates(source, dates)
        ctx.recorder.read(files.rows, files.bytes, files.files)
        parts.append(
            PartitionedInput(stage_input.relation, source, stage_input.date_column, dates, files, stage.date_local)
        )
    target = ctx.catalog.load_table(stage.table(strategy))
    if stage.carry is not None and dates:
        cut = min(dates)
        earlier = [d for d in partition_dates(target) if d < cut]
        bind_carry(ctx, stage, target, f"t.event_date < DATE '{cut.isoformat()}'", earlier)
    ctx.engine.replace_partitions(target, stage.statement(), Inputs(tuple(parts)), ctx.recorder, ctx.fault)
