"""Recompute whole ``event_date`` partitions of a stage from its input and overwrite them.

The lookback's job for its window, and IPS's for the range pattern and for
partitions rewritten upstream: one job, so the two strategies differ only in
which dates they pass.

Also the bookkeeping every job shares: where the rows it read and wrote lie
(per ``event_date`` partition, from Iceberg metadata) and, for IPS, the range
pattern's floor -- read the changed partitions, write their output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, timedelta

from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import Table

from pipelines.context import StageContext
from pipelines.engine import Inputs, PartitionedInput
from pipelines.iceberg_io import EPOCH, FileSet, added_after, partition_dates, plan_dates
from pipelines.pipeline import Stage
from pipelines.recorder import Figures


def figures(files: Sequence[DataFile]) -> Figures:
    """Rows (of data files) and bytes (data and delete files) of ``files``, as ``FileSet`` counts them."""
    rows = sum(f.record_count for f in files if f.content == DataFileContent.DATA)
    return rows, sum(f.file_size_in_bytes for f in files)


def per_date(files: dict[date, list[DataFile]]) -> dict[date, Figures]:
    return {d: figures(fs) for d, fs in files.items()}


def total(by_date: dict[date, Figures]) -> Figures:
    return sum(r for r, _ in by_date.values()), sum(b for _, b in by_date.values())


def bytes_per_row(fig: Figures) -> float:
    rows, size = fig
    return size / rows if rows else 0.0


def record_read(ctx: StageContext, files: FileSet, feeds: date | None = None) -> dict[date, Figures]:
    """Tell the recorder what a job read (``files``, a planned scan), and on which partitions.

    Returns the per-partition figures. ``feeds``: count all of it on that date
    instead (a carried value read from earlier partitions counts with the date it feeds).
    """
    ctx.recorder.read(files.rows, files.bytes, files.files)
    by_date = files.by_date()
    ctx.recorder.partitions(read={feeds: total(by_date)} if feeds is not None else by_date)
    return by_date


@dataclass
class Written:
    """What a write added to a table's partitions, and what those partitions hold after it."""

    added: dict[date, Figures] = field(default_factory=dict)
    after: dict[date, Figures] = field(default_factory=dict)


@contextmanager
def written(ctx: StageContext, table_name: str, dates: Sequence[date]) -> Iterator[Written]:
    """Around a write to ``dates`` of ``table_name``: tell the recorder on which partitions its new files lie.

    What the write added are the files its snapshots added that are still live
    (copy-on-write rewrites, appends and delete files alike), read from those
    snapshots' own manifests; the partitions' live files are listed once, after it.
    """
    out = Written()
    with ctx.recorder.aside():
        before = ctx.catalog.load_table(table_name).metadata.current_snapshot_id
    yield out
    with ctx.recorder.aside():
        table = ctx.catalog.load_table(table_name)
        out.after = plan_dates(table, dates).by_date()
        wanted = {(d - EPOCH).days for d in dates}
        added: dict[date, list[DataFile]] = {}
        for f in added_after(table, before):
            if int(f.partition[0]) in wanted:
                added.setdefault(EPOCH + timedelta(days=int(f.partition[0])), []).append(f)
        out.added = per_date(added)
        ctx.recorder.partitions(wrote=out.added)


def bind_carry(
    ctx: StageContext, stage: Stage, target: Table, before: str, dates: Sequence[date], feeds: date | None = None
) -> Figures:
    """Bind the value ``stage`` carries forward, from its own rows on ``dates`` matching ``before``.

    Args:
        before: a SQL predicate on the target's rows (``t.``) that keeps those
            before the dates being recomputed.
        dates: the target partitions that may hold such rows.
        feeds: the latest date the carried value feeds: its read counts there.

    Returns the rows and bytes of the files read for it.
    """
    assert stage.carry is not None
    with ctx.recorder.phase("plan"):
        files = plan_dates(target, dates)
    record_read(ctx, files, feeds)
    ctx.engine.bind_input("carry_rows", target, files)
    ctx.engine.bind_sql("carry_before", f"SELECT t.* FROM carry_rows t WHERE {before}")
    ctx.engine.bind_sql(stage.carry.relation, stage.carry.sql.format(before="carry_before"))
    return files.rows, files.bytes


def carried_floor(ctx: StageContext, stage: Stage, read: Figures) -> Figures:
    """The carry a job cannot avoid: one carried row per key (of the rows ``read`` for it, at their bytes per row)."""
    assert stage.carry is not None
    with ctx.recorder.aside():
        rows = ctx.engine.scalar(f"SELECT COUNT(*) FROM {stage.carry.relation}")
    return rows, round(rows * bytes_per_row(read))


# How a recompute writes its output: (target, stage SQL, bound inputs). The default is the engine's
# replace_partitions on ``main``; a backfill writes to an audit branch instead (pipelines.backfill).
Write = Callable[[Table, str, Inputs], None]


def recompute(
    ctx: StageContext,
    stage: Stage,
    strategy: str,
    dates: Sequence[date],
    *,
    floor: bool = True,
    write: Write | None = None,
) -> Written:
    """INSERT OVERWRITE the partitions ``dates`` of ``strategy``'s ``stage`` from its inputs' same dates.

    A stage that carries a value forward takes it from its own rows before the first of ``dates``.

    Args:
        floor: record the range floor of ``dates`` (IPS: read those partitions
            of every input and the carried value, write their output); the
            lookback is no pattern and records none.
        write: writes the output instead of the engine's ``replace_partitions`` (a backfill's branch write).
    """
    parts = []
    read_rows = read_bytes = 0
    for stage_input in stage.inputs:
        source = ctx.catalog.load_table(stage_input.table(strategy))
        with ctx.recorder.phase("plan"):
            files = plan_dates(source, dates)
        record_read(ctx, files)
        read_rows, read_bytes = read_rows + files.rows, read_bytes + files.bytes
        parts.append(
            PartitionedInput(stage_input.relation, source, stage_input.date_column, dates, files, stage.date_local)
        )
    target = ctx.catalog.load_table(stage.table(strategy))
    if stage.carry is not None and dates:
        cut = min(dates)
        earlier = [d for d in partition_dates(target) if d < cut]
        carry = bind_carry(ctx, stage, target, f"t.event_date < DATE '{cut.isoformat()}'", earlier, max(dates))
        if floor:
            carried_rows, carried_bytes = carried_floor(ctx, stage, carry)
            read_rows, read_bytes = read_rows + carried_rows, read_bytes + carried_bytes
    with written(ctx, stage.table(strategy), dates) as out:
        if write is None:
            ctx.engine.replace_partitions(target, stage.statement(), Inputs(tuple(parts)), ctx.recorder, ctx.fault)
        else:
            write(target, stage.statement(), Inputs(tuple(parts)))
    if floor:
        ctx.recorder.floor(read_rows, read_bytes, *total(out.after))
    return out
