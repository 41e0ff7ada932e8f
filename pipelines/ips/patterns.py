"""The three IPS usage patterns, each a thin job over the shared stage logic.

- MERGE (stage 1): the ICDC rows through the stage-1 logic; insert the keys
  the target lacks. Commits are APPENDs of exactly the new rows; a re-run
  inserts nothing twice.
- filter (stage 2a), as Netflix runs it: the processing date's partition (new
  data) is recomputed whole, with no join; for earlier dates the ICDC of its
  input names the changed keys, and only their rows are re-aggregated and
  merged by key into the target.
- range (stage 2b): the change ranges name the changed ``event_date``s; those
  whole partitions are recomputed and overwritten.
- forward range (stage 2d, a running total): per changed account its earliest
  changed date; its rows from there on are recomputed from its total before
  it (read from the target) and merged by key.

Partitions rewritten upstream (OVERWRITE/DELETE) are recomputed whole by every
pattern.

Each pattern records its **floor**, the work it cannot avoid for the changes it
processed: MERGE reads the captured rows and writes the missing ones; filter
reads the changed keys' rows and writes their aggregates; range reads and
writes the changed partitions; forward reads each changed account's rows from
its earliest changed date (and its carried total) and writes its rows from
there on. Rows are counted exactly; bytes are those rows at the average bytes
per row of the partitions they lie in. Partitions rewritten upstream have the
range floor. The counting runs in ``recorder.aside()``, outside the stage's times.

Which table a stage reads and writes, and by which key, comes from its
declaration (``pipelines.pipeline``); only the input rows and the write differ
from lookback and oracle.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date

from pyiceberg.expressions import AlwaysTrue

from pipelines.context import StageContext
from pipelines.engine import Key, in_dates
from pipelines.iceberg_io import partition_dates, plan, plan_dates
from pipelines.ips.capture import Capture
from pipelines.pipeline import Pattern, Stage, Strategy
from pipelines.recompute import (
    bind_carry,
    bytes_per_row,
    carried_floor,
    recompute,
    record_read,
    total,
    written,
)
from pipelines.recorder import Figures

NAMESPACE: Strategy = "ips"


def _on(dates: list[date], by_date: dict[date, Figures]) -> Figures:
    """The rows and bytes of ``by_date`` on ``dates``."""
    wanted = set(dates)
    return total({d: f for d, f in by_date.items() if d in wanted})


def _range_floor(ctx: StageContext, stage: Stage, dates: list[date], after: dict[date, Figures]) -> None:
    """The range floor of ``dates``, recomputed whole by a job that recorded none: read input, write output."""
    if not dates:
        return
    with ctx.recorder.aside():
        inputs = [plan_dates(ctx.catalog.load_table(i.table(NAMESPACE)), dates) for i in stage.inputs]
    ctx.recorder.floor(sum(f.rows for f in inputs), sum(f.bytes for f in inputs), *_on(dates, after))


def _key_floor(ctx: StageContext, stage: Stage, cap: Capture, dates: list[date], after: dict[date, Figures]) -> None:
    """The filter floor of ``dates``: read the changed keys' input rows, write one aggregate per changed key."""
    if not dates or not cap.icdc_table:
        return
    source_input = stage.input
    keys = ", ".join(stage.key)
    on = " AND ".join(f"d.{k} = k.{k}" for k in stage.key)
    where = in_dates(source_input.date_column, dates)
    with ctx.recorder.aside():
        source = ctx.catalog.load_table(source_input.table(NAMESPACE))
        icdc = ctx.catalog.load_table(cap.icdc_table)
        inputs = plan_dates(source, dates)
        ctx.engine.bind_input("floor_icdc", icdc, plan(icdc, AlwaysTrue()), where)
        changed = ctx.engine.materialize("floor_keys", f"SELECT DISTINCT {keys} FROM floor_icdc")
        ctx.engine.bind_input("floor_input", source, inputs, where)
        rows = ctx.engine.scalar(f"SELECT COUNT(*) FROM floor_input d JOIN floor_keys k ON {on}")
    out = bytes_per_row(_on(dates, after))
    ctx.recorder.floor(rows, round(rows * bytes_per_row((inputs.rows, inputs.bytes))), changed, round(changed * out))


