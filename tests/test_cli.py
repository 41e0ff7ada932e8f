"""The CLI end to end on the tiny preset, the result contract, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.cli import main
from bench.validate import validate
from pipelines.pipeline import STAGES
from tests.events import Event, at, batch

# Seven days, two of them warm-up: late rows merge into earlier dates from day 1 on,
# events arriving beyond the lookback's window come from day 0 on (tiny draws lateness
# up to 15 days, dated before the first day too), and maintenance (every 7 days) runs
# once, on the last day.
TINY = ["--preset", "tiny", "--days", "7", "--warmup-days", "2", "--quiet"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("runs") / "tiny"
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--out", str(out), *TINY],
        capture_output=True,
        text=True,
        timeout=600,
    )
    return out, proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_tiny_run_follows_the_contract(tiny_run: tuple[Path, int, str]) -> None:
    out, code, output = tiny_run
    assert code == 0, output
    assert validate(out) == []
    summary = json.loads((out / "summary.json").read_text())
    assert summary["measured_days"] == 5
    assert summary["scenario"]["days"] == 7 and summary["scenario"]["lookback_days"] == 5
    ips, lookback = summary["correctness"]["ips"], summary["correctness"]["lookback"]
    assert ips["equal_to_oracle"] and ips["mismatched_rows"] == 0
    # Beyond-window late events exist in tiny, so the lookback is wrong, but explainably so.
    assert lookback["late_events_beyond_window"] > 0
    assert lookback["mismatched_rows"] > 0
    assert lookback["unexplained_mismatched_rows"] == 0
    patterns = {s["stage"]: s["pattern"] for s in summary["stages"] if s["strategy"] == "ips"}
    assert patterns == {
        "playback_daily": "merge",
        "playback_daily_agg": "filter",
        "title_daily_rank": "range",
        "title_take_rate": "range",
        "account_cumulative": "forward",
        "compaction": "compaction",
    }
    assert (out / "warehouse" / "catalog.db").is_file()
    assert "report:" in output and (out / "cost_per_day.png").is_file()


@pytest.mark.slow
def test_results_rows_carry_measured_figures(tiny_run: tuple[Path, int, str]) -> None:
    import pandas as pd

    df = pd.read_parquet(tiny_run[0] / "results.parquet")
    stages = df[df.strategy.isin(["lookback", "ips"]) & df.stage.isin(STAGES)]
    # Both strategies run every stage once a day from the warm-up's last day (day 1 of 7) on.
    assert sorted(set(stages.day)) == list(range(1, 7))
    assert len(stages) == 6 * 2 * len(STAGES)
    # Maintenance is timed apart: IPS's own compaction is charged to IPS.
    assert set(df[df.stage == "compaction"].strategy) == {"shared", "ips"}
    lookback = stages[stages.strategy == "lookback"]
    assert (lookback.bytes_read > 0).all() and (lookback.files_written > 0).all()
    assert (lookback.commits == 1).all()
    ips_merge = stages[(stages.strategy == "ips") & (stages.stage == "playback_daily")]
    # MERGE appends exactly the new valid events: never more rows than it captured.
    assert (ips_merge.rows_written <= ips_merge.captured_rows).all()
    assert ips_merge.rows_written.sum() > 0


@pytest.mark.slow
def test_report_rerenders_from_result_files(tiny_run: tuple[Path, int, str]) -> None:
    out = tiny_run[0]
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert "Beside Netflix" in (out / "report.md").read_text()


@pytest.mark.slow
def test_state_lists_watermarks_and_captures(
    tiny_run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["state", "--warehouse", str(tiny_run[0] / "warehouse")]) == 0
    text = capsys.readouterr().out
    assert "workflow playback_daily (merge pattern)" in text and "committed" in text


def bad(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ipsbench: error:") and "\n" not in err
    return err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--preset", "huge"], "unknown preset"),
        (["--engine", "oracle"], "unknown engine"),
        (["--lookback-days", "0"], "lookback-days"),
        (["--late-fraction", "1.0"], "late-fraction"),
        (["--late-fraction", "-0.1"], "late-fraction"),
        (["--beyond-window-share", "1.5"], "beyond-window-share"),
        (["--events-per-day", "0"], "events-per-day"),
        (["--days", "-3"], "days"),
        (["--strategies", "lookback,magic"], "strategies"),
        # Bounds: refused up front, before a date overflows, a batch fills memory or parquet rejects the seed.
        (["--lookback-days", "1000000"], "lookback-days must be at most 3,660, got 1,000,000"),
        (["--days", "100000"], "days must be at most 3,660"),
        (["--max-lateness-days", "99999999"], "max-lateness-days must be at most 3,660"),
        (["--events-per-day", str(10**15)], "events-per-day must be at most 100,000,000"),
        (["--seed", str(2**100)], "seed must be in [0, 4294967295]"),
        (["--seed", "-1"], "seed must be in [0, 4294967295]"),
        (["--repeats", "1000000"], "repeats must be at most 100"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "out"
    assert message in bad(["run", "--out", str(out), "--preset", "tiny", *extra], capsys)
    assert not out.exists()


def test_out_that_cannot_be_created(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert "cannot be created" in bad(["run", "--out", str(blocker / "out"), "--preset", "tiny"], capsys)
    assert blocker.read_text() == "x"


def test_out_that_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    assert "not a directory" in bad(["run", "--out", str(f), "--preset", "tiny"], capsys)
    assert f.read_text() == "x"


@pytest.mark.slow
def test_out_that_holds_a_run(tiny_run: tuple[Path, int, str], capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in tiny_run[0].iterdir())
    assert "not empty" in bad(["run", "--out", str(tiny_run[0]), "--preset", "tiny"], capsys)
    assert sorted(p.name for p in tiny_run[0].iterdir()) == before


def write_events(path: Path, table: pa.Table) -> Path:
    pq.write_table(table, path)
    return path


def sample_events() -> pa.Table:
    return batch(
        [
            Event("u1", 1, 5, "US", "tv", at(0, 10), 300, at(0, 12)),
            Event("u2", 2, 6, "BR", "web", at(-1, 10), 200, at(2, 12)),
            Event("u3", 1, 5, "US", "tv", at(2, 10), 100, at(2, 13)),
        ]
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.drop_columns(["ingest_ts"]), "lacks column"),
        (lambda t: t.set_column(1, "account_id", pa.array(["a", "b", "c"])), "account_id"),
        (lambda t: t.set_column(0, "event_id", pa.array(["x", None, "z"])), "null"),
        (lambda t: t.set_column(5, "event_ts", pa.array([None, None, None], pa.timestamp("us", tz="UTC"))), "null"),
        (lambda t: t.set_column(5, "event_ts", pa.array(["2026", "2026", "2026"])), "event_ts"),
    ],
)
def test_bad_events_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate, message: str) -> None:
    path = write_events(tmp_path / "events.parquet", mutate(sample_events()))
    out = tmp_path / "out"
    assert message in bad(["run", "--out", str(out), "--events", str(path)], capsys)
    assert not out.exists()


def test_truncated_events_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_events(tmp_path / "events.parquet", sample_events())
    path.write_bytes(path.read_bytes()[:40])
    assert "not readable Parquet" in bad(["run", "--out", str(tmp_path / "out"), "--events", str(path)], capsys)


@pytest.mark.slow
def test_users_events_file_runs_one_day_per_ingest_date(tmp_path: Path) -> None:
    path = write_events(tmp_path / "events.parquet", sample_events())
    out = tmp_path / "out"
    assert (
        main(["run", "--out", str(out), "--events", str(path), "--lookback-days", "2", "--warmup-days", "0", "--quiet"])
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["measured_days"] == 3  # ingest dates 0..2, the empty day 1 included
    assert summary["correctness"]["ips"]["equal_to_oracle"]
    # u2 arrived 3 days late with a 2-day window: the lookback misses it, explained.
    assert summary["correctness"]["lookback"]["late_events_beyond_window"] == 1
    assert summary["correctness"]["lookback"]["unexplained_mismatched_rows"] == 0


@pytest.mark.slow
def test_privacy_deletes_upstream(tmp_path: Path) -> None:
    """A non-append upstream change: IPS recomputes what it touched; the lookback's misses are explained."""
    out = tmp_path / "out"
    # Deletes on days 1, 3 and 5: the last reaches dates beyond the lookback's window.
    code = main(["run", "--out", str(out), *TINY, "--privacy-delete-every-days", "2", "--privacy-delete-accounts", "2"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["correctness"]["ips"]["equal_to_oracle"]
    assert summary["correctness"]["lookback"]["deleted_events_beyond_window"] > 0
    assert summary["correctness"]["lookback"]["unexplained_mismatched_rows"] == 0
    import pandas as pd

    df = pd.read_parquet(out / "results.parquet")
    assert (df.stage == "privacy_delete").sum() == 3
    assert df[(df.strategy == "ips") & (df.stage == "playback_daily")].rewritten_partitions.sum() > 0


@pytest.mark.slow
def test_name_value_folders_in_paths_are_not_hive_columns(tmp_path: Path) -> None:
    """Found by a sweep: DuckDB must not read "late_fraction=0.1/" folders as extra columns."""
    out = tmp_path / "late_fraction=0.1,seed=3" / "run"
    assert main(["run", "--out", str(out), *TINY[:2], "--days", "3", "--warmup-days", "1", "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["correctness"]["ips"]["equal_to_oracle"]


@pytest.fixture
def failing_run(monkeypatch: pytest.MonkeyPatch):
    """``run`` whose simulation raises ``error`` after the output directory was created."""

    def install(error: BaseException) -> None:
        def run_scenario(scenario, events, out, *args, **kwargs):
            assert out.is_dir()  # the failure comes after something was created
            raise error

        monkeypatch.setattr("bench.execute.run_scenario", run_scenario)

    return install


def test_internal_error_exits_3_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], failing_run) -> None:
    failing_run(RuntimeError("disk full\nsecond line"))
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--preset", "tiny", "--quiet"]) == 3
    captured = capsys.readouterr()
    assert captured.err == ("ipsbench: internal error: RuntimeError: disk full (run with --debug for the traceback)\n")
    assert not out.exists()


def test_debug_prints_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str], failing_run) -> None:
    failing_run(ValueError("bad state"))
    out = tmp_path / "out"
    assert main(["--debug", "run", "--out", str(out), "--preset", "tiny", "--quiet"]) == 3
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "Traceback (most recent call last):" and "raise error" in "\n".join(err)
    assert err[-1] == "ipsbench: internal error: ValueError: bad state"
    assert not out.exists()


