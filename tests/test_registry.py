"""The pipeline is data: a stage declared here, in the test, runs through table
creation, the lookback, IPS and the oracle with no other code change.

The extra stage sums view time per country and day over ``playback_daily``,
maintained by the filter pattern (its key is ``(event_date, country)``, not
one of the built-in stages' keys). Hand-built arrival batches carry late events
inside the lookback window, a device retry, and on the last day late events
beyond the window: IPS must equal the oracle on every table, the lookback
must equal it until those arrive, and then differ on the extra stage exactly
where they fall, every mismatch explained.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.schema import Schema
from pyiceberg.types import DateType, LongType, NestedField, StringType

from bench.runner import check, days_order, run_strategy_stage
from bench.scenario import DEFAULT_MERGE_MODE, from_preset
from datagen.ingest import ingest_batch
from pipelines import logic
from pipelines.catalog import create_tables, open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import partition_dates
from pipelines.pipeline import IMPRESSIONS_TABLE, PIPELINE, STAGES, Input, Stage, stage
from tests.events import START, Event, at, batch, impressions_of, is_valid

LOOKBACK = 2
DAYS = 4
SCENARIO = from_preset("tiny", lookback_days=LOOKBACK, strategies=("lookback", "ips"))

COUNTRY_DAILY_VIEW = Stage(
    name="country_daily_view",
    sql="""
SELECT event_date, country, CAST(SUM(view_seconds) AS BIGINT) AS view_seconds, CAST(COUNT(*) AS BIGINT) AS plays
FROM {daily}
GROUP BY event_date, country
""",
    inputs=(Input("playback_daily", "daily", "event_date"),),
    schema=Schema(
        NestedField(1, "event_date", DateType(), required=True),
        NestedField(2, "country", StringType(), required=True),
        NestedField(3, "view_seconds", LongType(), required=True),
        NestedField(4, "plays", LongType(), required=True),
    ),
    key=("event_date", "country"),
    pattern="filter",
    affected_by=("event_date", "country"),
)
# The stage it reads and the extra one (the fast lane), and every built-in stage and the extra one.
PIPELINES = [
    pytest.param((stage("playback_daily"), COUNTRY_DAILY_VIEW), id="stage1-and-extra"),
    pytest.param((*PIPELINE, COUNTRY_DAILY_VIEW), id="built-in-and-extra", marks=pytest.mark.slow),
]

Key = tuple[date, str]


def arrivals() -> list[list[Event]]:
    """Arrival batch of each day: on-time plays in two countries, then late ones."""
    days = [
        [
            Event(
                f"d{day}-{i}",
                1 + i % 3,
                1 + i % 4,
                ("US", "BR")[i % 2],
                "tv",
                at(day, 3 * i),
                60 * day + i + 1,
                at(day, 23),
            )
            for i in range(6)
        ]
        for day in range(DAYS)
    ]
    # Late inside the window (lateness < LOOKBACK): the lookback sees them as IPS does.
    days[1].append(Event("late-in-1", 2, 3, "BR", "web", at(0, 5), 700, at(1, 23)))
    days[1].append(Event("late-in-2", 1, 2, "US", "tv", at(0, 9), 20_000, at(1, 23)))  # view time capped
    days[2].append(days[0][0].resent(2))  # a device retry: counted once
    days[2].append(Event("late-in-3", 3, 4, "US", "tv", at(1, 7), 300, at(2, 23)))
    # Beyond the window, on the last day: a changed (date, country), one the date had no play in, a malformed one.
    last = DAYS - 1
    days[last].append(Event("beyond-1", 3, 1, "BR", "tv", at(last - LOOKBACK, 11), 450, at(last, 23)))
    days[last].append(Event("beyond-2", 2, 4, "JP", "tv", at(last - LOOKBACK - 1, 3), 90, at(last, 23)))
    days[last].append(Event("beyond-bad", 2, None, "US", "tv", at(0, 3), 90, at(last, 23)))
    return days


def day_of(d: date) -> int:
    return (d - START).days


def first_arrivals(days: list[list[Event]]) -> dict[str, tuple[int, Event]]:
    """Each valid event's first arrival day and payload (its copies share the payload)."""
    first: dict[str, tuple[int, Event]] = {}
    for day, events in enumerate(days):
        for e in events:
            if is_valid(e) and e.event_id not in first:
                first[e.event_id] = (day, e)
    return first


