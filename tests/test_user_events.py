"""A user's own events through the CLI: ``init --events`` then ``ingest --day`` step by step, what
``--days``/``--warmup-days`` mean with a file (in run, init and sweep), and ``ingest --events`` into a
warehouse initialized with the generator.

Every refusal is exit 2 with one exact line on stderr and nothing written.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.cli import main
from bench.scenario import from_preset
from datagen.model import arrival_batch, impression_batch
from pipelines.catalog import open_catalog
from pipelines.pipeline import IMPRESSIONS_TABLE, SOURCE_TABLE
from tests.events import Event, batch

# A small generated history: late and re-sent events, 5 arrival dates from 2026-01-01.
FILE_DAYS = 5
MODEL = from_preset("tiny", events_per_day=200).event_model()


def listing(root: Path) -> dict[Path, int]:
    """Every file under ``root`` and its modification time: equal before and after means nothing written."""
    return {p.relative_to(root): p.stat().st_mtime_ns for p in root.rglob("*")}


def outside(files: dict[Path, int], root: Path, warehouse: Path) -> dict[Path, int]:
    """The files of a ``listing`` of ``root`` that are not in ``warehouse``."""
    return {p: t for p, t in files.items() if not (root / p).is_relative_to(warehouse)}


def refused(args: list[str], root: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``args``: exit 2, one line on stderr (returned), nothing under ``root`` created or changed."""
    before = listing(root)
    capsys.readouterr()
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1
    assert listing(root) == before
    return captured.err


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    """An events file and an impressions file arriving on the same 5 dates."""
    events = pa.concat_tables([arrival_batch(MODEL, d) for d in range(FILE_DAYS)])
    shown = pa.concat_tables([impression_batch(MODEL, d, 150) for d in range(FILE_DAYS)])
    ev, im = tmp_path / "events.parquet", tmp_path / "impressions.parquet"
    pq.write_table(events, ev)
    pq.write_table(shown, im)
    return ev, im


# Where a whole run or sweep goes over a file, a shorter one: its first 3 arrival dates.
SHORT_FILE_DAYS = 3


@pytest.fixture
def short_file(tmp_path: Path) -> Path:
    """An events file arriving on SHORT_FILE_DAYS dates from 2026-01-01, late and re-sent events included."""
    path = tmp_path / "short_events.parquet"
    pq.write_table(pa.concat_tables([arrival_batch(MODEL, d) for d in range(SHORT_FILE_DAYS)]), path)
    return path


def sorted_rows(table: pa.Table) -> list[dict[str, Any]]:
    return table.sort_by([(c, "ascending") for c in table.column_names]).to_pylist()


def source_tables(warehouse: Path) -> tuple[pa.Table, pa.Table]:
    catalog = open_catalog(warehouse)
    try:
        return (
            catalog.load_table(SOURCE_TABLE).scan().to_arrow(),
            catalog.load_table(IMPRESSIONS_TABLE).scan().to_arrow(),
        )
    finally:
        catalog.engine.dispose()


def check_verdicts(warehouse: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict[str, dict[str, Any]]]:
    """``ipsbench check``'s exit status and its verdict per strategy."""
    capsys.readouterr()
    status = main(["check", "--warehouse", str(warehouse)])
    lines = capsys.readouterr().out.splitlines()
    return status, {line.split(": ", 1)[0]: json.loads(line.split(": ", 1)[1]) for line in lines}


# -- init --events: checked as run checks it, recorded, ingested batch by batch -----------------


def test_init_with_a_missing_events_file_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.parquet"
    err = refused(["init", "--warehouse", str(tmp_path / "wh"), "--events", str(missing)], tmp_path, capsys)
    assert err == f"ipsbench: error: events file not found: {missing}\n"


