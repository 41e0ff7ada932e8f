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
from datetime import date

from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table import Table

from pipelines import logic
from pipelines.context import StageContext
from pipelines.iceberg_io import FileSet, append, overwrite_partitions, plan, plan_dates
from pipelines.ips.capture import Capture

NAMESPACE = "ips"


def _arrow_schema(table: Table):  # type: ignore[no-untyped-def]
    return schema_to_pyarrow(table.schema(), include_field_ids=False)


def _read(ctx: StageContext, files: FileSet) -> None:
    ctx.recorder.read(files.rows, files.bytes, files.files)


def _in_dates(column: str, dates: list[date]) -> str:
    if not dates:
        return "FALSE"
    listed = ", ".join(f"DATE '{d}'" for d in dates)
    return f"{column} IN ({listed})"


def _recompute_stage1(ctx: StageContext, cap: Capture, target: Table) -> None:
    """Partitions rewritten upstream (OVERWRITE/DELETE): stage 1 recomputed whole from the input."""
    source = ctx.catalog.load_table(cap.input_table)
    dates = cap.rewritten_dates
    with ctx.recorder.phase("plan"):
        files = plan_dates(source, dates)
    _read(ctx, files)
    with ctx.recorder.phase("transform"):
        ctx.engine.bind_files("events", files, _arrow_schema(source), _in_dates("CAST(event_ts AS DATE)", dates))
        out = ctx.engine.query(logic.stage_sql("playback_daily", "events"))
    with ctx.recorder.phase("write"):
        overwrite_partitions(target, out, dates, ctx.recorder)


def merge(ctx: StageContext, cap: Capture) -> None:
    """Stage 1: MERGE INTO playback_daily ... WHEN NOT MATCHED THEN INSERT."""
    target = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily")
    dates = cap.appended_only_dates
    if dates:
        assert cap.icdc_table is not None
        icdc = ctx.catalog.load_table(cap.icdc_table)
        with ctx.recorder.phase("plan"):
            changes = plan(icdc, AlwaysTrue())
        _read(ctx, changes)
        with ctx.recorder.phase("transform"):
            ctx.engine.bind_files("events", changes, _arrow_schema(icdc), _in_dates("CAST(event_ts AS DATE)", dates))
            ctx.engine.materialize("changed_rows", logic.stage_sql("playback_daily", "events"))
        with ctx.recorder.phase("probe"):
            # An event_id lives only in its own event_date partition: probe just those.
            existing = plan_dates(target, dates)
            _read(ctx, existing)
            ctx.engine.bind_files("existing", existing, _arrow_schema(target), _in_dates("event_date", dates))
            new_rows = ctx.engine.query(
                "SELECT c.* FROM changed_rows c "
                "WHERE NOT EXISTS (SELECT 1 FROM existing e WHERE e.event_id = c.event_id)"
            )
        ctx.fault("before_write")
        with ctx.recorder.phase("write"):
            append(target, new_rows, ctx.recorder)
    if cap.rewritten_dates:
        _recompute_stage1(ctx, cap, ctx.catalog.load_table(f"{NAMESPACE}.playback_daily"))


def filter_keys(ctx: StageContext, cap: Capture) -> None:
    """Stage 2a: re-aggregate only the changed keys and merge them by key.

    Partitions rewritten upstream are re-aggregated whole.
    """
    daily = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily")
    target = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily_agg")
    keyed, whole, stale = cap.appended_only_dates, cap.rewritten_dates, cap.all_dates
    with ctx.recorder.phase("plan"):
        changes = plan(ctx.catalog.load_table(cap.icdc_table), AlwaysTrue()) if keyed and cap.icdc_table else FileSet()
        daily_files = plan_dates(daily, stale)
        old_files = plan_dates(target, keyed)
    for files in (changes, daily_files, old_files):
        _read(ctx, files)
    with ctx.recorder.phase("probe"):
        ctx.engine.bind_files("icdc_rows", changes, _arrow_schema(daily))
        keys = ctx.engine.materialize(
            "changed_keys",
            f"SELECT DISTINCT event_date, account_id FROM icdc_rows WHERE {_in_dates('event_date', keyed)}",
        )
    ctx.recorder.note(changed_keys=keys)
    with ctx.recorder.phase("transform"):
        ctx.engine.bind_files("daily_dates", daily_files, _arrow_schema(daily), _in_dates("event_date", stale))
        ctx.engine.bind_sql(
            "daily",
            "SELECT d.* FROM daily_dates d JOIN changed_keys k "
            "ON d.event_date = k.event_date AND d.account_id = k.account_id "
            f"UNION ALL SELECT * FROM daily_dates WHERE {_in_dates('event_date', whole)}",
        )
        ctx.engine.materialize("agg_new", logic.stage_sql("playback_daily_agg", "daily"))
        ctx.engine.bind_files("agg_old", old_files, _arrow_schema(target), _in_dates("event_date", keyed))
        merged = ctx.engine.query(
            "SELECT o.* FROM agg_old o WHERE NOT EXISTS (SELECT 1 FROM changed_keys k "
            "WHERE k.event_date = o.event_date AND k.account_id = o.account_id) "
            "UNION ALL SELECT * FROM agg_new"
        )
    ctx.fault("before_write")
    with ctx.recorder.phase("write"):
        overwrite_partitions(target, merged, stale, ctx.recorder)


def range_partitions(ctx: StageContext, cap: Capture) -> None:
    """Stage 2b: recompute the changed event_date partitions whole and overwrite them."""
    daily = ctx.catalog.load_table(f"{NAMESPACE}.playback_daily")
    target = ctx.catalog.load_table(f"{NAMESPACE}.title_daily_rank")
    dates = cap.all_dates
    with ctx.recorder.phase("plan"):
        daily_files = plan_dates(daily, dates)
    _read(ctx, daily_files)
    with ctx.recorder.phase("transform"):
        ctx.engine.bind_files("daily", daily_files, _arrow_schema(daily), _in_dates("event_date", dates))
        out = ctx.engine.query(logic.stage_sql("title_daily_rank", "daily"))
    ctx.fault("before_write")
    with ctx.recorder.phase("write"):
        overwrite_partitions(target, out, dates, ctx.recorder)


PATTERNS: dict[str, Callable[[StageContext, Capture], None]] = {
    "merge": merge,
    "filter": filter_keys,
    "range": range_partitions,
}