def country_sums(days: list[list[Event]], window: int | None = None) -> dict[Key, tuple[int, int]]:
    """An independent reading of the extra stage: view time (capped) and plays per date and country.

    Args:
        window: count only the events a lookback of this many days saw (arrived
            fewer than ``window`` days after their date); None: every event.
    """
    out: dict[Key, list[int]] = defaultdict(lambda: [0, 0])
    for arrived, e in first_arrivals(days).values():
        event_date = e.event_ts.date()
        if window is not None and arrived - day_of(event_date) >= window:
            continue
        assert e.view_seconds is not None
        out[(event_date, e.country)][0] += min(e.view_seconds, logic.VIEW_SECONDS_CAP)
        out[(event_date, e.country)][1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def table_rows(catalog: Any, strategy: str) -> dict[Key, tuple[int, int]]:
    rows = catalog.load_table(COUNTRY_DAILY_VIEW.table(strategy)).scan().to_arrow().to_pylist()
    assert len({(r["event_date"], r["country"]) for r in rows}) == len(rows), "one row per key"
    return {(r["event_date"], r["country"]): (r["view_seconds"], r["plays"]) for r in rows}


def run_day(catalog: Any, engine: DuckDBEngine, pipeline: tuple[Stage, ...], day: int, events: list[Event]) -> None:
    """Ingest the day's batch (and its impressions), then every stage of both strategies, as the runner does."""
    ingest_batch(catalog, batch(events))
    ingest_batch(catalog, impressions_of(batch(events)), table_name=IMPRESSIONS_TABLE)
    processing_date = START + timedelta(days=day)
    for strategy in days_order(SCENARIO.strategies, day):
        for s in pipeline:
            ctx = StageContext(catalog, engine, processing_date=processing_date)
            run_strategy_stage(ctx, strategy, s.name, processing_date, SCENARIO, pipeline=pipeline)


@pytest.mark.parametrize("pipeline", PIPELINES)
def test_a_stage_declared_in_the_test_runs_through_lookback_ips_and_oracle(
    tmp_path: Path, pipeline: tuple[Stage, ...]
) -> None:
    assert COUNTRY_DAILY_VIEW.name not in STAGES  # declared here only
    catalog = open_catalog(tmp_path / "warehouse", create=True)
    create_tables(catalog, SCENARIO.strategies, DEFAULT_MERGE_MODE, pipeline=pipeline)
    days = arrivals()
    engine = DuckDBEngine()
    try:
        for day, events in enumerate(days):
            run_day(catalog, engine, pipeline, day, events)
            verdicts = check(catalog, SCENARIO, pipeline=pipeline)
            assert set(verdicts["ips"].per_stage) == {s.name for s in pipeline}
            assert verdicts["ips"].equal_to_oracle, (day, verdicts["ips"].per_stage)
            if day < DAYS - 1:  # every late event so far arrived inside the window
                assert verdicts["lookback"].equal_to_oracle, (day, verdicts["lookback"].per_stage)
    finally:
        engine.close()

    # Both strategies wrote the extra stage: a partition per date with a valid play, the rows of the reading.
    everything, seen = country_sums(days), country_sums(days, window=LOOKBACK)
    for strategy, expected in (("ips", everything), ("lookback", seen)):
        table = catalog.load_table(COUNTRY_DAILY_VIEW.table(strategy))
        assert partition_dates(table) == sorted({d for d, _ in expected})
        assert table_rows(catalog, strategy) == expected

    # The lookback is wrong on the extra stage exactly where the unseen events fall, and each mismatch is explained.
    wrong = {k for k in everything.keys() | seen.keys() if everything.get(k) != seen.get(k)}
    # The data's point: the lookback holds a row with a wrong value, and lacks a row.
    assert any(k in seen for k in wrong) and any(k not in seen for k in wrong)
    lookback = verdicts["lookback"]
    assert lookback.per_stage[COUNTRY_DAILY_VIEW.name] == {
        "mismatched_rows": len(wrong),
        "unexplained_mismatched_rows": 0,
    }
    assert lookback.unexplained_mismatched_rows == 0


@pytest.mark.parametrize(
    ("declared", "problem"),
    [
        (replace(COUNTRY_DAILY_VIEW, name="playback_daily"), "playback_daily is declared twice"),
        (replace(COUNTRY_DAILY_VIEW, inputs=(Input("not_declared", "daily", "event_date"),)), "reads not_declared"),
    ],
)
def test_a_pipeline_that_does_not_hold_together_is_refused(tmp_path: Path, declared: Stage, problem: str) -> None:
    catalog = open_catalog(tmp_path / "warehouse", create=True)
    with pytest.raises(ValueError, match=problem):
        create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE, pipeline=(*PIPELINE, declared))
    assert catalog.list_namespaces() == []  # refused before any table is created
