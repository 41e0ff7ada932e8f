"""The three IPS usage patterns, each a thin job over the shared stage logic.

- MERGE (stage 1): the ICDC rows through the stage-1 logic; insert the event_ids
  the target lacks. Commits are APPENDs of exactly the new rows; a re-run
  inserts nothing twice.
- filter (stage 2a): the ICDC of ``playback_daily`` names the changed
  ``(event_date, account_id)`` keys; only their rows are re-aggregated and
  merged by key into the target.
- range (stage 2b): the change ranges name the changed ``event_date``s; those
  whole partitions are recomputed and overwritten.

Only the input relation and the write differ from lookback and oracle.
"""

from __future__ import annotations

from collections.abc import Callable

from pyiceberg.expressions import AlwaysTrue

from pipelines import logic
from pipelines.context import StageContext
from pipelines.engine import in_dates, partitioned_input
from pipelines.iceberg_io import FileSet, plan, plan_dates
from pipelines.ips.capture import Capture

NAMESPACE = "ips"
EVENT_DATE_OF_TS = "CAST(event_ts AS DATE)"


def _read(ctx: StageContext, files: FileSet) -> None:
    ctx.recorder.read(files.rows, files.bytes, files.files)


def _recompute_stage1(ctx: StageContext, cap: Capture) -> None:
    """Partitions rewritten upstream (OVERWRITE/DELETE): stage 1 recomputed whole from the input."""
    source = ctx.catalog.load_table(cap.input_table)
    target = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily")
    dates = cap.rewritten_dates
    with ctx.recorder.phase("plan"):
        files = plan_dates(source, dates)
    _read(ctx, files)
    ctx.engine.bind_input("events", source, files, in_dates(EVENT_DATE_OF_TS, dates))
    pieces = partitioned_input(ctx.engine, "events", source, EVENT_DATE_OF_TS, files.rows)
    ctx.engine.replace_partitions(ctx, target, logic.stage_sql("playback_daily", "events"), dates, pieces)


def merge(ctx: StageContext, cap: Capture) -> None:
    """Stage 1: MERGE INTO playback_daily ... WHEN NOT MATCHED THEN INSERT."""
    dates = cap.appended_only_dates
    if dates:
        assert cap.icdc_table is not None
        icdc = ctx.catalog.load_table(cap.icdc_table)  # read by name, as Netflix injects it
        target = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily")
        with ctx.recorder.phase("plan"):
            changes = plan(icdc, AlwaysTrue())
            # An event_id lives only in its own event_date partition: probe just those.
            existing = plan_dates(target, dates)
        _read(ctx, changes)
        _read(ctx, existing)
        ctx.engine.bind_input("events", icdc, changes, in_dates(EVENT_DATE_OF_TS, dates))
        ctx.engine.insert_missing(ctx, target, logic.stage_sql("playback_daily", "events"), "event_id", dates, existing)
    if cap.rewritten_dates:
        _recompute_stage1(ctx, cap)


def filter_keys(ctx: StageContext, cap: Capture) -> None:
    """Stage 2a: re-aggregate only the changed keys and merge them by key.

    Partitions rewritten upstream are re-aggregated whole.
    """
    daily = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily")
    target = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily_agg")
    keyed, whole, stale = cap.appended_only_dates, cap.rewritten_dates, cap.all_dates
    with ctx.recorder.phase("plan"):
        icdc = ctx.catalog.load_table(cap.icdc_table) if keyed and cap.icdc_table else None
        changes = plan(icdc, AlwaysTrue()) if icdc is not None else FileSet()
        daily_files = plan_dates(daily, stale)
        old_files = plan_dates(target, keyed)
    for files in (changes, daily_files, old_files):
        _read(ctx, files)
    ctx.engine.bind_input("daily_dates", daily, daily_files, in_dates("event_date", stale))
    agg = logic.stage_sql("playback_daily_agg", "daily")
    if icdc is not None:
        with ctx.recorder.phase("probe"):
            ctx.engine.bind_input("icdc_rows", icdc, changes, in_dates("event_date", keyed))
            keys = ctx.engine.materialize("changed_keys", "SELECT DISTINCT event_date, account_id FROM icdc_rows")
        ctx.recorder.note(changed_keys=keys)
        ctx.engine.bind_sql(
            "daily",
            "SELECT d.* FROM daily_dates d JOIN changed_keys k "
            "ON d.event_date = k.event_date AND d.account_id = k.account_id",
        )
        ctx.engine.merge_by_key(ctx, target, agg, ("event_date", "account_id"), keyed, old_files)
    if whole:
        ctx.engine.bind_sql("daily", f"SELECT * FROM daily_dates WHERE {in_dates('event_date', whole)}")
        ctx.engine.replace_partitions(ctx, ctx.catalog.load_table(target.name()), agg, whole)


def range_partitions(ctx: StageContext, cap: Capture) -> None:
    """Stage 2b: recompute the changed event_date partitions whole and overwrite them."""
    daily = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily")
    target = ctx.catalog.load_table(f"{NAMESPACE}.title_daily_rank")
    dates = cap.all_dates
    with ctx.recorder.phase("plan"):
        daily_files = plan_dates(daily, dates)
    _read(ctx, daily_files)
    ctx.engine.bind_input("daily", daily, daily_files, in_dates("event_date", dates))
    pieces = partitioned_input(ctx.engine, "daily", daily, "event_date", daily_files.rows)
    ctx.engine.replace_partitions(ctx, target, logic.stage_sql("title_daily_rank", "daily"), dates, pieces)


PATTERNS: dict[str, Callable[[StageContext, Capture], None]] = {
    "merge": merge,
    "filter": filter_keys,
    "range": range_partitions,
}