def test_init_with_a_bad_events_file_exits_2_and_writes_nothing(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.parquet"
    pq.write_table(pq.read_table(files[0]).drop_columns(["ingest_ts"]), bad)
    err = refused(["init", "--warehouse", str(tmp_path / "wh"), "--events", str(bad)], tmp_path, capsys)
    assert err == f"ipsbench: error: events file {bad} lacks column(s): ingest_ts\n"


def test_init_with_a_missing_impressions_file_exits_2_and_writes_nothing(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing.parquet"
    args = ["init", "--warehouse", str(tmp_path / "wh"), "--events", str(files[0]), "--impressions", str(missing)]
    assert refused(args, tmp_path, capsys) == f"ipsbench: error: events file not found: {missing}\n"


def test_init_with_impressions_arriving_outside_the_events_dates_exits_2(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    late = tmp_path / "late.parquet"
    pq.write_table(impression_batch(MODEL, FILE_DAYS, 10), late)
    args = ["init", "--warehouse", str(tmp_path / "wh"), "--events", str(files[0]), "--impressions", str(late)]
    err = refused(args, tmp_path, capsys)
    assert err == (
        f"ipsbench: error: impressions file {late}: 10 row(s) arrive outside the events file's arrival dates "
        "(2026-01-01 to 2026-01-05)\n"
    )


def test_init_records_the_events_file_and_its_dates(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), "--events", str(files[0]), "--impressions", str(files[1])]) == 0
    rows = pq.read_metadata(files[0]).num_rows
    assert capsys.readouterr().out == (
        f"initialized {wh} (events file {files[0]}: {rows:,} rows arriving 2026-01-01 to 2026-01-05, "
        f"with impressions, {FILE_DAYS} days)\n"
    )
    scenario = json.loads((wh / "scenario.json").read_text())
    assert (scenario["events_file"], scenario["impressions_file"]) == (str(files[0]), str(files[1]))
    # The file's dates, and no warm-up (the default preset's 14 would exceed the file).
    assert (scenario["start_date"], scenario["days"], scenario["warmup_days"]) == ("2026-01-01", FILE_DAYS, 0)


@pytest.mark.slow
def test_init_with_an_events_file_then_step_by_step_holds_exactly_the_file(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "wh"
    args = ["init", "--warehouse", str(wh), "--events", str(files[0]), "--impressions", str(files[1])]
    assert main([*args, "--preset", "tiny", "--lookback-days", "2"]) == 0
    inputs = listing(tmp_path)
    for day in range(FILE_DAYS):
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        for strategy in ("ips", "lookback"):
            assert main(["process", "--warehouse", str(wh), "--strategy", strategy, "--day", str(day)]) == 0
    # A retried ingest of a file's batch adds nothing.
    capsys.readouterr()
    assert main(["ingest", "--warehouse", str(wh), "--day", "1"]) == 0
    assert "events: batch already committed, nothing appended" in capsys.readouterr().out
    status, verdicts = check_verdicts(wh, capsys)
    assert status == 0
    assert verdicts["ips"]["equal_to_oracle"]
    assert verdicts["lookback"]["unexplained_mismatched_rows"] == 0
    # The lookback's 2-day window misses the file's late events: the check explains them.
    assert verdicts["lookback"]["late_events_beyond_window"] > 0
    playback, shown = source_tables(wh)
    assert sorted_rows(playback) == sorted_rows(pq.read_table(files[0]).cast(playback.schema))
    assert sorted_rows(shown) == sorted_rows(pq.read_table(files[1]).cast(shown.schema))
    # Only the warehouse changed.
    assert outside(listing(tmp_path), tmp_path, wh) == outside(inputs, tmp_path, wh)


def test_ingest_refuses_an_events_file_changed_since_init(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), "--events", str(files[0])]) == 0
    # The user rewrites the file with one more arrival date.
    grown = pa.concat_tables([pq.read_table(files[0]), arrival_batch(MODEL, FILE_DAYS)])
    pq.write_table(grown, files[0])
    err = refused(["ingest", "--warehouse", str(wh), "--day", "0"], tmp_path, capsys)
    assert err == (
        f"ipsbench: error: events file {files[0]} changed since 'ipsbench init': it now arrives 2026-01-01 to "
        f"2026-01-06, {wh} was initialized for 2026-01-01 to 2026-01-05\n"
    )
    files[0].unlink()
    err = refused(["ingest", "--warehouse", str(wh), "--day", "0"], tmp_path, capsys)
    assert err == f"ipsbench: error: events file not found: {files[0]} (the events file {wh} was initialized with)\n"


# -- --days and --warmup-days with an events file ---------------------------------------------


@pytest.mark.parametrize("command", ["run", "init", "sweep"])
def test_days_with_an_events_file_is_refused(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], command: str
) -> None:
    where = ["--warehouse", str(tmp_path / "wh")] if command == "init" else ["--out", str(tmp_path / "out")]
    vary = ["--vary", "lookback_days=2,3"] if command == "sweep" else []
    err = refused([command, *where, *vary, "--events", str(files[0]), "--days", "3"], tmp_path, capsys)
    assert err == (
        "ipsbench: error: --days does not apply with --events: the file's arrival dates (UTC dates of ingest_ts, "
        "first to last) are the processing days\n"
    )


@pytest.mark.parametrize(("command", "warmup"), [("run", FILE_DAYS), ("init", FILE_DAYS + 10), ("sweep", FILE_DAYS)])
def test_warmup_days_leaving_no_day_to_measure_is_refused(
    tmp_path: Path, files: tuple[Path, Path], capsys: pytest.CaptureFixture[str], command: str, warmup: int
) -> None:
    where = ["--warehouse", str(tmp_path / "wh")] if command == "init" else ["--out", str(tmp_path / "out")]
    vary = ["--vary", "lookback_days=2,3"] if command == "sweep" else []
    args = [command, *where, *vary, "--events", str(files[0]), "--warmup-days", str(warmup)]
    assert refused(args, tmp_path, capsys) == (
        f"ipsbench: error: --warmup-days {warmup} leaves no day to measure: the events file {files[0]} has "
        f"{FILE_DAYS} arrival date(s) (2026-01-01 to 2026-01-05); give at most {FILE_DAYS - 1}\n"
    )