def test_ctrl_c_exits_130_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], failing_run) -> None:
    failing_run(KeyboardInterrupt())
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--preset", "tiny", "--quiet"]) == 130
    assert capsys.readouterr().err == "ipsbench: interrupted\n"
    assert not out.exists()


def test_sigterm_exits_143_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def terminated_midway(scenario, events, out, *args, **kwargs):
        (out / "half-written").write_text("x")
        os.kill(os.getpid(), signal.SIGTERM)
        raise AssertionError("SIGTERM did not stop the run")

    monkeypatch.setattr("bench.execute.run_scenario", terminated_midway)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "out"
    assert main(["run", "--out", str(out), "--preset", "tiny", "--quiet"]) == 143
    assert capsys.readouterr().err == "ipsbench: terminated\n"
    assert not out.exists()
    assert signal.getsignal(signal.SIGTERM) == before  # the handler is main's only


def test_an_interrupted_run_puts_out_and_a_separate_warehouse_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A --warehouse created under a new parent is removed with that parent; a given empty --out is emptied."""

    def interrupted_midway(scenario, events, out, warehouse, *args, **kwargs):
        (warehouse / "source" / "data").mkdir(parents=True)
        (warehouse / "source" / "data" / "part.parquet").write_text("x")
        (out / "half-written").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr("bench.execute.run_scenario", interrupted_midway)
    out = tmp_path / "out"
    out.mkdir()
    warehouse = tmp_path / "new" / "warehouse"
    assert main(["run", "--out", str(out), "--warehouse", str(warehouse), "--preset", "tiny", "--quiet"]) == 130
    assert capsys.readouterr().err == "ipsbench: interrupted\n"
    assert sorted(tmp_path.rglob("*")) == [out]


def test_a_run_failing_after_its_results_keeps_them_and_its_warehouse(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fails_after_results(scenario, events, out, warehouse, *args, **kwargs):
        warehouse.mkdir()
        (warehouse / "catalog.db").write_text("x")
        (out / "summary.json").write_text("{}")
        raise RuntimeError("report: disk full")

    monkeypatch.setattr("bench.execute.run_scenario", fails_after_results)
    out, warehouse = tmp_path / "out", tmp_path / "warehouse"
    assert main(["run", "--out", str(out), "--warehouse", str(warehouse), "--preset", "tiny", "--quiet"]) == 3
    assert capsys.readouterr().err.startswith("ipsbench: internal error: RuntimeError: report: disk full")
    assert (out / "summary.json").read_text() == "{}" and (warehouse / "catalog.db").read_text() == "x"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("stop", "status", "line"),
    [(signal.SIGTERM, 143, "ipsbench: terminated\n"), (signal.SIGINT, 130, "ipsbench: interrupted\n")],
)
def test_a_signal_mid_run_removes_out_and_its_separate_warehouse(
    tmp_path: Path, stop: signal.Signals, status: int, line: str
) -> None:
    out, warehouse = tmp_path / "out", tmp_path / "warehouse"
    command = ["run", "--preset", "tiny", "--out", str(out), "--warehouse", str(warehouse), "--quiet"]
    run = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 300
        # Stopped once the run has written a table's data files into the warehouse.
        while not any((warehouse / "source").rglob("*.parquet")):
            assert run.poll() is None, run.communicate()
            assert time.monotonic() < deadline, "no data file written in 300 s"
            time.sleep(0.01)
        run.send_signal(stop)
        _, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == status
    assert err == line
    assert not out.exists() and not warehouse.exists()
    assert list(tmp_path.iterdir()) == []