def merge(ctx: StageContext, stage: Stage, cap: Capture) -> None:
    """MERGE INTO target ... WHEN NOT MATCHED THEN INSERT, on the stage's key."""
    dates = cap.appended_only_dates
    if dates:
        assert cap.icdc_table is not None
        source_input = stage.input
        icdc = ctx.catalog.load_table(cap.icdc_table)  # read by name, as Netflix injects it
        target = ctx.catalog.load_table(stage.table(NAMESPACE))
        with ctx.recorder.phase("plan"):
            changes = plan(icdc, AlwaysTrue())
            # A key lives only in its own event_date partition: probe just those.
            existing = plan_dates(target, dates)
        captured = record_read(ctx, changes)
        record_read(ctx, existing)
        ctx.engine.bind_input(source_input.relation, icdc, changes, in_dates(source_input.date_column, dates))
        (key,) = stage.key
        probe = Key(key, stage.probe_key)
        with written(ctx, stage.table(NAMESPACE), dates) as out:
            ctx.engine.insert_missing(target, stage.statement(), probe, dates, existing, ctx.recorder, ctx.fault)
        # The floor: read the captured rows of these partitions, write the ones the target lacked.
        ctx.recorder.floor(*_on(dates, captured), *total(out.added))
    if cap.rewritten_dates:
        recompute(ctx, stage, NAMESPACE, cap.rewritten_dates)


def filter_keys(ctx: StageContext, stage: Stage, cap: Capture) -> None:
    """Re-aggregate only the changed keys and merge them by key; new and rewritten partitions whole."""
    new = [d for d in cap.appended_only_dates if ctx.processing_date is not None and d >= ctx.processing_date]
    keyed = [d for d in cap.appended_only_dates if d not in new]
    after: dict[date, Figures] = {}
    if keyed and cap.icdc_table:
        source_input = stage.input
        source = ctx.catalog.load_table(source_input.table(NAMESPACE))
        target = ctx.catalog.load_table(stage.table(NAMESPACE))
        icdc = ctx.catalog.load_table(cap.icdc_table)
        with ctx.recorder.phase("plan"):
            changes = plan(icdc, AlwaysTrue())
            input_files = plan_dates(source, keyed)
            old_files = plan_dates(target, keyed)
        record_read(ctx, changes)
        record_read(ctx, input_files)
        record_read(ctx, old_files)
        keys = ", ".join(stage.key)
        with ctx.recorder.phase("probe"):
            ctx.engine.bind_input("icdc_rows", icdc, changes, in_dates(source_input.date_column, keyed))
            changed = ctx.engine.materialize("changed_keys", f"SELECT DISTINCT {keys} FROM icdc_rows")
        ctx.recorder.note(changed_keys=changed)
        ctx.engine.bind_input("input_dates", source, input_files, in_dates(source_input.date_column, keyed))
        on = " AND ".join(f"d.{k} = k.{k}" for k in stage.key)
        # DuckDB pushes a join filter into the scan for one equality only: a
        # one-column pre-filter on the key's non-date column narrows the join's input.
        (column, *more) = [k for k in stage.key if k != stage.partition_field]
        narrow = "" if more else f" WHERE d.{column} IN (SELECT {column} FROM changed_keys)"
        ctx.engine.bind_sql(source_input.relation, f"SELECT d.* FROM input_dates d JOIN changed_keys k ON {on}{narrow}")
        with written(ctx, stage.table(NAMESPACE), keyed) as merged:
            ctx.engine.merge_by_key(target, stage.statement(), stage.key, keyed, old_files, ctx.recorder, ctx.fault)
        after.update(merged.after)
    if new or cap.rewritten_dates:
        # One job for both (one commit); each kind of partition gets its own floor below.
        after.update(recompute(ctx, stage, NAMESPACE, sorted([*new, *cap.rewritten_dates]), floor=False).after)
    _key_floor(ctx, stage, cap, sorted([*keyed, *new]), after)
    _range_floor(ctx, stage, cap.rewritten_dates, after)


