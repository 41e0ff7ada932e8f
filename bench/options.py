"""What a user gives on the command line: the scenario options run, sweep and init share, the
scenario they make, and the checks on paths and files made before anything is written.

A bad value raises ``BadInput`` (or ``BadScenario``): one line, exit 2.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench.scenario import MAX_DAYS, PRESETS, Scenario, from_preset

if TYPE_CHECKING:
    from datagen.ingest import EventsFile


class BadInput(Exception):
    """Bad user input: reported on one line, exit status 2, nothing written."""


def _fraction(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def add_scenario_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scenario (defaults come from the preset)")
    g.add_argument("--preset", default="small", help=f"starting point: {', '.join(PRESETS)} (default small)")
    g.add_argument(
        "--days",
        type=int,
        help="processing days to simulate, a day of arrivals each (refused with --events: its arrival dates are)",
    )
    g.add_argument(
        "--warmup-days",
        type=int,
        help="first days left out of totals: their batches are ingested, then each strategy runs once "
        "over them (day by day if a --repopulate-day or --logic-change-day falls inside them); default: "
        "the preset's; with --events 0, and it must be fewer than the file's arrival dates",
    )
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
    g.add_argument(
        "--impressions-per-day",
        type=int,
        help="impressions (a title shown to an account) per arrival batch, with the same lateness "
        "(default: as many as events per day)",
    )
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
    g.add_argument(
        "--repopulate-day",
        type=int,
        help="on this processing day the source's event dates --repopulate-from-day..--repopulate-to-day "
        "(days after the start) are rewritten with corrected view_seconds, one OVERWRITE (default: never)",
    )
    g.add_argument("--repopulate-from-day", type=int, help="first repopulated event date, in days after the start")
    g.add_argument("--repopulate-to-day", type=int, help="last repopulated event date, in days after the start")
    g.add_argument(
        "--lookback-backfill",
        help="after a repopulation: 'manual' runs the lookback user's backfill of every stage in lineage "
        "order (counted as user steps); 'none' (default) leaves it to the window",
    )
    g.add_argument(
        "--logic-change-day",
        type=int,
        help="from this processing day stage 1 caps view time at --new-view-seconds-cap on event dates from "
        "--logic-change-from-day on, and that history is restated under it (default: never)",
    )
    g.add_argument(
        "--logic-change-from-day", type=int, help="first event date of the new logic, in days after the start"
    )
    g.add_argument(
        "--new-view-seconds-cap", type=int, help="the new version's view-time cap (default 10800; the old is 14400)"
    )
    g.add_argument("--engine", help="duckdb (embedded default) or spark")
    g.add_argument("--spark-master", help="Spark master URL: local[*] (default) or spark://host:7077")
    g.add_argument(
        "--merge-mode",
        help=(
            "write.merge.mode of the IPS targets: merge-on-read (default: position deletes plus the "
            "new rows, folded at each maintenance) or copy-on-write (the touched partitions "
            "rewritten); both engines"
        ),
    )
    g.add_argument("--strategies", help="comma list of lookback,ips (default both)")
    g.add_argument(
        "--check",
        help="compare with the oracle at the 'end' (default), 'daily' (after every day) or 'batch' "
        "(after every arrival batch, each strategy once it has run on it)",
    )
    g.add_argument(
        "--batch-minutes",
        type=int,
        help="length of an arrival batch in minutes, dividing 1440 (default 1440: one batch a day); each batch "
        "is one append per input table of the events whose ingest_ts falls in it, and IPS runs after every batch",
    )
    g.add_argument(
        "--lookback-every-batch",
        action="store_true",
        default=None,
        help="run the lookback after every arrival batch too (default: once a day, after the day's last batch)",
    )
    g.add_argument("--repeats", type=int, help="whole-run repeats; figures are medians")
    g.add_argument(
        "--events",
        dest="events_file",
        metavar="FILE.parquet",
        help="ingest your own events (source columns, UTC timestamps) instead of generating: one processing "
        "day per UTC date of ingest_ts from the first to the last (--days is refused; warm-up is 0 unless "
        "--warmup-days, which must be fewer than those days)",
    )
    g.add_argument(
        "--impressions",
        dest="impressions_file",
        metavar="FILE.parquet",
        help="with --events: your impressions (event_id, account_id, title_id, country, event_ts, ingest_ts), "
        "arriving on the events file's dates; without it the impressions table stays empty",
    )
    g.add_argument(
        "--max-days",
        type=int,
        help="the most arrival dates an --events file may span (default 400): a longer one is refused",
    )


def scenario_from_args(args: argparse.Namespace) -> Scenario:
    strategies = tuple(s.strip() for s in args.strategies.split(",")) if args.strategies else None
    events_file = str(Path(args.events_file).resolve()) if args.events_file else None
    impressions_file = str(Path(args.impressions_file).resolve()) if args.impressions_file else None
    if impressions_file and not events_file:
        raise BadInput("--impressions needs --events: without an events file the generator makes impressions")
    days, warmup_days = args.days, args.warmup_days
    if events_file:
        if days is not None:
            raise BadInput(
                "--days does not apply with --events: the file's arrival dates (UTC dates of ingest_ts, "
                "first to last) are the processing days"
            )
        # The file's arrival dates replace this in events_for; until then the most a scenario may
        # have, so that any warm-up the file may allow passes. Warm-up 0 unless asked for: with the
        # preset's, a short file would be measured on its last day or two without a word.
        days = MAX_DAYS
        warmup_days = 0 if warmup_days is None else warmup_days
    return from_preset(
        args.preset,
        days=days,
        warmup_days=warmup_days,
        events_per_day=args.events_per_day,
        late_fraction=args.late_fraction,
        lookback_days=args.lookback_days,
        beyond_window_share=args.beyond_window_share,
        lateness_window_days=args.lateness_window_days,
        max_lateness_days=args.max_lateness_days,
        duplicate_fraction=args.duplicate_fraction,
        malformed_fraction=args.malformed_fraction,
        impressions_per_day=args.impressions_per_day,
        seed=args.seed,
        maintenance_every_days=args.maintenance_every_days,
        privacy_delete_every_days=args.privacy_delete_every_days,
        privacy_delete_accounts=args.privacy_delete_accounts,
        repopulate_day=args.repopulate_day,
        repopulate_from_day=args.repopulate_from_day,
        repopulate_to_day=args.repopulate_to_day,
        lookback_backfill=args.lookback_backfill,
        logic_change_day=args.logic_change_day,
        logic_change_from_day=args.logic_change_from_day,
        new_view_seconds_cap=args.new_view_seconds_cap,
        engine=args.engine,
        spark_master=args.spark_master,
        strategies=strategies,
        check=args.check,
        batch_minutes=args.batch_minutes,
        lookback_every_batch=args.lookback_every_batch,
        merge_mode=args.merge_mode,
        repeats=args.repeats,
        events_file=events_file,
        impressions_file=impressions_file,
    )


def _unresolvable_parent(path: Path) -> Path | None:
    """The missing directory a '..' of ``path`` steps out of, if any.

    The kernel cannot walk "nope/.." when "nope" is missing (or a file), while creating
    the path (mkdir -p) would create "nope", outside the directory the path names.
    """
    prefix = Path(path.anchor)
    for part in path.parts[1:] if path.anchor else path.parts:
        if part == ".." and not prefix.is_dir():
            return prefix
        prefix = prefix / part
    return None


def check_new_dir(path: Path, what: str) -> Path:
    """``path`` must be creatable (or an empty directory) and writable.

    Judged on the resolved path (symlinks and '..' followed as the kernel will), so
    that "nope/../A/warehouse" cannot pass as new while A/warehouse holds a run.

    Returns:
        the resolved path.
    """
    missing = _unresolvable_parent(path)
    if missing is not None:
        raise BadInput(
            f"{what} {path}: {missing} does not exist, so '..' after it leads nowhere; give a path without it"
        )
    resolved = path.resolve()
    shown = f"{path}" if resolved == path.absolute() else f"{path} (that is {resolved})"
    if resolved.exists():
        if not resolved.is_dir():
            raise BadInput(f"{what} {shown} exists and is not a directory")
        if any(resolved.iterdir()):
            raise BadInput(f"{what} {shown} is not empty; choose a new directory or remove it")
        if not os.access(resolved, os.W_OK):
            raise BadInput(f"{what} {shown} is not writable")
        return resolved
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise BadInput(f"{what} {shown} cannot be created: {parent} is not writable")
    return resolved


def read_events(scenario: Scenario, max_days: int | None = None) -> EventsFile:
    """The scenario's events file (and impressions file), read and checked; ``BadInput`` if broken.

    Args:
        max_days: the most arrival dates a file may span (default: the ingest's limit).
    """
    # Reading the file goes through the ingest code, which loads pyiceberg: only when there is a file.
    from datagen.ingest import DEFAULT_MAX_DAYS, BadEventsFile, EventsFile, read_events_file
    from datagen.model import IMPRESSIONS_ARROW_SCHEMA

    assert scenario.events_file is not None
    limit = DEFAULT_MAX_DAYS if max_days is None else max_days
    try:
        events = EventsFile.read(Path(scenario.events_file), limit)
        if scenario.impressions_file is not None:
            path = Path(scenario.impressions_file)
            events = events.with_impressions(read_events_file(path, limit, IMPRESSIONS_ARROW_SCHEMA), path)
    except BadEventsFile as e:
        raise BadInput(str(e)) from None
    return events


def events_for(scenario: Scenario, max_days: int | None = None) -> tuple[Scenario, EventsFile | None]:
    """The scenario's events file, read and checked, and the scenario with the file's dates and days.

    The file's arrival dates are the processing days: day 0 is its first arrival
    date, and ``days`` the dates from the first to the last. Its warm-up (0
    unless given) must leave at least one day to measure.

    Without an events file: the scenario unchanged and no events (the generator makes them).

    Args:
        max_days: the most arrival dates a file may span (default: the ingest's limit).
    """
    if scenario.events_file is None:
        return scenario, None
    events = read_events(scenario, max_days)
    if scenario.warmup_days >= events.days:
        raise BadInput(
            f"--warmup-days {scenario.warmup_days} leaves no day to measure: the events file {scenario.events_file} "
            f"has {events.days} arrival date(s) ({events.first_arrival} to {events.last_arrival}); "
            f"give at most {events.days - 1}"
        )
    scenario = Scenario.from_dict(
        {**scenario.as_dict(), "start_date": events.first_arrival.isoformat(), "days": events.days}
    ).validate()
    return scenario, events


def warehouse_events(scenario: Scenario, warehouse: Path) -> EventsFile:
    """The events file a warehouse was initialized with, read again and checked against its dates.

    ``ipsbench init --events FILE`` recorded the file and its arrival dates in
    the warehouse's scenario; each ``ingest --day P`` takes batch P from it.
    """
    assert scenario.events_file is not None
    try:
        # The span was allowed at init; the scenario's own bound is the most it can be.
        events = read_events(scenario, MAX_DAYS)
    except BadInput as e:
        raise BadInput(f"{e} (the events file {warehouse} was initialized with)") from None
    if (events.first_arrival, events.days) != (scenario.start_date, scenario.days):
        raise BadInput(
            f"events file {scenario.events_file} changed since 'ipsbench init': it now arrives "
            f"{events.first_arrival} to {events.last_arrival}, {warehouse} was initialized for "
            f"{scenario.start_date} to {scenario.start_date + timedelta(days=scenario.days - 1)}"
        )
    return events


def check_spark() -> None:
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