def test_warmup_days_with_an_events_file_is_kept_when_given(tmp_path: Path, files: tuple[Path, Path]) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), "--events", str(files[0]), "--warmup-days", "2"]) == 0
    scenario = json.loads((wh / "scenario.json").read_text())
    assert (scenario["days"], scenario["warmup_days"]) == (FILE_DAYS, 2)


@pytest.mark.slow
def test_run_over_an_events_file_measures_every_day_by_default(tmp_path: Path, short_file: Path) -> None:
    """The default preset's 14 warm-up days would have left 1 of the file's days measured, silently."""
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--events", str(short_file), "--lookback-days", "2", "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["scenario"]["days"], summary["scenario"]["warmup_days"]) == (SHORT_FILE_DAYS, 0)
    assert summary["measured_days"] == SHORT_FILE_DAYS


@pytest.mark.slow
def test_sweep_over_an_events_file_runs_every_point_on_the_file_days(tmp_path: Path, short_file: Path) -> None:
    out = tmp_path / "out"
    args = ["sweep", "--out", str(out), "--vary", "lookback_days=2,4", "--events", str(short_file)]
    assert main([*args, "--warmup-days", "1", "--quiet"]) == 0
    for point in ("lookback_days=2", "lookback_days=4"):
        summary = json.loads((out / "points" / point / "summary.json").read_text())
        assert (summary["scenario"]["start_date"], summary["scenario"]["days"]) == ("2026-01-01", SHORT_FILE_DAYS)
        assert summary["scenario"]["warmup_days"] == 1 and summary["measured_days"] == SHORT_FILE_DAYS - 1
        assert summary["events_file"]["rows"] == pq.read_metadata(short_file).num_rows
        assert summary["correctness"]["ips"]["equal_to_oracle"]


# -- ingest --events into a warehouse initialized with the generator ---------------------------


def utc(day: int, hour: int) -> datetime:
    """Hour ``hour`` of processing day ``day`` of the tiny preset (day 0 is 2026-01-01)."""
    return datetime.combine(date(2026, 1, 1) + timedelta(days=day), datetime.min.time(), tzinfo=UTC) + timedelta(
        hours=hour
    )


def users_batch(day: int) -> pa.Table:
    """Events arriving on ``day``: on time, late within and beyond the lookback's window, ahead, re-sent."""
    return batch(
        [
            Event("user-on-time", 7, 3, "US", "tv", utc(day, 2), 300, utc(day, 3)),
            Event("user-late", 8, 4, "BR", "web", utc(day - 1, 20), 200, utc(day, 4)),
            Event("user-beyond", 9, 5, "FR", "tv", utc(day - 9, 10), 100, utc(day, 5)),
            Event("user-ahead", 7, 6, "US", "tv", utc(day + 3, 1), 50, utc(day, 6)),
            Event("user-on-time", 7, 3, "US", "tv", utc(day, 2), 300, utc(day, 7)),
            Event("user-malformed", 7, None, "US", "tv", utc(day, 2), 30, utc(day, 8)),
        ]
    )


@pytest.mark.slow
def test_ingest_events_into_a_generator_warehouse_passes_the_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wh, days, extra_day = tmp_path / "wh", 5, 2
    init = ["--preset", "tiny", "--days", str(days), "--warmup-days", "0", "--events-per-day", "300"]
    assert main(["init", "--warehouse", str(wh), *init, "--lookback-days", "3"]) == 0
    users = tmp_path / "users.parquet"
    pq.write_table(users_batch(extra_day), users)
    inputs = listing(tmp_path)
    for day in range(days):
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        if day == extra_day:
            assert main(["ingest", "--warehouse", str(wh), "--events", str(users)]) == 0
        for strategy in ("ips", "lookback"):
            assert main(["process", "--warehouse", str(wh), "--strategy", strategy, "--day", str(day)]) == 0
    status, verdicts = check_verdicts(wh, capsys)
    assert status == 0
    assert verdicts["ips"]["equal_to_oracle"] and verdicts["ips"]["mismatched_rows"] == 0
    assert verdicts["lookback"]["unexplained_mismatched_rows"] == 0
    playback, _ = source_tables(wh)
    got = playback.filter(pc.starts_with(playback.column("event_id"), "user-"))
    assert sorted_rows(got) == sorted_rows(users_batch(extra_day).cast(got.schema))
    assert outside(listing(tmp_path), tmp_path, wh) == outside(inputs, tmp_path, wh)
