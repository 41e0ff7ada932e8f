"""``ipsbench``: run, sweep, report, compare, state, and the step-wise init/ingest/process/check.

Exit status (DESIGN.md): 0 passed, 1 results wrong, 2 bad input, 3 internal
error, 130/143 stopped by Ctrl-C/SIGTERM; every failure is one line on stderr
(the traceback of an internal error only with ``--debug``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from bench import sweep
from bench.contract import (
    EXIT_BAD_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_MISMATCH,
    EXIT_OK,
    EXIT_TERMINATED,
    RESULTS_PARQUET,
    SCENARIO_FILE,
    SUMMARY_JSON,
    SWEEP_RESULTS,
    SWEEP_SUMMARY,
    pct,
)
from bench.options import (
    BadInput,
    add_scenario_options,
    check_new_dir,
    check_spark,
    events_for,
    scenario_from_args,
    warehouse_events,
)
from bench.scenario import ENGINES, BadScenario, Scenario

if TYPE_CHECKING:
    import pyarrow as pa

    from datagen.ingest import Ingested


def cmd_run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    out = Path(args.out)
    written = [_Written.before(check_new_dir(out, "--out"))]
    warehouse_root = Path(args.warehouse) if args.warehouse else out / "warehouse"
    if args.warehouse:
        written.append(_Written.before(check_new_dir(warehouse_root, "--warehouse")))
    if scenario.engine == "spark":
        check_spark()
    scenario, events = events_for(scenario, args.max_days)

    from bench.execute import run_scenario

    out.mkdir(parents=True, exist_ok=True)
    try:
        summary, report, ok = run_scenario(scenario, events, out, warehouse_root, progress=not args.quiet)
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM) or failed before the results were written: remove
        # what this run wrote, --out and a --warehouse given apart, so a re-run starts afresh.
        # A finished run's results stay whatever failed after them.
        if not (out / SUMMARY_JSON).exists():
            _undo(written)
        raise
    print_summary(summary, report)
    return EXIT_OK if ok else EXIT_MISMATCH


@dataclass(frozen=True)
class _Written:
    """A directory a run writes into, as it was before: ``top`` is what the run creates
    (the directory, or its first missing parent), or the directory itself when it
    already existed (empty, as ``check_new_dir`` demands)."""

    top: Path
    existed: bool

    @staticmethod
    def before(path: Path) -> _Written:
        top = path
        while not top.parent.exists():
            top = top.parent
        return _Written(top, path.exists())


def _undo(written: Sequence[_Written]) -> None:
    """Put each directory back as it was: removed if the run created it, emptied if it was given empty."""
    from pipelines.pyiceberg_compat.writer_threads import stop_writers

    with _signals_ignored():
        # pyiceberg's writer threads go on after the main thread stops: a directory removed
        # under them would be created again by their next file.
        stop_writers()
        for w in written:
            if not w.existed:
                shutil.rmtree(w.top, ignore_errors=True)
            elif w.top.is_dir():
                for child in w.top.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    """A second Ctrl-C or SIGTERM during the cleanup is ignored: the first already stops the run."""
    stops = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, signal.SIG_IGN) for s in stops}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def print_summary(summary: dict[str, Any], report: Path) -> None:
    t = summary["totals"]
    print(f"\n{'strategy':<10} {'wall s':>9} {'cpu s':>9} {'rows read':>13} {'MB read':>10} {'MB written':>11}")
    for s, v in t.items():
        print(
            f"{s:<10} {v['wall_s']:>9.2f} {v['cpu_s']:>9.2f} {v['rows_read']:>13,} "
            f"{v['bytes_read'] / 1e6:>10.1f} {v['bytes_written'] / 1e6:>11.1f}"
        )
    r = summary["ratio_ips_over_lookback"]
    if r:
        print("IPS/lookback: " + ", ".join(f"{k} {pct(v)}" for k, v in r.items() if v is not None))
    # The report's opening lines (in-window saving, price of correctness, distance from the floor).
    from reports.floor import headline

    for line in headline(summary):
        if line:
            print(line.removeprefix("- ").replace("**", ""))
    for s in summary["stages"]:
        ratio = s.get("ratio_over_lookback", {}).get("wall_s")
        if ratio is not None:
            print(f"  {s['stage']:<20} ({s['pattern']}): IPS/lookback wall {pct(ratio)}")
    for s, v in summary["correctness"].items():
        extra = ""
        if "unexplained_mismatched_rows" in v:
            extra = (
                f", {v['unexplained_mismatched_rows']} unexplained, "
                f"{v['late_events_beyond_window']} late events beyond the window"
            )
        print(f"{s}: equal to oracle {v['equal_to_oracle']}, {v['mismatched_rows']} mismatched rows{extra}")
    print(f"report: {report}")


def cmd_report(args: argparse.Namespace) -> int:
    """Re-render a run's or a sweep's report from its result files only (no engine, no catalog)."""
    out = Path(args.dir)
    if (out / SWEEP_SUMMARY).is_file():
        if not (out / SWEEP_RESULTS).is_file():
            raise BadInput(f"{out} holds {SWEEP_SUMMARY} but no {SWEEP_RESULTS}")
        from reports.sweep import render_sweep

        print(f"report: {render_sweep(out)}")
        return EXIT_OK
    if not (out / SUMMARY_JSON).is_file() or not (out / RESULTS_PARQUET).is_file():
        raise BadInput(f"{out} holds no result files ({SUMMARY_JSON}, {RESULTS_PARQUET})")
    from reports.render import render

    print(f"report: {render(out)}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    """Old and new figures of two runs, stage by stage, with the relative change."""
    from reports.compare import NotAResult, compare, format_table, read_summary, scenario_changes

    try:
        old, new = read_summary(Path(args.old)), read_summary(Path(args.new))
    except NotAResult as e:
        raise BadInput(str(e)) from None
    print(format_table(compare(old, new), scenario_changes(old, new)))
    return EXIT_OK


def _open_warehouse(path: str, strategies: Sequence[str] | None = None) -> tuple[Any, Scenario]:
    """Open a warehouse made by ``ipsbench init``/``run``; check its scenario and tables first.

    Args:
        strategies: the strategies whose tables the command will touch (default: the scenario's).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from pipelines.catalog import CatalogMissing, catalog_path, open_catalog
    from pipelines.pipeline import SOURCE_TABLE, STAGES

    wh = Path(path)
    try:
        scenario = Scenario.from_dict(json.loads((wh / SCENARIO_FILE).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        raise BadInput(
            f"{wh / SCENARIO_FILE} is missing or unreadable; create the warehouse with 'ipsbench init'"
        ) from None
    try:
        catalog = open_catalog(wh)
        needed = [SOURCE_TABLE] + [f"{s}.{t}" for s in (strategies or scenario.strategies) for t in STAGES]
        missing = [t for t in needed if not catalog.table_exists(t)]
    except CatalogMissing as e:
        raise BadInput(str(e)) from None
    except SQLAlchemyError as e:
        raise BadInput(f"{catalog_path(wh)} is not a readable ipsbench catalog: {str(e).splitlines()[0]}") from None
    if missing:
        raise BadInput(f"table(s) {', '.join(missing)} missing from the catalog (dropped by hand?)")
    _check_schemas(catalog, needed)
    return catalog, scenario


def _check_schemas(catalog: Any, tables: Sequence[str]) -> None:
    """Tables must have this version's schemas (not another tool's or an older layout)."""
    from pipelines.pipeline import SOURCE_SCHEMA, SOURCE_TABLE, stage

    for name in tables:
        expected = SOURCE_SCHEMA if name == SOURCE_TABLE else stage(name.split(".", 1)[1]).schema
        actual = catalog.load_table(name).schema()
        if [(f.name, str(f.field_type)) for f in actual.fields] != [
            (f.name, str(f.field_type)) for f in expected.fields
        ]:
            raise BadInput(f"table {name} does not have the schema ipsbench expects (a different warehouse?)")


def cmd_state(args: argparse.Namespace) -> int:
    from pipelines.ips.state import StateLog, watermark
    from pipelines.ips.workflow import WORKFLOWS

    catalog, scenario = _open_warehouse(args.warehouse)
    if "ips" not in scenario.strategies:
        # Later workflows read ips.* tables, which such a warehouse does not have.
        raise BadInput(
            f"{args.warehouse} runs only {', '.join(scenario.strategies)}: it has no IPS workflow state to show"
        )
    log = StateLog(catalog)
    for wf in WORKFLOWS.values():
        table = catalog.load_table(wf.input_table)
        mark = watermark(table, wf.name)
        print(
            f"workflow {wf.name} ({wf.pattern} pattern) on {wf.input_table}: watermark snapshot {mark}, "
            f"input at {table.metadata.current_snapshot_id}"
        )
        for run in log.runs(wf.name, limit=args.limit):
            print(
                f"  run {run['run_id']:>4} {run['status']:<9} {run['from_snapshot_id']} -> {run['to_snapshot_id']}: "
                f"{run['snapshots']} snapshot(s), {run['files']} file(s), {run['rows_captured']:,} rows, "
                f"ranges {run['change_ranges']}, icdc {run['icdc_table']}"
                + (f", non-append {run['non_append']}" if run.get("non_append", "[]") != "[]" else "")
            )
    return EXIT_OK


def cmd_init(args: argparse.Namespace) -> int:
    from pipelines.catalog import create_tables, open_catalog

    scenario = scenario_from_args(args)
    wh = Path(args.warehouse)
    check_new_dir(wh, "--warehouse")
    # The events file is read and checked as 'run' does, before anything is written; the
    # scenario records it and its arrival dates, and 'ingest --day P' takes batch P from it.
    scenario, events = events_for(scenario, args.max_days)
    wh.mkdir(parents=True, exist_ok=True)
    (wh / SCENARIO_FILE).write_text(json.dumps(scenario.as_dict(), indent=2))
    create_tables(open_catalog(wh, create=True), scenario.strategies, scenario.merge_mode)
    if events is None:
        what = scenario.preset
    else:
        what = f"events file {scenario.events_file}: {events.table.num_rows:,} rows arriving {events.first_arrival}"
        what += f" to {events.last_arrival}" + (", with impressions" if events.impressions is not None else "")
    print(f"initialized {wh} ({what}, {scenario.days} days)")
    return EXIT_OK


def _scheduled_batch(scenario: Scenario, batch: int) -> int:
    """``batch`` when the warehouse's schedule has it (``ingest --batch``, ``process --batch``), else BadInput."""
    count = scenario.days * scenario.batches_per_day
    if not 0 <= batch < count:
        raise BadInput(
            f"--batch must be in [0, {count - 1}] for this warehouse ({scenario.days} days of "
            f"{scenario.batches_per_day} batch(es) of {scenario.batch_minutes} minutes), got {batch}"
        )
    return batch


def cmd_ingest(args: argparse.Namespace) -> int:
    from bench.runner import Batches
    from datagen.ingest import BadEventsFile, ingest_arrival, read_events_file
    from pipelines.pipeline import IMPRESSIONS_TABLE

    catalog, scenario = _open_warehouse(args.warehouse)
    if args.events:
        try:
            batch = read_events_file(Path(args.events))
        except BadEventsFile as e:
            raise BadInput(str(e)) from None
        _ingested("events", batch, ingest_arrival(catalog, batch))
        return EXIT_OK
    per_day = scenario.batches_per_day
    if args.batch is not None:
        indices = [_scheduled_batch(scenario, args.batch)]
    else:
        if not 0 <= args.day < scenario.days:
            raise BadInput(f"--day must be in [0, {scenario.days - 1}] for this warehouse, got {args.day}")
        # A day is its batches in turn: the same appends as 'ingest --batch' (and 'run') make.
        indices = list(range(args.day * per_day, (args.day + 1) * per_day))
    # Initialized with --events: day P is the file's arrival date P, as 'run' ingests it.
    events = warehouse_events(scenario, Path(args.warehouse)) if scenario.events_file is not None else None
    batches = Batches(scenario, events)
    for index in indices:
        batch, shown = batches.batch(index)
        if per_day > 1:
            print(f"batch {index} (day {index // per_day}, from minute {index % per_day * scenario.batch_minutes}):")
        if events is not None and events.impressions is None:
            print("impressions: none (initialized without --impressions)")
        else:
            _ingested("impressions", shown, ingest_arrival(catalog, shown, table_name=IMPRESSIONS_TABLE))
        _ingested("events", batch, ingest_arrival(catalog, batch))
    day = indices[-1] // per_day
    if indices[-1] % per_day == per_day - 1 and day == scenario.repopulate_day:
        from bench.backfill import repopulated_range
        from datagen.repopulate import repopulate

        first, last = repopulated_range(scenario, scenario.start_date)
        done = repopulate(catalog, first, last)
        print(
            f"repopulated: source event dates {first}..{last} rewritten ({len(done.dates)} partitions, "
            f"{done.corrected_rows:,} rows corrected; snapshot {done.snapshot_id})"
        )
    return EXIT_OK


def _ingested(what: str, batch: pa.Table, done: Ingested) -> None:
    if batch.num_rows == 0:
        print(f"{what}: none arrive in this batch")
    elif done.appended:
        print(f"{what}: ingested {batch.num_rows:,} (snapshot {done.snapshot_id})")
    else:
        print(f"{what}: batch already committed, nothing appended ({batch.num_rows:,} rows)")


def cmd_process(args: argparse.Namespace) -> int:
    from bench.backfill import pipeline_on
    from bench.runner import make_engine, run_strategy_stage
    from pipelines.context import StageContext
    from pipelines.lock import release

    catalog, scenario = _open_warehouse(args.warehouse)
    if args.strategy not in scenario.strategies:
        raise BadInput(f"--strategy must be one of {', '.join(scenario.strategies)}, got {args.strategy!r}")
    day = args.day if args.batch is None else _scheduled_batch(scenario, args.batch) // scenario.batches_per_day
    if not 0 <= day < scenario.days:
        raise BadInput(f"--day must be in [0, {scenario.days - 1}] for this warehouse, got {day}")
    engine_name = args.engine or scenario.engine
    if engine_name not in ENGINES:
        raise BadInput(f"unknown engine {engine_name!r}; choose one of {', '.join(ENGINES)}")
    if engine_name == "spark":
        check_spark()
    if args.lock_timeout < 0:
        raise BadInput(f"--lock-timeout must be >= 0 seconds, got {args.lock_timeout:g}")
    processing_date = scenario.start_date + timedelta(days=day)
    # One process of a strategy per warehouse: a second would capture the same snapshots
    # and race the first on the watermarks and target tables.
    lock = f"process --strategy {args.strategy}"
    token = _take_process_lock(catalog, lock, args.lock_timeout)
    try:
        engine = make_engine(engine_name, Path(args.warehouse), args.spark_master or scenario.spark_master)
        try:
            ctx = StageContext(catalog, engine, processing_date=processing_date)
            # The logic in force that day (a scenario's logic change takes effect on its day).
            in_force = pipeline_on(scenario, scenario.start_date, day)
            for stage in in_force:
                run_strategy_stage(ctx, args.strategy, stage.name, processing_date, scenario, pipeline=in_force)
        finally:
            engine.close()
    finally:
        release(catalog.engine, lock, token)
    print(f"processed day {day} ({processing_date}) with {args.strategy} on {engine_name}")
    return EXIT_OK


def _take_process_lock(catalog: Any, name: str, timeout: float) -> str:
    """Take the warehouse's lock ``name``; another live holder is bad input (exit 2), not a crash."""
    from pipelines.lock import LockHeld, acquire

    def note(line: str) -> None:
        print(f"ipsbench: note: {line}", file=sys.stderr)

    try:
        return acquire(catalog.engine, name, timeout, note)
    except LockHeld as e:
        hint = "" if timeout > 0 else "; wait for it to finish or give --lock-timeout SECONDS"
        raise BadInput(f"this warehouse's {e}{hint}") from None


def cmd_check(args: argparse.Namespace) -> int:
    from bench.backfill import check as restated_check
    from bench.backfill import pipeline_on, restated_history
    from bench.results import passed
    from bench.runner import check

    catalog, scenario = _open_warehouse(args.warehouse)
    # Every date with the logic in force after the scenario's last day; a restatement's explanations.
    final = pipeline_on(scenario, scenario.start_date, scenario.days - 1)
    if restated_history(scenario, scenario.start_date) is None:
        verdicts = check(catalog, scenario, pipeline=final)
    else:
        verdicts, _ = restated_check(catalog, scenario, scenario.start_date, pipeline=final)
    for s, v in verdicts.items():
        print(f"{s}: {json.dumps(v.as_dict(s == 'lookback'))}")
    return EXIT_OK if passed(verdicts) else EXIT_MISMATCH


def _iso_date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise BadInput(f"{option} must be a date as YYYY-MM-DD, got {text!r}") from None


def cmd_backfill(args: argparse.Namespace) -> int:
    """Preview, then write-audit-publish the restatement of one stage's partitions over a date range."""
    from bench.backfill import pipeline_on
    from bench.metrics import StageRecorder
    from pipelines.backfill import AUDITS, BackfillRefused, PublishConflict, make_plan, restate
    from pipelines.context import StageContext
    from pipelines.engine import DuckDBEngine
    from pipelines.lock import release
    from pipelines.pipeline import STAGES

    first, last = _iso_date(args.from_date, "--from"), _iso_date(args.to_date, "--to")
    if args.stage not in STAGES:
        raise BadInput(f"--stage must be one of {', '.join(STAGES)}, got {args.stage!r}")
    if args.audit not in AUDITS:
        raise BadInput(f"--audit must be one of {', '.join(AUDITS)}, got {args.audit!r}")
    catalog, scenario = _open_warehouse(args.warehouse)
    strategy = args.strategy or ("ips" if "ips" in scenario.strategies else scenario.strategies[0])
    if strategy not in scenario.strategies:
        raise BadInput(f"--strategy must be one of {', '.join(scenario.strategies)}, got {strategy!r}")
    if args.lock_timeout < 0:
        raise BadInput(f"--lock-timeout must be >= 0 seconds, got {args.lock_timeout:g}")
    # The logic in force after the scenario's last day (a logic change's new version).
    final = pipeline_on(scenario, scenario.start_date, scenario.days - 1)
    try:
        plan = make_plan(catalog, args.stage, strategy, first, last, final)
    except BackfillRefused as e:
        raise BadInput(str(e)) from None
    for line in plan.preview(args.warehouse):
        print(line)
    if args.dry_run:
        print("dry run: nothing written")
        return EXIT_OK
    # The strategy's process lock: no run of its workflows writes these tables meanwhile.
    lock = f"process --strategy {strategy}"
    token = _take_process_lock(catalog, lock, args.lock_timeout)
    rec = StageRecorder()
    try:
        engine = DuckDBEngine()
        try:
            with rec.timed():
                ctx = StageContext(catalog, engine, rec)
                out = restate(ctx, plan.restate, pipeline=final, against_oracle=args.audit == "oracle")
        finally:
            engine.close()
    except PublishConflict as e:
        raise BadInput(str(e)) from None
    finally:
        release(catalog.engine, lock, token)
    a = out.audit
    oracle_note = "" if a.oracle_mismatched_rows is None else f", {a.oracle_mismatched_rows:,} differ from the oracle"
    print(
        f"branch snapshot {out.snapshot_id}: {out.rows_written:,} rows in {out.files_written} file(s) replace "
        f"{out.files_removed} file(s); audit: {a.rows_on_branch:,} rows on the restated partitions{oracle_note}"
    )
    print(
        f"cost: wall {rec.wall_s:.2f} s, cpu {rec.cpu_s:.2f} s, read {rec.counters['rows_read']:,} rows "
        f"({rec.counters['bytes_read'] / 1e6:.1f} MB), wrote {rec.counters['bytes_written'] / 1e6:.1f} MB"
    )
    if not a.passed:
        for reason in a.reasons:
            print(f"audit failed: {reason}")
        print(f"nothing published: {plan.restate.table} is as it was (main at snapshot {out.base_snapshot_id})")
        return EXIT_MISMATCH
    if out.published:
        print(f"published: {plan.restate.table} main moved to snapshot {out.snapshot_id}")
    else:
        print(f"nothing to publish: {plan.restate.table} has no rows on those partitions before or after")
    return EXIT_OK


def add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    """``--lock-timeout``, for a command that holds a strategy's process lock."""
    parser.add_argument(
        "--lock-timeout",
        type=float,
        default=0.0,
        help="seconds to wait while another process of this strategy runs on the warehouse (default 0: refuse)",
    )


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ipsbench",
        description="What does a fixed lookback window cost, and what does incremental processing on Iceberg "
        "metadata (IPS) save - with results proven equal to a full recompute?",
    )
    p.add_argument("--debug", action="store_true", help="print the traceback of an internal error (give it first)")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate a scenario day by day with both strategies, check, report")
    run.add_argument("--out", required=True, help="new directory for results, report and (by default) the warehouse")
    run.add_argument("--warehouse", help="put the Iceberg warehouse here instead of OUT/warehouse")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    add_scenario_options(run)
    run.set_defaults(func=cmd_run)

    sweep.add_sweep_parser(sub)

    rep = sub.add_parser("report", help="re-render report.md and plots from a run's or a sweep's result files")
    rep.add_argument("dir")
    rep.set_defaults(func=cmd_report)

    cmp = sub.add_parser(
        "compare",
        help="old vs new figures and verdicts of two runs, stage by stage, with the relative change",
        description="OLD and NEW are run directories or their summary.json files (e.g. results/<date>-<machine>/).",
    )
    cmp.add_argument("old")
    cmp.add_argument("new")
    cmp.set_defaults(func=cmd_compare)

    st = sub.add_parser("state", help="per IPS workflow: watermark snapshot and recent captures")
    st.add_argument("--warehouse", required=True)
    st.add_argument("--limit", type=int, default=5, help="captures shown per workflow")
    st.set_defaults(func=cmd_state)

    init = sub.add_parser("init", help="create a warehouse for step-by-step runs")
    init.add_argument("--warehouse", required=True)
    add_scenario_options(init)
    init.set_defaults(func=cmd_init)

    ing = sub.add_parser("ingest", help="append one arrival batch to the source tables (playback, impressions)")
    ing.add_argument("--warehouse", required=True)
    what = ing.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--day", type=int, help="generate and ingest the arrivals of day P (its batches in turn at a sub-daily cadence)"
    )
    what.add_argument(
        "--batch",
        type=int,
        help="generate and ingest arrival batch B only: B counts batches from the first day's first "
        "(day B // n, n = 1440 / batch-minutes batches a day)",
    )
    what.add_argument("--events", metavar="FILE.parquet", help="ingest this events file as one batch")
    ing.set_defaults(func=cmd_ingest)

    proc = sub.add_parser("process", help="run every stage of one strategy for processing day P")
    proc.add_argument("--warehouse", required=True)
    proc.add_argument("--strategy", required=True, help="ips or lookback")
    when = proc.add_mutually_exclusive_group(required=True)
    when.add_argument("--day", type=int, help="processing day P (its date is the filter pattern's new partition)")
    when.add_argument(
        "--batch", type=int, help="after arrival batch B (see 'ingest --batch'): the run of day B // n, n batches a day"
    )
    proc.add_argument("--engine", help="duckdb or spark (default: the warehouse's scenario); the state is shared")
    proc.add_argument("--spark-master", help="Spark master URL (default: the scenario's, local[*])")
    add_lock_timeout(proc)
    proc.set_defaults(func=cmd_process)

    bf = sub.add_parser(
        "backfill",
        help="restate one stage's partitions over a date range from its inputs (preview, audit, publish)",
        description="Restate the event_date partitions FROM..TO of stage STAGE in one strategy's tables from "
        "the stage's inputs, as one OVERWRITE snapshot. It is written to an Iceberg branch, audited (row counts; "
        "with --audit oracle also the oracle on the restated partitions) and published by moving main only if "
        "the audit passes. A preview first says what is restated and what follows downstream: IPS recomputes "
        "the dependent stages at its next 'process' by itself; the lookback needs one backfill per dependent "
        "stage, in the order listed. Exit 0 published, 1 audit failed (nothing published), 2 bad input.",
    )
    bf.add_argument("--warehouse", required=True, help="a warehouse made by 'ipsbench init' and processed")
    bf.add_argument("--stage", required=True, help="the stage whose partitions are restated")
    bf.add_argument("--from", dest="from_date", required=True, metavar="DATE", help="first event date (YYYY-MM-DD)")
    bf.add_argument("--to", dest="to_date", required=True, metavar="DATE", help="last event date (YYYY-MM-DD)")
    bf.add_argument("--strategy", help="whose tables: ips (default when the warehouse runs it) or lookback")
    bf.add_argument("--dry-run", action="store_true", help="print the preview only; write nothing")
    bf.add_argument(
        "--audit",
        default="oracle",
        help="oracle (default): row counts and the oracle on the restated partitions must agree; "
        "counts: row counts only (a table that missed late data can never match the oracle)",
    )
    add_lock_timeout(bf)
    bf.set_defaults(func=cmd_backfill)

    chk = sub.add_parser("check", help="compare every strategy with the oracle (exit 0 equal/explained, 1 not)")
    chk.add_argument("--warehouse", required=True)
    chk.set_defaults(func=cmd_check)
    return p


class Terminated(BaseException):
    """SIGTERM, raised where the process is so that cleanup runs as for Ctrl-C.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception``
    (a sweep recording a failed point) mistakes it for a failure to record.
    """


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return int(args.func(args))
    except (BadInput, BadScenario) as e:
        return _fail(f"error: {e}", EXIT_BAD_INPUT)
    except KeyboardInterrupt:
        return _fail("interrupted", EXIT_INTERRUPTED)
    except Terminated:
        return _fail("terminated", EXIT_TERMINATED)
    except Exception as e:
        if isinstance(e, _state_errors()):
            # The warehouse is in a state IPS refuses to process (nothing was committed).
            return _fail(f"error: {e}", EXIT_BAD_INPUT)
        if args.debug:
            traceback.print_exc()
        # The exit-3 line reports the failure; it must stay one line whatever the message holds.
        what = ": ".join([type(e).__name__, *str(e).splitlines()[:1]])
        hint = "" if args.debug else " (run with --debug for the traceback)"
        return _fail(f"internal error: {what}{hint}", EXIT_INTERNAL)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _fail(message: str, status: int) -> int:
    print(f"ipsbench: {message}", file=sys.stderr)
    return status


def _state_errors() -> tuple[type[Exception], ...]:
    from pipelines.iceberg_io import UnsupportedTableState
    from pipelines.ips.capture import NonAppendSnapshot, WatermarkLost

    return (NonAppendSnapshot, WatermarkLost, UnsupportedTableState)


if __name__ == "__main__":
    sys.exit(main())