def forward(ctx: StageContext, stage: Stage, cap: Capture) -> None:
    """Recompute each changed account's rows from its earliest changed date on; merge them by key.

    Partitions rewritten upstream make every account's rows from the earliest
    of them on be recomputed whole.

    The floor is the union of both: every account from the first rewritten
    date (``cut``) on, its total before ``cut`` carried, and each changed
    account whose earliest changed date is before ``cut`` from that date on,
    its total before it carried instead; no row is counted twice.
    """
    assert stage.carry is not None
    by = stage.carry.by
    source_input = stage.input
    source = ctx.catalog.load_table(source_input.table(NAMESPACE))
    target = ctx.catalog.load_table(stage.table(NAMESPACE))
    keyed = cap.appended_only_dates
    cut = min(cap.rewritten_dates) if cap.rewritten_dates else None
    before_cut = "" if cut is None else f" AND event_date < DATE '{cut.isoformat()}'"
    # Changed accounts that the recompute from ``cut`` already covers whole.
    covered = ""
    if keyed and cap.icdc_table:
        icdc = ctx.catalog.load_table(cap.icdc_table)
        with ctx.recorder.phase("plan"):
            changes = plan(icdc, AlwaysTrue())
        record_read(ctx, changes)
        with ctx.recorder.phase("probe"):
            ctx.engine.bind_input("icdc_rows", icdc, changes, in_dates(source_input.date_column, keyed))
            changed = ctx.engine.materialize(
                "changed_from", f"SELECT {by}, MIN(event_date) AS from_date FROM icdc_rows GROUP BY {by}"
            )
        ctx.recorder.note(changed_keys=changed)
        target_dates = partition_dates(target)
        # Every account's rows from the earliest changed date on may change; its total
        # before its own earliest changed date comes from the target's earlier rows.
        later = sorted(d for d in {*partition_dates(source), *target_dates} if d >= min(keyed))
        earlier = [d for d in target_dates if d < max(keyed)]
        with ctx.recorder.phase("plan"):
            input_files = plan_dates(source, later)
            old_files = plan_dates(target, later)
        record_read(ctx, input_files)
        record_read(ctx, old_files)
        carry = bind_carry(
            ctx,
            stage,
            target,
            f"EXISTS (SELECT 1 FROM changed_from c WHERE c.{by} = t.{by} AND t.event_date < c.from_date)",
            earlier,
            max(keyed),
        )
        ctx.engine.bind_input("input_dates", source, input_files, in_dates(source_input.date_column, later))
        ctx.engine.bind_sql(
            source_input.relation,
            f"SELECT d.* FROM input_dates d JOIN changed_from c ON d.{by} = c.{by} AND d.event_date >= c.from_date",
        )
        # The floor, counted before the write changes the target: each changed account's rows
        # from its earliest changed date on (before ``cut``: the recompute counts the rest),
        # its carried total, and its output rows there.
        carried = (0, 0)
        with ctx.recorder.aside():
            if cut is not None:
                covered = f"SELECT {by} FROM changed_from WHERE from_date < DATE '{cut.isoformat()}'"
                carried_rows = ctx.engine.scalar(
                    f"SELECT COUNT(*) FROM {stage.carry.relation} WHERE {by} IN ({covered})"
                )
                carried = (carried_rows, round(carried_rows * bytes_per_row(carry)))
            rows = ctx.engine.scalar(f"SELECT COUNT(*) FROM {source_input.relation} WHERE TRUE{before_cut}")
            outputs = ctx.engine.scalar(
                f"SELECT COUNT(*) FROM (SELECT DISTINCT event_date, {by} FROM {source_input.relation} "
                f"WHERE TRUE{before_cut}) AS o"
            )
        if cut is None:
            carried = carried_floor(ctx, stage, carry)
        with written(ctx, stage.table(NAMESPACE), later) as out:
            ctx.engine.merge_by_key(target, stage.statement(), stage.key, later, old_files, ctx.recorder, ctx.fault)
        ctx.recorder.floor(
            rows + carried[0],
            round(rows * bytes_per_row((input_files.rows, input_files.bytes))) + carried[1],
            outputs,
            round(outputs * bytes_per_row(total(out.after))),
        )
    if cut is not None:
        target = ctx.catalog.load_table(stage.table(NAMESPACE))
        dates = sorted(d for d in {*partition_dates(source), *partition_dates(target)} if d >= cut)
        out = recompute(ctx, stage, NAMESPACE, dates, floor=not covered)
        if covered:
            # The range floor of ``dates``, its carry without the accounts counted above from their own date.
            _range_floor(ctx, stage, dates, out.after)
            with ctx.recorder.aside():
                carried_rows = ctx.engine.scalar(
                    f"SELECT COUNT(*) FROM {stage.carry.relation} WHERE {by} NOT IN ({covered})"
                )
                earlier_files = plan_dates(target, [d for d in partition_dates(target) if d < cut])
            ctx.recorder.floor(
                carried_rows, round(carried_rows * bytes_per_row((earlier_files.rows, earlier_files.bytes))), 0, 0
            )


def range_partitions(ctx: StageContext, stage: Stage, cap: Capture) -> None:
    """Recompute the changed event_date partitions whole and overwrite them."""
    recompute(ctx, stage, NAMESPACE, cap.all_dates)


PATTERNS: dict[Pattern, Callable[[StageContext, Stage, Capture], None]] = {
    "merge": merge,
    "filter": filter_keys,
    "range": range_partitions,
    "forward": forward,
}
