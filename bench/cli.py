"""``ipsbench``: run, report, state, and the step-wise init/ingest/process/check."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.scenario import ENGINES, PRESETS, SCENARIO_FILE, BadScenario, Scenario, from_preset

EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT = 0, 1, 2


class BadInput(Exception):
    """Bad user input: reported on one line, exit status 2, nothing written."""


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _add_scenario_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scenario (defaults come from the preset)")
    g.add_argument("--preset", default="small", help=f"starting point: {', '.join(PRESETS)} (default small)")
    g.add_argument("--days", type=int, help="processing days to simulate, one arrival batch each")
    g.add_argument("--warmup-days", type=int, help="first days run but left out of totals")
    g.add_argument("--events-per-day", type=int, help="original events per arrival batch")
    g.add_argument("--late-fraction", type=_fraction, help="share of events arriving >= 1 day late, in [0, 1)")
    g.add_argument("--lookback-days", type=int, help="the lookback window X in days (>= 1)")
    g.add_argument(
        "--beyond-window-share",
        type=_fraction,
        help="share of late events arriving --lateness-window-days or more days late "
        "(a lookback of that window never sees them)",
    )
    g.add_argument(
        "--lateness-window-days",
        type=int,
        help="the window --beyond-window-share refers to (default 14); fixed while --lookback-days varies",
    )
    g.add_argument("--max-lateness-days", type=int, help="the longest lateness generated, in days")
    g.add_argument("--duplicate-fraction", type=_fraction, help="re-sent events per batch, share of events/day")
    g.add_argument("--malformed-fraction", type=_fraction, help="share of events with null title or bad view time")
    g.add_argument("--seed", type=int, help="generator seed (same seed, same batches)")
    g.add_argument(
        "--maintenance-every-days", type=int, help="compact small files and expire snapshots every N days (0: never)"
    )
    g.add_argument(
        "--privacy-delete-every-days",
        type=int,
        help="every N days delete all events of some accounts from the source, a non-append change (0: never)",
    )
    g.add_argument("--privacy-delete-accounts", type=int, help="accounts removed by each privacy delete (default 1)")
    g.add_argument("--engine", help="duckdb (embedded default) or spark")
    g.add_argument("--spark-master", help="Spark master URL: local[*] (default) or spark://host:7077")
    g.add_argument(
        "--merge-mode",
        help="write.merge.mode of the IPS targets: copy-on-write (default) or merge-on-read (Spark only)",
    )
    g.add_argument("--strategies", help="comma list of lookback,ips (default both)")
    g.add_argument("--check", help="compare with the oracle at the 'end' (default) or 'daily'")
    g.add_argument("--repeats", type=int, help="whole-run repeats; figures are medians")
    g.add_argument(
        "--events",
        dest="events_file",
        metavar="FILE.parquet",
        help="ingest your own events (source columns, UTC timestamps) instead of generating",
    )


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    strategies = tuple(s.strip() for s in args.strategies.split(",")) if args.strategies else None
    events_file = str(Path(args.events_file).resolve()) if args.events_file else None
    return from_preset(
        args.preset,
        days=args.days,
        warmup_days=args.warmup_days,
        events_per_day=args.events_per_day,
        late_fraction=args.late_fraction,
        lookback_days=args.lookback_days,
        beyond_window_share=args.beyond_window_share,
        lateness_window_days=args.lateness_window_days,
        max_lateness_days=args.max_lateness_days,
        duplicate_fraction=args.duplicate_fraction,
        malformed_fraction=args.malformed_fraction,
        seed=args.seed,
        maintenance_every_days=args.maintenance_every_days,
        privacy_delete_every_days=args.privacy_delete_every_days,
        privacy_delete_accounts=args.privacy_delete_accounts,
        engine=args.engine,
        spark_master=args.spark_master,
        strategies=strategies,
        check=args.check,
        merge_mode=args.merge_mode,
        repeats=args.repeats,
        events_file=events_file,
    )


def _check_new_dir(path: Path, what: str) -> None:
    """``path`` must be creatable (or an empty directory) and writable."""
    if path.exists():
        if not path.is_dir():
            raise BadInput(f"{what} {path} exists and is not a directory")
        if any(path.iterdir()):
            raise BadInput(f"{what} {path} is not empty; choose a new directory or remove it")
        if not os.access(path, os.W_OK):
            raise BadInput(f"{what} {path} is not writable")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise BadInput(f"{what} {path} cannot be created: {parent} is not writable")


def _events_for(scenario: Scenario) -> Any:
    from bench.runner import load_events
    from datagen.ingest import BadEventsFile

    try:
        events = load_events(scenario)
    except BadEventsFile as e:
        raise BadInput(str(e)) from None
    if events is not None:
        from datagen.ingest import split_by_arrival

        start, batches = split_by_arrival(events)
        scenario = Scenario.from_dict(
            {
                **scenario.as_dict(),
                "start_date": start.isoformat(),
                "days": len(batches),
                "warmup_days": min(scenario.warmup_days, len(batches) - 1),
            }
        )
    return scenario, events


def cmd_run(args: argparse.Namespace) -> int:
    scenario = scenario_from_args(args)
    out = Path(args.out)
    _check_new_dir(out, "--out")
    warehouse_root = Path(args.warehouse) if args.warehouse else out / "warehouse"
    if args.warehouse:
        _check_new_dir(warehouse_root, "--warehouse")
    if scenario.engine == "spark":
        _check_spark()
    scenario, events = _events_for(scenario)

    from bench.execute import run_scenario

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        summary, report, ok = run_scenario(scenario, events, out, warehouse_root, progress=not args.quiet)
    except BaseException:
        if created and not (out / "summary.json").exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    print_summary(summary, report)
    return EXIT_OK if ok else EXIT_MISMATCH


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
        print("IPS/lookback: " + ", ".join(f"{k} {100 * v:.1f} %" for k, v in r.items() if v is not None))
    for s in summary["stages"]:
        ratio = s.get("ratio_over_lookback", {}).get("wall_s")
        if ratio is not None:
            print(f"  {s['stage']:<20} ({s['pattern']}): IPS/lookback wall {100 * ratio:.1f} %")
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
    from reports.render import render

    out = Path(args.dir)
    if not (out / "summary.json").is_file() or not (out / "results.parquet").is_file():
        raise BadInput(f"{out} holds no result files (summary.json, results.parquet)")
    print(f"report: {render(out)}")
    return EXIT_OK


def _open_warehouse(path: str, strategies: Sequence[str] | None = None) -> tuple[Any, Scenario]:
    """Open a warehouse made by ``ipsbench init``/``run``; check its scenario and tables first.

    Args:
        strategies: the strategies whose tables the command will touch (default: the scenario's).
    """
    from sqlalchemy.exc import SQLAlchemyError

    from pipelines.catalog import SOURCE_TABLE, STAGES, CatalogMissing, catalog_path, open_catalog

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
    from pipelines.catalog import SOURCE_SCHEMA, SOURCE_TABLE, TARGETS

    for name in tables:
        expected = SOURCE_SCHEMA if name == SOURCE_TABLE else TARGETS[name.split(".", 1)[1]].schema
        actual = catalog.load_table(name).schema()
        if [(f.name, str(f.field_type)) for f in actual.fields] != [
            (f.name, str(f.field_type)) for f in expected.fields
        ]:
            raise BadInput(f"table {name} does not have the schema ipsbench expects (a different warehouse?)")


def cmd_state(args: argparse.Namespace) -> int:
    from pipelines.ips.state import StateLog, watermark
    from pipelines.ips.workflow import WORKFLOWS

    catalog, _ = _open_warehouse(args.warehouse)
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
    _check_new_dir(wh, "--warehouse")
    wh.mkdir(parents=True, exist_ok=True)
    (wh / SCENARIO_FILE).write_text(json.dumps(scenario.as_dict(), indent=2))
    create_tables(open_catalog(wh, create=True), scenario.strategies, scenario.merge_mode)
    print(f"initialized {wh} ({scenario.preset}, {scenario.days} days)")
    return EXIT_OK


def cmd_ingest(args: argparse.Namespace) -> int:
    from datagen.ingest import BadEventsFile, ingest_batch, read_events_file
    from datagen.model import arrival_batch

    catalog, scenario = _open_warehouse(args.warehouse)
    if args.events:
        try:
            batch = read_events_file(Path(args.events))
        except BadEventsFile as e:
            raise BadInput(str(e)) from None
    else:
        if not 0 <= args.day < scenario.days:
            raise BadInput(f"--day must be in [0, {scenario.days - 1}] for this warehouse, got {args.day}")
        batch = arrival_batch(scenario.event_model(), args.day)
    snap = ingest_batch(catalog, batch)
    print(f"ingested {batch.num_rows:,} events (snapshot {snap})")
    return EXIT_OK


def _check_spark() -> None:
    """Spark's Python package, Iceberg jar and JDBC driver must be installed (no JVM started)."""
    import importlib.util

    from pipelines.spark_session import SQLITE_JDBC_JAR, SparkUnavailable, iceberg_jar, jdbc_driver_jar

    if importlib.util.find_spec("pyspark") is None:
        raise BadInput("--engine spark needs pyspark: run 'make spark-deps' (pip install '.[spark]')")
    try:
        iceberg_jar()
        jdbc_driver_jar(f"jdbc:sqlite:{SQLITE_JDBC_JAR}")
    except SparkUnavailable as e:
        raise BadInput(f"--engine spark: {e}") from None


def cmd_process(args: argparse.Namespace) -> int:
    from bench.runner import make_engine, run_strategy_stage
    from pipelines.catalog import STAGES
    from pipelines.context import StageContext

    catalog, scenario = _open_warehouse(args.warehouse)
    if args.strategy not in scenario.strategies:
        raise BadInput(f"--strategy must be one of {', '.join(scenario.strategies)}, got {args.strategy!r}")
    if not 0 <= args.day < scenario.days:
        raise BadInput(f"--day must be in [0, {scenario.days - 1}] for this warehouse, got {args.day}")
    engine_name = args.engine or scenario.engine
    if engine_name not in ENGINES:
        raise BadInput(f"unknown engine {engine_name!r}; choose one of {', '.join(ENGINES)}")
    if engine_name == "spark":
        _check_spark()
    processing_date = scenario.start_date + timedelta(days=args.day)
    engine = make_engine(engine_name, Path(args.warehouse), args.spark_master or scenario.spark_master)
    try:
        ctx = StageContext(catalog, engine)
        for stage in STAGES:
            run_strategy_stage(ctx, args.strategy, stage, processing_date, scenario)
    finally:
        engine.close()
    print(f"processed day {args.day} ({processing_date}) with {args.strategy} on {engine_name}")
    return EXIT_OK


def cmd_check(args: argparse.Namespace) -> int:
    from bench.results import passed
    from bench.runner import check

    catalog, scenario = _open_warehouse(args.warehouse)
    verdicts = check(catalog, scenario)
    for s, v in verdicts.items():
        print(f"{s}: {json.dumps(v.as_dict(s == 'lookback'))}")
    return EXIT_OK if passed(verdicts) else EXIT_MISMATCH


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ipsbench",
        description="What does a fixed lookback window cost, and what does incremental processing on Iceberg "
        "metadata (IPS) save - with results proven equal to a full recompute?",
    )
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="simulate a scenario day by day with both strategies, check, report")
    run.add_argument("--out", required=True, help="new directory for results, report and (by default) the warehouse")
    run.add_argument("--warehouse", help="put the Iceberg warehouse here instead of OUT/warehouse")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_scenario_options(run)
    run.set_defaults(func=cmd_run)

    from bench.sweep import add_sweep_parser, cmd_report_any

    add_sweep_parser(sub)

    rep = sub.add_parser("report", help="re-render report.md and plots from a run's or a sweep's result files")
    rep.add_argument("dir")
    rep.set_defaults(func=cmd_report_any)

    st = sub.add_parser("state", help="per IPS workflow: watermark snapshot and recent captures")
    st.add_argument("--warehouse", required=True)
    st.add_argument("--limit", type=int, default=5, help="captures shown per workflow")
    st.set_defaults(func=cmd_state)

    init = sub.add_parser("init", help="create a warehouse for step-by-step runs")
    init.add_argument("--warehouse", required=True)
    _add_scenario_options(init)
    init.set_defaults(func=cmd_init)

    ing = sub.add_parser("ingest", help="append one arrival batch to source.playback")
    ing.add_argument("--warehouse", required=True)
    what = ing.add_mutually_exclusive_group(required=True)
    what.add_argument("--day", type=int, help="generate and ingest arrival batch P")
    what.add_argument("--events", metavar="FILE.parquet", help="ingest this events file as one batch")
    ing.set_defaults(func=cmd_ingest)

    proc = sub.add_parser("process", help="run one strategy's three stages for processing day P")
    proc.add_argument("--warehouse", required=True)
    proc.add_argument("--strategy", required=True, help="ips or lookback")
    proc.add_argument("--day", type=int, required=True)
    proc.add_argument("--engine", help="duckdb or spark (default: the warehouse's scenario); the state is shared")
    proc.add_argument("--spark-master", help="Spark master URL (default: the scenario's, local[*])")
    proc.set_defaults(func=cmd_process)

    chk = sub.add_parser("check", help="compare every strategy with the oracle (exit 0 equal/explained, 1 not)")
    chk.add_argument("--warehouse", required=True)
    chk.set_defaults(func=cmd_check)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (BadInput, BadScenario) as e:
        print(f"ipsbench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:
        if not isinstance(e, _state_errors()):
            raise
        # The warehouse is in a state IPS refuses to process (nothing was committed).
        print(f"ipsbench: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _state_errors() -> tuple[type[Exception], ...]:
    from pipelines.iceberg_io import UnsupportedTableState
    from pipelines.ips.capture import NonAppendSnapshot, WatermarkLost

    return (NonAppendSnapshot, WatermarkLost, UnsupportedTableState)


if __name__ == "__main__":
    sys.exit(main())
