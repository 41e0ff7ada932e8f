"""The day-by-day simulation: ingest batch P, run each strategy's stages, check.

Both strategies read identical input; their order alternates day by day so
that drift (caches, a busy neighbour) hits both sides alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pyiceberg.catalog.sql import SqlCatalog

from bench import backfill as restated
from bench.contract import FLOOR_KEYS
from bench.equality import Verdict, compare
from bench.metrics import StageRecorder, process_peak_rss
from bench.progress import Progress
from bench.scenario import Scenario
from datagen.ingest import EventsFile, ingest_batch
from datagen.model import IMPRESSIONS_ARROW_SCHEMA, arrival_batch, impression_batch
from pipelines import lookback, oracle
from pipelines.catalog import create_tables, open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine, Engine
from pipelines.ips import workflow as ips
from pipelines.maintenance import compact, expire_history
from pipelines.pipeline import IMPRESSIONS_TABLE, PIPELINE, SOURCE_TABLE, Stage


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


class Batches:
    """Arrival batches, from the generator or from a user's events file."""

    def __init__(self, scenario: Scenario, events: EventsFile | None = None) -> None:
        self.scenario = scenario
        self._events = events
        if events is not None:
            self.start_date, self.days = events.first_arrival, events.days
        else:
            self.start_date = scenario.start_date
            self.days = scenario.days

    def __getitem__(self, day: int) -> pa.Table:
        if self._events is not None:
            return self._events.batches[day]
        return arrival_batch(self.scenario.event_model(), day)

    def impressions(self, day: int) -> pa.Table:
        if self._events is not None:
            shown = self._events.impressions
            return shown[day] if shown is not None else IMPRESSIONS_ARROW_SCHEMA.empty_table()
        return impression_batch(self.scenario.event_model(), day, self.scenario.impressions)


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
    *,
    pipeline: Sequence[Stage] = PIPELINE,
) -> None:
    """One stage of one strategy: what differs is only which rows it reads and how it writes."""
    if strategy == "lookback":
        lookback.run_stage(ctx, stage, processing_date, scenario.lookback_days, pipeline=pipeline)
    else:
        ips.run_stage(ctx, stage, pipeline=pipeline)


def check(catalog: SqlCatalog, scenario: Scenario, *, pipeline: Sequence[Stage] = PIPELINE) -> dict[str, Verdict]:
    """Recompute the oracle of ``pipeline`` and compare every strategy's tables of it with the oracle."""
    engine = DuckDBEngine()
    try:
        oracle.compute(engine, catalog, pipeline=pipeline)
        return {
            s: compare(engine, catalog, s, scenario.lookback_days if s == "lookback" else None, pipeline=pipeline)
            for s in scenario.strategies
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
    IPS's own: its MERGE appends a small file per changed partition each run,
    so the targets of its MERGE stages (``ips.playback_daily``) are compacted
    too, and that cost is charged to IPS.
    """
    rows = []
    jobs: list[tuple[str, str, Callable[[], int]]] = [
        ("shared", "compaction", lambda: compact(catalog.load_table(SOURCE_TABLE), SOURCE_COMPACT_MIN_FILES)[0]),
    ]
    merged = [s.table("ips") for s in pipeline if s.pattern == "merge"]
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
    """A day's stage rows, each strategy's carrying the floor its stage's IPS pattern recorded that day.

    The floor belongs to the (stage, day)'s changes, not to a strategy: both rows show it.
    """
    floors = {r["stage"]: {k: r[k] for k in FLOOR_KEYS} for r in rows if r["strategy"] == "ips"}
    return [{**r, **floors.get(r["stage"], {})} for r in rows]


def days_order(strategies: tuple[str, ...], day: int) -> Iterator[str]:
    return iter(strategies if day % 2 == 0 else tuple(reversed(strategies)))


def simulate(
    scenario: Scenario,
    warehouse: Path,
    events: EventsFile | None = None,
    progress: bool = True,
    on_day: Callable[[int], None] | None = None,
    *,
    pipeline: Sequence[Stage] = PIPELINE,
) -> RunResult:
    """Run the whole scenario, every stage of ``pipeline``, into ``warehouse``; returns per-stage rows and verdicts."""
    batches = Batches(scenario, events)
    result = RunResult(start_date=batches.start_date)
    catalog = open_catalog(warehouse, create=True)
    create_tables(catalog, scenario.strategies, scenario.merge_mode, pipeline=pipeline)
    t0 = time.perf_counter()
    engine = make_engine(scenario.engine, warehouse, scenario.spark_master)
    result.engine_start_s = time.perf_counter() - t0
    bar = Progress(batches.days, "ipsbench", progress)
    try:
        for day in range(batches.days):
            processing_date = batches.start_date + timedelta(days=day)
            base = {"day": day, "processing_date": processing_date.isoformat(), "warmup": day < scenario.warmup_days}
            rec = StageRecorder()
            with rec.timed():
                batch = batches[day]
                ingest_batch(catalog, batch)
                shown = batches.impressions(day)
                ingest_batch(catalog, shown, table_name=IMPRESSIONS_TABLE)
            result.rows.append(
                {
                    **base,
                    "strategy": "source",
                    "stage": "ingest",
                    **rec.row(),
                    "rows_written": batch.num_rows + shown.num_rows,
                }
            )
            every_delete = scenario.privacy_delete_every_days
            if every_delete and day % every_delete == every_delete - 1:
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
            repopulating = day == scenario.repopulate_day
            if repopulating:
                result.rows.append(restated.run_repopulation(catalog, scenario, batches.start_date, base))
            in_force = restated.pipeline_on(scenario, batches.start_date, day, pipeline)
            walls: dict[str, float] = {}
            window_start, _ = lookback.window(processing_date, scenario.lookback_days)
            day_rows: list[dict[str, Any]] = []
            for strategy in days_order(scenario.strategies, day):
                if day == scenario.logic_change_day:
                    # History is restated under the new logic before the day's run (which then carries it, for IPS).
                    backfills = restated.logic_change_backfills(
                        catalog, engine, scenario, batches.start_date, base, strategy, pipeline
                    )
                    walls[strategy] = sum(r["wall_s"] for r in backfills)
                    result.rows.extend(backfills)
                for stage in in_force:
                    rec = StageRecorder(window_start)
                    ctx = StageContext(catalog, engine, rec, processing_date=processing_date)
                    with rec.timed():
                        run_strategy_stage(ctx, strategy, stage.name, processing_date, scenario, pipeline=in_force)
                    row = rec.row()
                    walls[strategy] = walls.get(strategy, 0.0) + row["wall_s"]
                    day_rows.append({**base, "strategy": strategy, "stage": stage.name, **row})
                if repopulating and strategy == "lookback" and scenario.lookback_backfill == "manual":
                    backfills = restated.manual_backfills(catalog, engine, scenario, batches.start_date, base, in_force)
                    walls[strategy] += sum(r["wall_s"] for r in backfills)
                    result.rows.extend(backfills)
            result.rows.extend(share_floors(day_rows))
            every = scenario.maintenance_every_days
            if every and day % every == every - 1:
                result.rows.extend(_maintain(catalog, scenario, base, pipeline))
            if scenario.check == "daily":
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
    finally:
        engine.close()
    result.peak_rss_bytes = process_peak_rss()
    return result
