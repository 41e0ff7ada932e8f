"""IPS equals the oracle on random late-arriving event streams, after every day,
and after a crash at any boundary between capture and commit."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.runner import check
from bench.scenario import DEFAULT_MERGE_MODE, from_preset
from pipelines.catalog import create_tables, open_catalog
from pipelines.pipeline import STAGES
from tests.events import Event, at, batch, run_ips_day
from tests.lanes import covered

LOOKBACK = 3
SCENARIO = from_preset("tiny", lookback_days=LOOKBACK, strategies=("ips",), max_lateness_days=20)


class InjectedCrash(Exception):
    pass


@st.composite
def event_streams(draw: Any) -> list[list[Event]]:
    """Days of arrival batches: on-time, late inside and beyond the window, duplicates
    (same, next and a much later batch), malformed events, empty and late-only batches."""
    n_days = draw(st.integers(1, 4))
    days: list[list[Event]] = []
    sent: list[Event] = []
    counter = 0
    for day in range(n_days):
        today: list[Event] = []
        for _ in range(draw(st.integers(0, 6))):
            counter += 1
            lateness = draw(st.sampled_from([0, 0, 1, 2, LOOKBACK, LOOKBACK + 4, 15]))
            kind = draw(st.sampled_from(["ok", "ok", "ok", "null_title", "null_view", "zero_view", "long_view"]))
            view = {"null_view": None, "zero_view": 0, "long_view": 20_000}.get(kind, draw(st.integers(1, 5000)))
            e = Event(
                event_id=f"e{counter}",
                account_id=draw(st.integers(1, 3)),
                title_id=None if kind == "null_title" else draw(st.integers(1, 12)),
                country=draw(st.sampled_from(["US", "BR"])),
                device="tv",
                event_ts=at(day - lateness, draw(st.integers(0, 23))),
                view_seconds=view,
                ingest_ts=at(day, 23),
            )
            today.append(e)
            if draw(st.booleans()) and kind == "ok" and draw(st.integers(0, 4)) == 0:
                today.append(e)  # re-sent within the same batch
        for e in draw(st.lists(st.sampled_from(sent), max_size=3)) if sent else []:
            today.append(e.resent(day))  # re-sent a day or many days later
        sent.extend(today)
        days.append(today)
    return days


def fresh(path: Path) -> Any:
    catalog = open_catalog(path, create=True)
    create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
    return catalog


def assert_equal_to_oracle(catalog: Any) -> None:
    verdict = check(catalog, SCENARIO)["ips"]
    assert verdict.equal_to_oracle, verdict.per_stage


@given(event_streams())
@pytest.mark.slow
def test_ips_equals_oracle_after_every_day(tmp_path_factory: pytest.TempPathFactory, days: list[list[Event]]) -> None:
    catalog = fresh(tmp_path_factory.mktemp("wh"))
    for events in days:
        run_ips_day(catalog, batch(events))
        assert_equal_to_oracle(catalog)


def crash_at(point: str, stage_seen: list[str]) -> Any:
    def fault(p: str) -> None:
        if p == point:
            stage_seen.append(p)
            raise InjectedCrash(p)

    return fault


def days_for_faults() -> list[list[Event]]:
    day0 = [Event(f"a{i}", i % 3, i % 5, "US", "tv", at(0, i % 24), 100 + i, at(0, 23)) for i in range(20)]
    day1 = [Event(f"b{i}", i % 3, i % 5, "BR", "tv", at(1 - i % 3, 5), 50 + i, at(1, 23)) for i in range(20)]
    day1 += [day0[0].resent(1), day0[1].resent(1)]
    day2 = [Event(f"c{i}", i % 4, i % 7, "US", "web", at(2 - i % 5, 7), 10 + i, at(2, 23)) for i in range(10)]
    return [day0, day1, day2]


@pytest.fixture(scope="module")
def day1_arrived(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Day 0 processed by IPS and day 1's batch ingested, the start of every crash case.

    Built once per module and kept as files; each case gets it back at the same path
    (Iceberg metadata and the catalog hold absolute paths). Returns (path, kept copy).
    """
    from datagen.ingest import ingest_batch

    root = tmp_path_factory.mktemp("crash")
    catalog = fresh(root / "warehouse")
    days = days_for_faults()
    run_ips_day(catalog, batch(days[0]))
    ingest_batch(catalog, batch(days[1]))
    catalog.engine.dispose()
    shutil.copytree(root / "warehouse", root / "kept")
    return root / "warehouse", root / "kept"


