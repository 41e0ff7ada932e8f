"""The day-by-day simulation: ingest batch P, run each strategy's stages, check.

Both strategies read identical input; their order alternates day by day so
that drift (caches, a busy neighbour) hits both sides alike. The warm-up's
batches are ingested without runs; each strategy's first run covers them
(``first_run_day``).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog

from bench import backfill as restated
from bench.contract import FLOOR_KEYS
from bench.equality import Verdict, compare
from bench.freshness import Arrivals, Run, first_arrivals_in, strategy_freshness
from bench.metrics import StageRecorder, process_peak_rss
from bench.progress import Progress
from bench.scenario import Scenario
from datagen.ingest import EventsFile, ingest_batch, split_day
from datagen.model import IMPRESSIONS_ARROW_SCHEMA, arrival_batch, impression_batch
from pipelines import lookback, oracle
from pipelines.catalog import create_tables, open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine, Engine
from pipelines.ips import workflow as ips
from pipelines.maintenance import compact, expire_history
from pipelines.pipeline import IMPRESSIONS_TABLE, PIPELINE, SOURCE_TABLE, SOURCES, Stage, sources_of


@dataclass
class RunResult:
    """What one simulated run produced."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    daily_checks: list[dict[str, Any]] = field(default_factory=list)
    peak_rss_bytes: int = 0
    start_date: date | None = None
    engine_start_s: float = 0.0
    # The lookback's mismatched rows a repopulation explains (its window had left those dates).
    repopulation_explained_rows: int = 0
    # Per strategy, its runs in order: the batch each followed and its stages' measured wall times.
    schedule: dict[str, list[Run]] = field(default_factory=dict)
    freshness: dict[str, Any] | None = None


class Batches:
    """Arrival batches, from the generator or from a user's events file.

    A day's arrivals are cut into ``scenario.batches_per_day`` batches by
    ``ingest_ts``; batch ``b`` (global index) is slot ``b % n`` of day ``b // n``.
    """

    def __init__(self, scenario: Scenario, events: EventsFile | None = None) -> None:
        self.scenario = scenario
        self._events = events
        if events is not None:
            self.start_date, self.days = events.first_arrival, events.days
        else:
            self.start_date = scenario.start_date
            self.days = scenario.days
        self._day: tuple[int, list[pa.Table], list[pa.Table]] | None = None

    @property
    def count(self) -> int:
        """Batches over the whole run."""
        return self.days * self.scenario.batches_per_day

    def __getitem__(self, day: int) -> pa.Table:
        if self._events is not None:
            return self._events.batches[day]
        return arrival_batch(self.scenario.event_model(), day)

    def impressions(self, day: int) -> pa.Table:
        if self._events is not None:
            shown = self._events.impressions
            return shown[day] if shown is not None else IMPRESSIONS_ARROW_SCHEMA.empty_table()
        return impression_batch(self.scenario.event_model(), day, self.scenario.impressions)

    def batch(self, index: int) -> tuple[pa.Table, pa.Table]:
        """Arrival batch ``index``: its playback events and its impressions."""
        day, slot = divmod(index, self.scenario.batches_per_day)
        if self._day is None or self._day[0] != day:
            midnight = self.start_date + timedelta(days=day)
            minutes = self.scenario.batch_minutes
            shown = self.impressions(day)
            self._day = (day, split_day(self[day], midnight, minutes), split_day(shown, midnight, minutes))
        return self._day[1][slot], self._day[2][slot]


def make_engine(name: str, warehouse: Path, spark_master: str = "local[*]") -> Engine:
    """The engine ``name`` on ``warehouse`` (Spark is imported only when asked for)."""
    if name == "spark":
        from pipelines.spark_engine import SparkEngine

        return SparkEngine(warehouse, spark_master)
    return DuckDBEngine()


