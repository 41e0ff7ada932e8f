"""The floor and the window split: the recorder's arithmetic on hand-built figures, the summary's sums,
the clock leaving the memory sampler and the bookkeeping out, and a small run that records all of it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any, cast

import pandas as pd
import pytest

from bench import metrics
from bench.contract import FLOOR_FIGURES, FLOOR_KEYS, SPLIT_FIGURES, SUMMARY_JSON
from bench.execute import run_scenario
from bench.metrics import StageRecorder
from bench.results import floors, split
from bench.runner import share_floors
from bench.scenario import from_preset

REPO = Path(__file__).resolve().parent.parent
START = date(2024, 3, 10)
STRATEGY_ORDER = ("ips", "lookback")


def test_rows_and_bytes_split_by_partition_date_and_time_by_share_of_rows() -> None:
    rec = StageRecorder(window_start=START)
    older, first, later = START - timedelta(days=3), START, START + timedelta(days=2)
    reads = {older: (10, 1_000), first: (30, 2_400), later: (5, 700)}
    writes = {older: (4, 90), later: (16, 410)}
    rec.read(45, 4_100, 3)
    rec.partitions(read=reads)
    rec.wrote(20, 500, 2, 1, 2)
    rec.partitions(wrote=writes)
    rec.partitions(read={older: (1, 50)})  # a second report on the same partition adds up
    rec.read(1, 50, 1)
    rec.wall_s, rec.cpu_s = 3.0, 2.0
    row = rec.row()
    assert (row["older_rows_read"], row["older_bytes_read"]) == (11, 1_050)
    assert (row["window_rows_read"], row["window_bytes_read"]) == (35, 3_100)
    assert (row["older_rows_written"], row["older_bytes_written"]) == (4, 90)
    assert (row["window_rows_written"], row["window_bytes_written"]) == (16, 410)
    share = (11 + 4) / (11 + 4 + 35 + 16)
    assert row["older_wall_s"] == pytest.approx(3.0 * share) and row["older_cpu_s"] == pytest.approx(2.0 * share)
    for k in SPLIT_FIGURES:
        assert row[f"window_{k}"] + row[f"older_{k}"] == pytest.approx(row[k])


def test_without_a_window_everything_is_in_it_and_an_idle_stage_has_no_older_time() -> None:
    rec = StageRecorder()
    rec.read(7, 70, 1)
    rec.partitions(read={START - timedelta(days=40): (7, 70)})
    rec.wall_s = 1.5
    row = rec.row()
    assert row["window_rows_read"] == 7 and row["older_rows_read"] == 0 and row["window_wall_s"] == 1.5
    idle = StageRecorder(START)
    idle.wall_s = 0.25
    assert idle.row()["window_wall_s"] == 0.25 and idle.row()["older_wall_s"] == 0


def test_floor_calls_add_up() -> None:
    rec = StageRecorder(START)
    calls = [(100, 8_000, 10, 400), (5, 300, 5, 250)]
    for c in calls:
        rec.floor(*c)
    row = rec.row()
    assert [row[k] for k in FLOOR_KEYS] == [sum(c[i] for c in calls) for i in range(4)]


def test_the_lookback_row_shows_the_floor_of_its_stage_and_day() -> None:
    rows = [
        {"strategy": "lookback", "stage": "a", **dict.fromkeys(FLOOR_KEYS, 0)},
        {"strategy": "ips", "stage": "a", **dict(zip(FLOOR_KEYS, (1, 2, 3, 4), strict=True))},
        {"strategy": "ips", "stage": "b", **dict(zip(FLOOR_KEYS, (5, 6, 7, 8), strict=True))},
        {"strategy": "lookback", "stage": "b", **dict.fromkeys(FLOOR_KEYS, 0)},
    ]
    shared = share_floors(rows)
    for stage in ("a", "b"):
        ips, lookback = (next(r for r in shared if r["strategy"] == s and r["stage"] == stage) for s in STRATEGY_ORDER)
        assert [lookback[k] for k in FLOOR_KEYS] == [ips[k] for k in FLOOR_KEYS]


def test_aside_and_the_sampler_are_left_out_of_the_stage_times(monkeypatch: pytest.MonkeyPatch) -> None:
    class BusySampler(metrics.PeakRss):
        def __init__(self) -> None:
            super().__init__(interval_s=0.0005)

    monkeypatch.setattr(metrics, "PeakRss", BusySampler)
    rec = StageRecorder()
    t0 = time.perf_counter()
    with rec.timed():
        time.sleep(0.1)
        with rec.aside():
            time.sleep(0.3)
    elapsed = time.perf_counter() - t0
    assert rec.aside_wall_s >= 0.3 and rec.wall_s >= 0.1
    assert rec.wall_s + rec.aside_wall_s <= elapsed
    assert rec.wall_s < rec.aside_wall_s
    # The stage only slept: the process's CPU meanwhile was the sampler's, measured and not counted.
    assert rec.sampler_cpu_s > 0
    assert rec.cpu_s < rec.sampler_cpu_s / 2


def _frame() -> pd.DataFrame:
    """Two stages, two measured days and a warm-up day, both strategies; figures differ per row."""
    rows = []
    for day in range(3):
        for strategy in ("lookback", "ips"):
            for i, (stage, pattern) in enumerate((("s1", "merge"), ("s2", "filter"))):
                n = 1 + day + 10 * i + (100 if strategy == "ips" else 0)
                row: dict[str, Any] = {
                    "day": day,
                    "warmup": day == 0,
                    "repeat": 0,
                    "strategy": strategy,
                    "stage": stage,
                    "pattern": pattern if strategy == "ips" else "lookback",
                }
                for j, k in enumerate(SPLIT_FIGURES):
                    older = 0 if strategy == "lookback" else n * (j + 1)
                    row[f"window_{k}"] = 2 * n * (j + 1)
                    row[f"older_{k}"] = older
                    row[k] = row[f"window_{k}"] + older
                for j, k in enumerate(FLOOR_KEYS):
                    row[k] = (day + 1) * (i + 1) * (j + 3)
                rows.append(row)
    return pd.DataFrame(rows)


def test_summary_floor_and_split_are_sums_over_measured_days() -> None:
    df = _frame()
    measured = df[~df.warmup]
    got = {f["stage"]: f for f in floors(measured)}
    for stage in ("s1", "s2"):
        ips = measured[(measured.strategy == "ips") & (measured.stage == stage)]
        lookback = measured[(measured.strategy == "lookback") & (measured.stage == stage)]
        for k in FLOOR_FIGURES:
            assert got[stage]["floor"][k] == ips[f"floor_{k}"].sum()
            assert got[stage]["ips"][k] == ips[k].sum()
            assert got[stage]["lookback"][k] == lookback[k].sum()
            assert got[stage]["ips_over_floor"][k] == pytest.approx(ips[k].sum() / ips[f"floor_{k}"].sum())
        assert got[stage]["ips_days_below_floor"] == int((ips.rows_read < ips.floor_rows_read).sum())
    wrong = {"s1": 7, "s2": 11}
    verdicts: dict[str, Any] = {"lookback": {"per_stage": {s: {"mismatched_rows": n} for s, n in wrong.items()}}}
    sp = split(measured, verdicts, 5)
    ips, lookback = measured[measured.strategy == "ips"], measured[measured.strategy == "lookback"]
    for k in SPLIT_FIGURES:
        assert sp["in_window"]["ips"][k] == pytest.approx(ips[f"window_{k}"].sum())
        assert sp["older"]["ips"][k] == pytest.approx(ips[f"older_{k}"].sum())
        assert sp["in_window"]["ratio_ips_over_lookback"][k] == pytest.approx(
            ips[f"window_{k}"].sum() / lookback[f"window_{k}"].sum()
        )
    assert sp["older"]["share_of_ips_wall"] == pytest.approx(ips.older_wall_s.sum() / ips.wall_s.sum())
    assert sp["lookback_wrong_rows"] == sum(wrong.values()) and sp["window_days"] == 5
    assert {s["stage"]: s["lookback_wrong_rows"] for s in sp["per_stage"]} == wrong


@pytest.mark.slow
def test_a_small_run_records_the_floor_and_the_split(tmp_path: Path) -> None:
    scenario = from_preset("tiny", days=6, warmup_days=1, events_per_day=800)
    out = tmp_path / "run"
    out.mkdir()
    summary, report, ok = run_scenario(scenario, None, out, out / "warehouse", progress=False)
    assert ok
    df = pd.read_parquet(out / "results.parquet")
    stages = df[df.strategy.isin(["ips", "lookback"]) & df.pattern.isin(["merge", "filter", "range", "forward"])]
    assert set(stages.pattern) == {"merge", "filter", "range", "forward"}
    ips = df[df.strategy == "ips"].merge(stages[["day", "stage"]].drop_duplicates(), on=["day", "stage"])
    # Every pattern on every day reads and writes at least its floor, and had a floor to meet.
    assert (ips.rows_read >= ips.floor_rows_read).all() and (ips.bytes_read >= ips.floor_bytes_read).all()
    assert (ips.rows_written >= ips.floor_rows_written).all()
    assert (ips.floor_rows_read > 0).all()
    for k in ("rows_read", "bytes_read", "rows_written", "bytes_written"):
        both = df[df.strategy.isin(["ips", "lookback"]) & df.stage.isin(stages.stage)]
        assert (both[f"window_{k}"] + both[f"older_{k}"] == both[k]).all(), k
    for k in ("wall_s", "cpu_s"):
        assert (ips[f"window_{k}"] + ips[f"older_{k}"] - ips[k]).abs().max() < 1e-9
    lookback = df[(df.strategy == "lookback") & df.stage.isin(stages.stage)]
    assert (lookback.older_rows_read == 0).all() and (lookback.older_rows_written == 0).all()
    # The late tail beyond the window reaches older partitions: IPS works on them, the lookback never.
    assert ips.older_rows_written.sum() > 0
    shared = lookback.merge(ips, on=["day", "stage"], suffixes=("", "_ips"))
    assert all((shared[k] == shared[f"{k}_ips"]).all() for k in FLOOR_KEYS)
    assert (df.sampler_cpu_s >= 0).all() and (df.aside_wall_s >= 0).all()
    written = json.loads((out / SUMMARY_JSON).read_text())
    assert {f["pattern"] for f in written["floor"]} == {"merge", "filter", "range", "forward"}
    assert all(f["ips_days_below_floor"] == 0 for f in written["floor"])
    sp = written["split"]
    assert sp["lookback_wrong_rows"] == summary["correctness"]["lookback"]["mismatched_rows"] > 0
    measured = ips[~ips.warmup]
    assert sp["older"]["ips"]["rows_read"] == measured.older_rows_read.sum()
    assert sp["in_window"]["ips"]["rows_read"] + sp["older"]["ips"]["rows_read"] == measured.rows_read.sum()
    text = report.read_text()
    assert "**Saving, inside the lookback's 5-day window**" in text and "**Distance from the floor**" in text


def test_peak_memory_of_a_block_is_seen_and_the_process_peak_survives_the_reset() -> None:
    """A short-lived allocation between samples is the block's peak (the kernel's high-water
    mark, not a sample); the next block starts afresh, the process's peak keeps it.

    In a fresh interpreter: a pytest worker may hold a Spark JVM as a child, whose
    memory every block counts.
    """
    code = """
