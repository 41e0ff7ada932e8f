"""Arrival batches shorter than a day: cutting, step-wise ingest, bad input, IPS after every batch, kills."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from bench.cli import main
from bench.runner import Batches, _runs_now, first_run_day, simulate
from bench.scenario import SCENARIO_FILE, Scenario, from_preset
from datagen.ingest import EventsFile, split_day
from datagen.model import arrival_batch
from pipelines.catalog import open_catalog
from pipelines.pipeline import PIPELINE, SOURCE_TABLE
from tests.events import Event, at, batch
from tests.test_cli import bad
from tests.test_kill import REPO, assert_nothing_lost_or_duplicated

SMALL = ["--preset", "tiny", "--events-per-day", "200", "--seed", "3", "--warmup-days", "1"]


def sorted_rows(table: pa.Table) -> list[dict[str, object]]:
    return sorted(table.to_pylist(), key=lambda r: (r["event_id"], r["ingest_ts"]))


@pytest.mark.parametrize("minutes", [15, 60, 240])
def test_a_day_is_cut_by_arrival_time_and_nothing_is_lost(minutes: int) -> None:
    scenario = from_preset("tiny", events_per_day=500, batch_minutes=minutes)
    day = 3
    whole = arrival_batch(scenario.event_model(), day)
    midnight = datetime.combine(scenario.start_date + timedelta(days=day), datetime.min.time(), tzinfo=UTC)
    parts = split_day(whole, midnight.date(), minutes)
    assert len(parts) == 1440 // minutes
    for i, part in enumerate(parts):
        if part.num_rows:
            span = pc.min_max(part.column("ingest_ts")).as_py()
            assert midnight + timedelta(minutes=i * minutes) <= span["min"]
            assert span["max"] < midnight + timedelta(minutes=(i + 1) * minutes)
    # The day's volume and lateness are the batch's whatever the cadence: the same rows, cut.
    assert sorted_rows(pa.concat_tables(parts)) == sorted_rows(whole)


def test_a_whole_day_is_one_batch_untouched() -> None:
    scenario = from_preset("tiny", events_per_day=100)
    whole = arrival_batch(scenario.event_model(), 0)
    (part,) = split_day(whole, scenario.start_date, 1440)
    assert part is whole


def test_ips_runs_after_every_batch_the_lookback_once_a_day_unless_asked() -> None:
    daily = from_preset("tiny", batch_minutes=60)
    day = daily.warmup_days
    assert _runs_now(daily, day, last_of_day=False) == ["ips"]
    assert sorted(_runs_now(daily, day, last_of_day=True)) == ["ips", "lookback"]
    every = from_preset("tiny", batch_minutes=60, lookback_every_batch=True)
    assert sorted(_runs_now(every, day, last_of_day=False)) == ["ips", "lookback"]


def test_nothing_runs_before_the_warm_ups_last_batch_unless_a_restatement_falls_inside_it() -> None:
    deferred = from_preset("tiny", batch_minutes=60, warmup_days=3, lookback_every_batch=True)
    assert first_run_day(deferred) == 2
    assert [_runs_now(deferred, d, last_of_day=False) for d in (0, 1, 2)] == [[], [], []]
    assert [_runs_now(deferred, d, last_of_day=True) for d in (0, 1)] == [[], []]
    assert sorted(_runs_now(deferred, 2, last_of_day=True)) == ["ips", "lookback"]
    assert first_run_day(from_preset("tiny", warmup_days=0)) is None
    assert first_run_day(from_preset("tiny", warmup_days=1)) == 0
    inside = from_preset("tiny", warmup_days=3, repopulate_day=2, repopulate_from_day=0, repopulate_to_day=1)
    assert first_run_day(inside) is None
    assert _runs_now(inside, 0, last_of_day=False) == ["ips"]
    assert first_run_day(from_preset("tiny", warmup_days=3, logic_change_day=1)) is None
    assert first_run_day(from_preset("tiny", warmup_days=3, logic_change_day=3)) == 2


def test_maintenance_keeps_its_runs_between_upkeeps_at_least_a_day_apart() -> None:
    assert from_preset("tiny", maintenance_every_days=7).maintenance_period_days == 7
    assert from_preset("tiny", maintenance_every_days=7, batch_minutes=360).maintenance_period_days == 1
    assert from_preset("tiny", maintenance_every_days=8, batch_minutes=720).maintenance_period_days == 4
    assert from_preset("tiny", maintenance_every_days=0, batch_minutes=15).maintenance_period_days == 0


@pytest.mark.parametrize("minutes", ["7", "0", "2880", "-60"])
def test_batch_minutes_not_dividing_a_day_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], minutes: str
) -> None:
    out, wh = tmp_path / "out", tmp_path / "wh"
    assert "batch-minutes must divide a day" in bad(
        ["run", "--out", str(out), "--preset", "tiny", "--batch-minutes", minutes], capsys
    )
    assert "batch-minutes must divide a day" in bad(
        ["init", "--warehouse", str(wh), "--preset", "tiny", "--batch-minutes", minutes], capsys
    )
    assert not out.exists() and not wh.exists()


def source_rows(wh: Path) -> list[dict[str, object]]:
    catalog = open_catalog(wh)
    try:
        return sorted_rows(catalog.load_table(SOURCE_TABLE).scan().to_arrow())
    finally:
        catalog.engine.dispose()


def test_ingest_batch_appends_that_batch_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), *SMALL, "--days", "2", "--batch-minutes", "240"]) == 0
    scenario = Scenario.from_dict(json.loads((wh / SCENARIO_FILE).read_text()))
    # Batch 9 is day 1's fourth (minutes 720 to 960).
    assert main(["ingest", "--warehouse", str(wh), "--batch", "9"]) == 0
    day1 = arrival_batch(scenario.event_model(), 1)
    start = datetime.combine(scenario.start_date + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    ts = day1.column("ingest_ts")
    inside = pc.and_(
        pc.greater_equal(ts, pa.scalar(start + timedelta(minutes=720), ts.type)),
        pc.less(ts, pa.scalar(start + timedelta(minutes=960), ts.type)),
    )
    assert source_rows(wh) == sorted_rows(day1.filter(inside))
    # The whole day: its other batches are appended, batch 9 is recognised and not appended twice.
    capsys.readouterr()
    assert main(["ingest", "--warehouse", str(wh), "--day", "1"]) == 0
    assert "batch already committed" in capsys.readouterr().out
    assert source_rows(wh) == sorted_rows(day1)


def test_ingest_batch_out_of_range_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), *SMALL, "--days", "2", "--batch-minutes", "240"]) == 0
    for b in ("12", "-1"):
        assert "--batch must be in [0, 11]" in bad(["ingest", "--warehouse", str(wh), "--batch", b], capsys)
        process = ["process", "--warehouse", str(wh), "--strategy", "ips", "--batch", b]
        assert "--batch must be in [0, 11]" in bad(process, capsys)
    assert source_rows(wh) == []


@pytest.mark.slow
def test_ips_equals_the_oracle_after_every_hourly_batch(tmp_path: Path) -> None:
    # No warm-up: a warm-up's batches are ingested without runs.
    scenario = from_preset(
        "tiny", days=2, warmup_days=0, events_per_day=300, batch_minutes=60, check="batch", maintenance_every_days=24
    )
    run = simulate(scenario, tmp_path / "wh", progress=False)
    assert [c["batch"] for c in run.daily_checks] == list(range(48))
    assert all(c["ips"]["equal_to_oracle"] for c in run.daily_checks)
    # The lookback is checked after its own runs only: the last batch of each day.
    assert [c["batch"] for c in run.daily_checks if "lookback" in c] == [23, 47]
    assert all(c["lookback"]["unexplained_mismatched_rows"] == 0 for c in run.daily_checks if "lookback" in c)
    assert [r.batch for r in run.schedule["ips"]] == list(range(48))
    assert [r.batch for r in run.schedule["lookback"]] == [23, 47]
    # Upkeep once a day at this cadence (24 runs between upkeeps would be 24 days at one a day).
    assert sorted({r["day"] for r in run.rows if r["stage"] == "expiry"}) == [0, 1]
    assert run.freshness is not None
    fresh = run.freshness["per_strategy"]
    # The last stage commits after the first: never fresher.
    for strategy in ("ips", "lookback"):
        first, last = fresh[strategy][PIPELINE[0].name]["all"], fresh[strategy][PIPELINE[-1].name]["all"]
        assert last["p50_s"] > first["p50_s"]
    # Hourly IPS includes an on-time event within its batch's hour plus the run's time; the daily
    # lookback waits for the day's end: its median is hours later.
    ips_p50 = fresh["ips"][PIPELINE[-1].name]["on_time"]["p50_s"]
    assert ips_p50 < fresh["lookback"][PIPELINE[-1].name]["on_time"]["p50_s"]


@pytest.mark.slow
def test_the_warm_up_is_ingested_then_each_strategy_runs_once_over_it(tmp_path: Path) -> None:
    scenario = from_preset("tiny", days=5, warmup_days=3, events_per_day=300, batch_minutes=360, check="batch")
    run = simulate(scenario, tmp_path / "wh", progress=False)
    # Every batch is ingested; the strategies first run after the warm-up's last batch (11).
    assert [r["batch"] for r in run.rows if r["stage"] == "ingest"] == list(range(20))
    assert [r.batch for r in run.schedule["ips"]] == list(range(11, 20))
    assert [r.batch for r in run.schedule["lookback"]] == [11, 15, 19]
    stages = {s.name for s in PIPELINE}
    assert not [r for r in run.rows if r["stage"] in stages and r["day"] < 2]
    # The lookback's first run covers every window the warm-up's three days would have.
    partitions = {r["day"]: r["partitions"] for r in run.rows if r["strategy"] == "lookback"}
    assert partitions == {2: scenario.lookback_days + 2, 3: scenario.lookback_days, 4: scenario.lookback_days}
    assert [c["batch"] for c in run.daily_checks] == list(range(11, 20))
    assert all(c["ips"]["equal_to_oracle"] for c in run.daily_checks)
    assert all(c["lookback"]["unexplained_mismatched_rows"] == 0 for c in run.daily_checks if "lookback" in c)
    assert run.verdicts["ips"].equal_to_oracle


@pytest.mark.slow
def test_killed_batch_runs_resume_to_the_oracle(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    init = ["init", "--warehouse", str(wh), *SMALL, "--days", "2", "--batch-minutes", "360", "--strategies", "ips"]
    assert main(init) == 0
    rng = random.Random(15)
    cli = [sys.executable, "-m", "bench.cli", "process", "--warehouse", str(wh), "--strategy", "ips", "--batch"]
    killed = 0
    for b in range(8):
        assert main(["ingest", "--warehouse", str(wh), "--batch", str(b)]) == 0
        proc = subprocess.Popen([*cli, str(b)], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=rng.uniform(1.0, 6.0))
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed += 1
        # The scheduler's retry runs the batch to completion.
        done = subprocess.run([*cli, str(b)], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert_nothing_lost_or_duplicated(wh)
    assert killed > 0


def test_an_events_file_is_cut_the_same_way() -> None:
    events = [
        Event(f"e{i}", 1, 7, "US", "tv", at(day, 0), 60, at(day, hour))
        for i, (day, hour) in enumerate([(0, 1), (0, 7), (0, 23), (1, 5), (1, 6), (1, 12)])
    ]
    scenario = from_preset("tiny", batch_minutes=360)
    batches = Batches(scenario, EventsFile.of(batch(events)))
    ids = [batches.batch(b)[0].column("event_id").to_pylist() for b in range(batches.count)]
    # Six-hour batches: 00-06, 06-12, 12-18, 18-24 on each of the file's two arrival dates.
    assert ids == [["e0"], ["e1"], [], ["e2"], ["e3"], ["e4"], ["e5"], []]