def run_strategy_stage(
    ctx: StageContext,
    strategy: str,
    stage: str,
    processing_date: date,
    scenario: Scenario,
    pipeline: Sequence[Stage] = PIPELINE,
    *,
    lookback_days: int | None = None,
) -> None:
    """One stage of one strategy: what differs is only which rows it reads and how it writes.

    ``lookback_days`` widens the lookback's window for one run (its first, over the warm-up).
    """
    if strategy == "lookback":
        days = scenario.lookback_days if lookback_days is None else lookback_days
        lookback.run_stage(ctx, stage, processing_date, days, pipeline=pipeline)
    else:
        ips.run_stage(ctx, stage, pipeline=pipeline)


def check(
    catalog: SqlCatalog,
    scenario: Scenario,
    *,
    pipeline: Sequence[Stage] = PIPELINE,
    strategies: Sequence[str] | None = None,
) -> dict[str, Verdict]:
    """Recompute the oracle of ``pipeline`` and compare each strategy's tables of it (default: every
    strategy of the scenario) with the oracle."""
    engine = DuckDBEngine()
    try:
        oracle.compute(engine, catalog, pipeline=pipeline)
        return {
            s: compare(engine, catalog, s, scenario.lookback_days if s == "lookback" else None, pipeline=pipeline)
            for s in (scenario.strategies if strategies is None else strategies)
        }
    finally:
        engine.close()


# Source partitions gain a small file per late batch; rewriting them often costs
# more than the lookback's rereads save, so only heavily fragmented ones are compacted.
SOURCE_COMPACT_MIN_FILES = 16


def _maintain(
    catalog: SqlCatalog, scenario: Scenario, base: dict[str, Any], pipeline: Sequence[Stage] = PIPELINE
) -> list[dict[str, Any]]:
    """Periodic upkeep a real deployment runs, timed apart from the stages.

    Shared: compact the source's small late-data files, expire snapshots.
    IPS's own, charged to IPS: its MERGE appends a small file per changed
    partition each run, and on merge-on-read its merges by key (the filter and
    forward patterns) add a delete file and a data file to each partition they
    touch; so the targets of every stage but the range pattern's (which replaces
    partitions) are compacted, their delete files folded. A copy-on-write
    filter or forward target has nothing to compact.
    """
    rows = []
    jobs: list[tuple[str, str, Callable[[], int]]] = [
        ("shared", "compaction", lambda: compact(catalog.load_table(SOURCE_TABLE), SOURCE_COMPACT_MIN_FILES)[0]),
    ]
    merged = [s.table("ips") for s in pipeline if s.pattern != "range"]
    if "ips" in scenario.strategies and merged:
        jobs.append(("ips", "compaction", lambda: sum(compact(catalog.load_table(t))[0] for t in merged)))
    tables = [SOURCE_TABLE] + [stage.table(s) for s in scenario.strategies for stage in pipeline]
    jobs.append(("shared", "expiry", lambda: sum(expire_history(catalog.load_table(t)) for t in tables)))
    for strategy, stage, job in jobs:
        rec = StageRecorder()
        with rec.timed():
            touched = job()
        rows.append(
            {**base, "strategy": strategy, "stage": stage, **rec.row(), "pattern": stage, "files_written": touched}
        )
    return rows


def privacy_delete(catalog: SqlCatalog, scenario: Scenario, day: int) -> list[int]:
    """Remove every event of a few accounts (chosen from the seed and the day) from the source."""
    rng = np.random.default_rng([scenario.seed, day])
    accounts = sorted({int(a) for a in rng.integers(1, scenario.accounts + 1, scenario.privacy_delete_accounts)})
    catalog.load_table(SOURCE_TABLE).delete(f"account_id IN ({', '.join(map(str, accounts))})")
    return accounts