import json, psutil
from bench import metrics
size = 256 * 1024 * 1024
before = psutil.Process().memory_info().rss
with metrics.PeakRss(interval_s=10.0) as first:  # no sample falls inside the allocation
    block = b"x" * size  # written, so resident (a zeroed bytearray may stay untouched pages)
    del block
with metrics.PeakRss(interval_s=10.0) as second:
    pass
print(json.dumps([size, before, first.peak_bytes, second.peak_bytes, metrics.process_peak_rss()]))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    size, before, first, second, process = json.loads(out.stdout)
    assert first >= before + size * 0.9
    assert second < first - size // 2
    assert process >= first


def test_a_planned_scan_knows_on_which_partitions_its_rows_lie(catalog) -> None:
    """``FileSet.by_date`` (what a job read, by partition) agrees with the table's live files of those dates."""
    from datagen.ingest import ingest_batch
    from pipelines.iceberg_io import EPOCH, live_files, plan_dates
    from pipelines.pipeline import SOURCE_TABLE
    from pipelines.recompute import per_date
    from tests.events import Event, at, batch

    events = [Event(f"e{i}", i, i % 3, "US", "tv", at(-(i % 4), i % 24), 60 + i, at(0, 23)) for i in range(40)]
    ingest_batch(catalog, batch(events[:25]))
    ingest_batch(catalog, batch(events[25:]))
    table = catalog.load_table(SOURCE_TABLE)
    dates = sorted({e.event_ts.date() for e in events})[1:]
    files = plan_dates(table, dates)
    wanted = {(d - EPOCH).days for d in dates}
    live: dict[date, list] = {}
    for f in live_files(table):
        if int(f.partition[0]) in wanted:
            live.setdefault(EPOCH + timedelta(days=int(f.partition[0])), []).append(f)
    assert files.by_date() == per_date(live)
    assert (
        sum(rows for rows, _ in files.by_date().values())
        == files.rows
        == sum(1 for e in events if e.event_ts.date() in dates)
    )