@pytest.mark.parametrize(
    ("stage", "point"),
    covered([(s, p) for s in STAGES for p in ("after_capture", "before_write", "after_write", "during_commit")]),
)
def test_crash_between_capture_and_commit_then_rerun(day1_arrived: tuple[Path, Path], stage: str, point: str) -> None:
    from pipelines.context import StageContext
    from pipelines.engine import DuckDBEngine
    from pipelines.ips import workflow

    path, kept = day1_arrived
    shutil.rmtree(path)
    shutil.copytree(kept, path)
    catalog = open_catalog(path)
    days = days_for_faults()
    seen: list[str] = []
    engine = DuckDBEngine()
    for s in STAGES:
        ctx = StageContext(catalog, engine, fault=crash_at(point, seen) if s == stage else (lambda p: None))
        try:
            workflow.run_stage(ctx, s)
        except InjectedCrash:
            break
    assert seen == [point]
    # The scheduler retries the day: every workflow runs again from its watermark.
    for s in STAGES:
        workflow.run_stage(StageContext(catalog, engine), s)
    assert_equal_to_oracle(catalog)
    run_ips_day(catalog, batch(days[2]))
    assert_equal_to_oracle(catalog)
    engine.close()
    catalog.engine.dispose()


def run_ips(catalog: Any) -> None:
    from pipelines.context import StageContext
    from pipelines.engine import DuckDBEngine
    from pipelines.ips import workflow

    engine = DuckDBEngine()
    for s in STAGES:
        workflow.run_stage(StageContext(catalog, engine), s)
    engine.close()


def test_upstream_delete_and_compaction_are_handled(tmp_path: Path) -> None:
    from pipelines.maintenance import compact
    from pipelines.pipeline import SOURCE_TABLE

    catalog = fresh(tmp_path)
    days = days_for_faults()
    run_ips_day(catalog, batch(days[0]))
    run_ips_day(catalog, batch(days[1]))
    # A privacy request removes one account's events from the source (a DELETE/OVERWRITE).
    catalog.load_table(SOURCE_TABLE).delete("account_id = 1")
    run_ips(catalog)
    assert_equal_to_oracle(catalog)
    daily = catalog.load_table("ips.playback_daily").scan().to_arrow()
    assert 1 not in daily.column("account_id").to_pylist()
    # Compaction rewrites files without changing rows: nothing to reprocess.
    assert compact(catalog.load_table(SOURCE_TABLE), min_files=2, keep_main_file=False)[0] > 0
    assert compact(catalog.load_table("ips.playback_daily"), min_files=1, keep_main_file=False)[0] > 0
    before = {s: catalog.load_table(f"ips.{s}").metadata.current_snapshot_id for s in STAGES[1:]}
    run_ips(catalog)
    assert {s: catalog.load_table(f"ips.{s}").metadata.current_snapshot_id for s in STAGES[1:]} == before
    assert_equal_to_oracle(catalog)
    run_ips_day(catalog, batch(days[2]))
    assert_equal_to_oracle(catalog)


def test_delete_after_a_crashed_first_run(tmp_path: Path) -> None:
    """Found by the stateful test: the first run writes, crashes before IpCommit, then the
    source loses those events; the retry must not keep the rows the crashed run wrote."""
    from datagen.ingest import ingest_batch
    from pipelines.context import StageContext
    from pipelines.engine import DuckDBEngine
    from pipelines.ips import workflow
    from pipelines.pipeline import SOURCE_TABLE

    catalog = fresh(tmp_path)
    ingest_batch(catalog, batch([Event("k1", 1, 10, "US", "tv", at(0, 0), 1, at(0, 23))]))
    seen: list[str] = []
    engine = DuckDBEngine()
    with pytest.raises(InjectedCrash):
        workflow.run_stage(StageContext(catalog, engine, fault=crash_at("after_write", seen)), "playback_daily")
    catalog.load_table(SOURCE_TABLE).delete("account_id = 1")
    engine.close()
    run_ips(catalog)
    assert_equal_to_oracle(catalog)
    assert catalog.load_table("ips.playback_daily").scan().to_arrow().num_rows == 0


def test_first_run_after_expiry_cut_the_history(tmp_path: Path) -> None:
    """Found by the stateful test: expiry removed the source's first snapshot before IPS
    ever ran; the first run must still see every event (it is a backfill)."""
    from datagen.ingest import ingest_batch
    from pipelines.maintenance import expire_history
    from pipelines.pipeline import SOURCE_TABLE

    catalog = fresh(tmp_path)
    ingest_batch(catalog, batch([Event("f1", 1, 5, "US", "tv", at(0, 0), 1, at(0, 23))]))
    ingest_batch(catalog, batch([Event("f2", 1, None, "US", "tv", at(0, 0), 1, at(0, 23))]))
    assert expire_history(catalog.load_table(SOURCE_TABLE)) == 1
    run_ips(catalog)
    assert_equal_to_oracle(catalog)
    assert catalog.load_table("ips.playback_daily").scan().to_arrow().column("event_id").to_pylist() == ["f1"]