def share_floors(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A day's stage rows, each lookback row carrying the floor of its stage's IPS runs that day.

    The floor belongs to the (stage, day)'s changes, not to a strategy: both
    rows show it. IPS may run several times a day (one run per arrival batch):
    the lookback's row of the day carries the sum of their floors.
    """
    floors: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["strategy"] == "ips":
            acc = floors.setdefault(r["stage"], dict.fromkeys(FLOOR_KEYS, 0))
            for k in FLOOR_KEYS:
                acc[k] += r.get(k) or 0
    return [r if r["strategy"] == "ips" else {**r, **floors.get(r["stage"], {})} for r in rows]


def days_order(strategies: tuple[str, ...], day: int) -> Iterator[str]:
    return iter(strategies if day % 2 == 0 else tuple(reversed(strategies)))


class Arrived:
    """Every valid event's first arrival, gathered batch by batch for freshness.

    The rows (an id and two timestamps per valid event, re-sends included) live
    in a DuckDB table under a memory limit, spilled to ``spill_dir`` past it: at
    1M events a day they grow by about 80 MB a simulated day, which held as
    Arrow tables outgrew a ``medium`` run's budget. The first arrival per event
    is aggregated there once, at the end.
    """

    def __init__(self, start_date: date, spill_dir: Path) -> None:
        self.start_date = start_date
        # In memory, but past the limit DuckDB moves the table's blocks to ``spill_dir``.
        self._db = duckdb.connect(config={"memory_limit": "512MB"})
        self._db.execute(f"SET temp_directory = '{spill_dir}'")
        for source in SOURCES:
            self._db.execute(
                f'CREATE TABLE "{source.name}" (event_id VARCHAR, event_ts TIMESTAMPTZ, ingest_ts TIMESTAMPTZ)'
            )

    def add(self, playback: pa.Table, impressions: pa.Table) -> None:
        for source, rows in zip(SOURCES, (playback, impressions), strict=True):
            if rows.num_rows:
                # The source's own declaration of a valid row (the SQL the stages run).
                self._db.execute(
                    f'INSERT INTO "{source.name}" SELECT event_id, event_ts, ingest_ts FROM rows WHERE {source.valid}'
                )

    def arrivals(self, warmup_days: int) -> dict[str, Arrivals]:
        """Per source: its events (first arrival of each event_id) that arrived after the warm-up."""
        out = {s.name: first_arrivals_in(self._db, f'"{s.name}"', self.start_date, warmup_days) for s in SOURCES}
        return {name: events for name, events in out.items() if len(events.arrival_s)}

    def close(self) -> None:
        self._db.close()


def freshness_report(
    scenario: Scenario, schedule: dict[str, list[Run]], arrived: Arrived, pipeline: Sequence[Stage] = PIPELINE
) -> dict[str, Any]:
    """summary.json's freshness: per strategy and table, from the runs' schedule and the events' arrivals."""
    events = arrived.arrivals(scenario.warmup_days)
    feeds = {s.name: sources_of(s.name, pipeline) for s in pipeline}
    seconds = scenario.batch_minutes * 60
    per_strategy = {
        strategy: strategy_freshness(
            runs, seconds, events, feeds, scenario.lookback_days if strategy == "lookback" else None
        )
        for strategy, runs in schedule.items()
    }
    last = pipeline[-1].name
    return {
        "batch_minutes": scenario.batch_minutes,
        "lookback_every_batch": scenario.lookback_every_batch,
        "unit": "seconds from an event's arrival until the first run including it commits the table",
        "events_from_day": scenario.warmup_days,
        "runs": {s: len(runs) for s, runs in schedule.items()},
        "per_strategy": per_strategy,
        "last_stage": last,
        "late_to_last_stage": {s: tables[last]["late"] for s, tables in per_strategy.items() if last in tables},
    }


def first_run_day(scenario: Scenario) -> int | None:
    """The day whose last batch the strategies first run after, when the warm-up is deferred (else None).

    No figure of the warm-up is counted, and run batch by batch it costs more
    than the measured days (on ``medium``, 14 warm-up days took 2,200 of a 17-day
    run's 3,040 s). So the warm-up's arrivals are ingested batch by batch as
    usual, and each strategy runs first after the warm-up's last batch, as a
    deployment over the history: IPS's first run (no watermark) recomputes every
    partition; the lookback's covers the union of the windows the warm-up's days
    would have covered. Both start the measured days from correct tables. A
    repopulation or logic change inside the warm-up needs the earlier runs it
    restates, so the warm-up then runs batch by batch.
    """
    restatements = (scenario.repopulate_day, scenario.logic_change_day)
    if scenario.warmup_days < 1 or any(d is not None and d < scenario.warmup_days for d in restatements):
        return None
    return scenario.warmup_days - 1


def _runs_now(scenario: Scenario, day: int, last_of_day: bool) -> list[str]:
    """The strategies that run after a batch, in the day's order: none before the deferred warm-up's
    end (``first_run_day``); IPS after every batch, the lookback after the day's last (or after every
    batch with ``lookback_every_batch``)."""
    first = first_run_day(scenario)
    if first is not None and (day < first or (day == first and not last_of_day)):
        return []
    every = ("ips",) + (("lookback",) if scenario.lookback_every_batch else ())
    return [s for s in days_order(scenario.strategies, day) if last_of_day or s in every]


def simulate(
    scenario: Scenario,
    warehouse: Path,
    events: EventsFile | None = None,
    progress: bool = True,
    on_day: Callable[[int], None] | None = None,
    *,
    pipeline: Sequence[Stage] = PIPELINE,
) -> RunResult:
    """Run the whole scenario, every stage of ``pipeline``, into ``warehouse``; returns per-stage rows and verdicts.

    Each day's arrivals come in ``scenario.batches_per_day`` batches; after each
    batch the strategies due run (``_runs_now``). What happens once a day -- a
    privacy delete, a repopulation, maintenance, the daily check -- happens at
    the day's last batch.
    """
    batches = Batches(scenario, events)
    result = RunResult(start_date=batches.start_date)
    catalog = open_catalog(warehouse, create=True)
    create_tables(catalog, scenario.strategies, scenario.merge_mode, pipeline=pipeline)
    t0 = time.perf_counter()
    engine = make_engine(scenario.engine, warehouse, scenario.spark_master)
    result.engine_start_s = time.perf_counter() - t0
    per_day = scenario.batches_per_day
    bar = Progress(batches.days, "ipsbench", progress)
    spill = tempfile.TemporaryDirectory(prefix="ipsbench-arrivals-")
    arrived = Arrived(batches.start_date, Path(spill.name))
    first = first_run_day(scenario)
    try:
        for day in range(batches.days):
            processing_date = batches.start_date + timedelta(days=day)
            walls: dict[str, float] = {}
            window_start, _ = lookback.window(processing_date, scenario.lookback_days)
            day_rows: list[dict[str, Any]] = []
            ran_today: set[str] = set()
            in_force = restated.pipeline_on(scenario, batches.start_date, day, pipeline)
            for slot in range(per_day):
                index = day * per_day + slot
                last_of_day = slot == per_day - 1
                base = {
                    "day": day,
                    "batch": index,
                    "processing_date": processing_date.isoformat(),
                    "warmup": day < scenario.warmup_days,
                }
                rec = StageRecorder()
                with rec.timed():
                    batch, shown = batches.batch(index)
                    ingest_batch(catalog, batch)
                    ingest_batch(catalog, shown, table_name=IMPRESSIONS_TABLE)
                arrived.add(batch, shown)
                result.rows.append(
                    {
                        **base,
                        "strategy": "source",
                        "stage": "ingest",
                        **rec.row(),
                        "rows_written": batch.num_rows + shown.num_rows,
                        # History length: what IPS's capture walks grows with it until expiry.
                        "source_snapshots": len(catalog.load_table(SOURCE_TABLE).metadata.snapshots),
                    }
                )
                every_delete = scenario.privacy_delete_every_days
                if last_of_day and every_delete and day % every_delete == every_delete - 1:
                    rec = StageRecorder()
                    with rec.timed():
                        accounts = privacy_delete(catalog, scenario, day)
                    result.rows.append(
                        {
                            **base,
                            "strategy": "source",
                            "stage": "privacy_delete",
                            **rec.row(),
                            "pattern": "delete",
                            "partitions": len(accounts),
                        }
                    )
                repopulating = last_of_day and day == scenario.repopulate_day
                if repopulating:
                    result.rows.append(restated.run_repopulation(catalog, scenario, batches.start_date, base))
                due = _runs_now(scenario, day, last_of_day)
                for strategy in due:
                    if day == scenario.logic_change_day and strategy not in ran_today:
                        # History is restated under the new logic before the day's first run (which then carries
                        # it, for IPS).
                        backfills = restated.logic_change_backfills(
                            catalog, engine, scenario, batches.start_date, base, strategy, pipeline
                        )
                        walls[strategy] = walls.get(strategy, 0.0) + sum(r["wall_s"] for r in backfills)
                        result.rows.extend(backfills)
                    ran_today.add(strategy)
                    # The first run after a deferred warm-up covers every window the warm-up's days would have.
                    window = scenario.lookback_days + day if day == first else None
                    stage_walls = []
                    for stage in in_force:
                        rec = StageRecorder(window_start)
                        ctx = StageContext(catalog, engine, rec, processing_date=processing_date)
                        with rec.timed():
                            run_strategy_stage(
                                ctx, strategy, stage.name, processing_date, scenario, in_force, lookback_days=window
                            )
                        row = rec.row()
                        walls[strategy] = walls.get(strategy, 0.0) + row["wall_s"]
                        stage_walls.append((stage.name, float(row["wall_s"])))
                        day_rows.append({**base, "strategy": strategy, "stage": stage.name, **row})
                    result.schedule.setdefault(strategy, []).append(Run(index, day, tuple(stage_walls)))
                    if repopulating and strategy == "lookback" and scenario.lookback_backfill == "manual":
                        backfills = restated.manual_backfills(
                            catalog, engine, scenario, batches.start_date, base, in_force
                        )
                        walls[strategy] += sum(r["wall_s"] for r in backfills)
                        result.rows.extend(backfills)
                if scenario.check == "batch" and due:
                    verdicts = check(catalog, scenario, pipeline=in_force, strategies=due)
                    result.daily_checks.append(
                        {"day": day, "batch": index, **{s: v.as_dict(s == "lookback") for s, v in verdicts.items()}}
                    )
            result.rows.extend(share_floors(day_rows))
            every = scenario.maintenance_period_days
            if every and day % every == every - 1:
                result.rows.extend(_maintain(catalog, scenario, base, pipeline))
            if scenario.check == "daily" and (first is None or day >= first):
                verdicts = check(catalog, scenario, pipeline=in_force)
                result.daily_checks.append({"day": day, **{s: v.as_dict(s == "lookback") for s, v in verdicts.items()}})
            if on_day is not None:
                on_day(day)
            bar.update(day + 1, "  ".join(f"{s} {w:.2f}s" for s, w in walls.items()))
        final = restated.pipeline_on(scenario, batches.start_date, batches.days - 1, pipeline)
        if restated.restated_history(scenario, batches.start_date) is None:
            result.verdicts = check(catalog, scenario, pipeline=final)
        else:
            result.verdicts, result.repopulation_explained_rows = restated.check(
                catalog, scenario, batches.start_date, pipeline=final
            )
        result.freshness = freshness_report(scenario, result.schedule, arrived, pipeline)
    finally:
        engine.close()
        arrived.close()
        spill.cleanup()
    result.peak_rss_bytes = process_peak_rss()
    return result