def test_what_a_write_added_is_read_from_its_own_snapshot(catalog) -> None:
    """``written`` names, per partition, exactly the files the write added: those live after it and not before."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from bench.metrics import StageRecorder
    from datagen.ingest import ingest_batch
    from pipelines.context import StageContext
    from pipelines.engine import Engine
    from pipelines.iceberg_io import EPOCH, live_files, overwrite_partitions
    from pipelines.pipeline import SOURCE_TABLE
    from pipelines.recompute import figures, written
    from tests.events import Event, at, batch

    events = [Event(f"e{i}", i, i % 3, "US", "tv", at(-(i % 4), i % 24), 60 + i, at(0, 23)) for i in range(40)]
    ingest_batch(catalog, batch(events[:25]))
    ingest_batch(catalog, batch(events[25:]))
    table = catalog.load_table(SOURCE_TABLE)
    before = {f.file_path for f in live_files(table)}
    dates = sorted({e.event_ts.date() for e in events})[:2]
    rows = table.scan().to_arrow()
    days = pc.cast(pc.cast(rows["event_ts"], "date32"), "int32")
    keep = pc.is_in(days, value_set=pa.array([(d - EPOCH).days for d in dates], "int32"))
    recorder = StageRecorder()
    ctx = StageContext(catalog, cast(Engine, object()), recorder)  # written() runs no SQL
    with written(ctx, SOURCE_TABLE, dates) as out:
        overwrite_partitions(table, [rows.filter(keep)], dates, StageRecorder())
    new: dict[date, list] = {}
    for f in live_files(catalog.load_table(SOURCE_TABLE)):
        if f.file_path not in before:
            new.setdefault(EPOCH + timedelta(days=int(f.partition[0])), []).append(f)
    assert set(new) == set(dates)
    assert out.added == {d: figures(fs) for d, fs in new.items()}
    assert sum(r for r, _ in out.added.values()) == sum(1 for e in events if e.event_ts.date() in dates)
