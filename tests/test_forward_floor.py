"""The forward pattern's floor when one capture holds both appended rows and a rewrite upstream.

The job merges each changed account from its earliest changed date and recomputes every account
from the first rewritten date (``cut``); its floor is the union of the two, each row once. The
expected figure is derived here from the final tables alone: account ``a`` starts at
``min(from(a), cut)`` if it changed, else at ``cut``; the floor reads its input rows from its start
and its carried total (one row, if it has target rows before its start) and writes its rows from
its start.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest

from bench.metrics import StageRecorder
from bench.runner import check
from bench.scenario import from_preset
from datagen.ingest import ingest_batch
from pipelines.catalog import create_tables, open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.ips import workflow
from pipelines.pipeline import IMPRESSIONS_TABLE, SOURCE_TABLE, STAGES
from tests.events import START, Event, at, batch, impressions_of, run_ips_day


def play(event_id: str, account: int, day: int, arrival: int) -> Event:
    return Event(event_id, account, 7, "US", "tv", at(day, 1), 100, at(arrival, 23))


@pytest.mark.parametrize("merge_mode", ["copy-on-write", "merge-on-read"])
def test_forward_floor_counts_appends_and_a_rewrite_once(tmp_path: Path, merge_mode: str) -> None:
    catalog = open_catalog(tmp_path / "wh", create=True)
    create_tables(catalog, ("ips",), merge_mode)
    run_ips_day(catalog, batch([play("a", 1, 0, 0), play("b", 2, 0, 0)]))
    run_ips_day(catalog, batch([play("c", 1, 1, 1), play("d", 2, 1, 1), play("e", 2, 1, 1), play("f", 3, 1, 1)]))
    run_ips_day(catalog, batch([play("g", 1, 2, 2), play("h", 2, 2, 2), play("i", 3, 2, 2)]))
    # A privacy delete rewrites dates 1 and 2 upstream; the same day a late play of account 1
    # reaches date 0 (before the cut) and a new account 4 plays on date 3 (after it).
    catalog.load_table(SOURCE_TABLE).delete("account_id = 3")
    late = batch([play("j", 1, 0, 3), play("k", 4, 3, 3)])
    ingest_batch(catalog, late)
    ingest_batch(catalog, impressions_of(late), table_name=IMPRESSIONS_TABLE)
    engine = DuckDBEngine()
    rec = StageRecorder()
    try:
        for stage in STAGES:
            forward = stage == "account_cumulative"
            ctx = StageContext(catalog, engine, processing_date=START + timedelta(days=3))
            if forward:
                ctx.recorder = rec
            cap = workflow.run_stage(ctx, stage)
            if forward:
                assert cap.rewritten_dates and cap.appended_only_dates, cap
                cut = min(cap.rewritten_dates)
    finally:
        engine.close()
    scenario = from_preset("tiny", strategies=("ips",), merge_mode=merge_mode)
    verdict = check(catalog, scenario)["ips"]
    assert verdict.equal_to_oracle, verdict.per_stage

    daily = catalog.load_table("ips.playback_daily").scan().to_pandas()
    cumulative = catalog.load_table("ips.account_cumulative").scan().to_pandas()
    changed_from = {1: date(2026, 3, 1), 4: date(2026, 3, 4)}  # the appended plays' accounts and dates
    accounts = set(daily.account_id) | set(cumulative.account_id)
    start = {a: min(changed_from.get(a, cut), cut) for a in accounts}

    def from_start(rows: pd.DataFrame) -> int:
        return int(sum(d >= start[a] for a, d in zip(rows.account_id, rows.event_date, strict=True)))

    carried = sum(any(d < start[a] for d in cumulative[cumulative.account_id == a].event_date) for a in accounts)
    assert rec.floors["floor_rows_read"] == from_start(daily) + carried
    assert rec.floors["floor_rows_written"] == from_start(cumulative)
