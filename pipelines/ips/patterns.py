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

Partitions rewritten upstream (OVERWRITE/DELETE) are recomputed whole by every
pattern. Which table a stage reads and writes, and by which key, comes from its
declaration (``pipelines.pipeline``); only the input rows and the write differ
from lookback and oracle.
"""

from __future__ import annotations

from collections.abc import Callable

from pyiceberg.expressions import AlwaysTrue

from pipelines.context import StageContext
from pipelines.engine import Key, in_dates
from pipelines.iceberg_io import FileSet, plan, plan_dates
from pipelines.ips.capture import Capture
from pipelines.pipeline import Pattern, Stage, Strategy
from pipelines.recompute import recompute

NAMESPACE: Strategy = "ips"


def _read(ctx: StageContext, files: FileSet) -> None:
    ctx.recorder.read(files.rows, files.bytes, files.files)


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
        _read(ctx, changes)
        _read(ctx, existing)
        ctx.engine.bind_input(source_input.relation, icdc, changes, in_dates(source_input.date_column, dates))
        (key,) = stage.key
        probe = Key(key, stage.probe_key)
        ctx.engine.insert_missing(target, stage.statement(), probe, dates, existing, ctx.recorder, ctx.fault)
    if cap.rewritten_dates:
        recompute(ctx, stage, NAMESPACE, cap.rewritten_dates)


def filter_keys(ctx: StageContext, stage: Stage, cap: Capture) -> None:
    """Re-aggregate only the changed keys and merge them by key; new and rewritten partitions whole."""
    new = [d for d in cap.appended_only_dates if ctx.processing_date is not None and d >= ctx.processing_date]
    keyed = [d for d in cap.appended_only_dates if d not in new]
    if keyed and cap.icdc_table:
        source_input = stage.input
        source = ctx.catalog.load_table(source_input.table(NAMESPACE))
        target = ctx.catalog.load_table(stage.table(NAMESPACE))
        icdc = ctx.catalog.load_table(cap.icdc_table)
        with ctx.recorder.phase("plan"):
            changes = plan(icdc, AlwaysTrue())
            input_files = plan_dates(source, keyed)
            old_files = plan_dates(target, keyed)
        for files in (changes, input_files, old_files):
            _read(ctx, files)
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
        ctx.engine.merge_by_key(target, stage.statement(), stage.key, keyed, old_files, ctx.recorder, ctx.fault)
    if new or cap.rewritten_dates:
        recompute(ctx, stage, NAMESPACE, sorted([*new, *cap.rewritten_dates]))


def range_partitions(ctx: StageContext, stage: Stage, cap: Capture) -> None:
    """Recompute the changed event_date partitions whole and overwrite them."""
    recompute(ctx, stage, NAMESPACE, cap.all_dates)


PATTERNS: dict[Pattern, Callable[[StageContext, Stage, Capture], None]] = {
    "merge": merge,
    "filter": filter_keys,
    "range": range_partitions,
}
