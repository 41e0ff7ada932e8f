"""``ipsbench process`` killed with SIGKILL at random points, then resumed.

A real subprocess runs the IPS workflows of a processing day like a scheduled
job and is killed at seeded random moments (during start-up, capture, the
pattern's write or the commit); the scheduler then runs the day again to
completion. Afterwards the tables equal the oracle, ``ips.playback_daily``
holds every valid source event exactly once, and running a completed day once
more commits nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from bench.cli import main
from bench.runner import check
from bench.scenario import DEFAULT_MERGE_MODE, SCENARIO_FILE, Scenario
from datagen.ingest import ingest_batch
from pipelines.catalog import create_tables, open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.ips import workflow
from pipelines.ips.state import StateLog, watermark
from pipelines.pipeline import SOURCE_TABLE, STAGES
from tests.events import Event, at, batch, catalog_state, ips_event_ids

REPO = Path(__file__).resolve().parent.parent
SEED = 20260301
# The kill moments are drawn over a whole run (start-up, capture, write, commit) from the
# first day on, so a short budget still spreads kills over every boundary, and the
# tally's assertions fail if none landed after partial work. The budget counts kills
# first, seconds second: at least MIN_KILLS runs are started whatever the machine's
# load (a loaded machine makes each run slower, not the hunt shorter). The default
# keeps `make test` in its budget; IPSBENCH_KILL_BUDGET_S=100 or more for a longer hunt.
MIN_KILLS = 8
KILL_BUDGET_S = float(os.environ.get("IPSBENCH_KILL_BUDGET_S", "30"))
DAYS_KILLED = 6
KILLS_PER_DAY = 4
# Once the hunt is over (MIN_KILLS started and the budget spent), a day is still
# completed and checked but no longer killed; past the first MIN_DAYS such days prove
# nothing more and are not run. While the hunt lasts, days run up to DAYS_KILLED.
MIN_DAYS = 3
RUN_TIMEOUT_S = 300


@dataclass
class KillTally:
    attempts: int = 0
    mid_run: int = 0
    after_partial_work: int = 0
    between_capture_and_commit: int = 0
    finished_before_kill: int = 0


@contextlib.contextmanager
def opened(warehouse: Path) -> Iterator[SqlCatalog]:
    catalog = open_catalog(warehouse)
    try:
        yield catalog
    finally:
        catalog.engine.dispose()


def process_cmd(warehouse: Path, day: int) -> list[str]:
    cli = [sys.executable, "-m", "bench.cli"]
    return [*cli, "process", "--warehouse", str(warehouse), "--strategy", "ips", "--day", str(day)]


def run_process(warehouse: Path, day: int) -> float:
    """Run the day to completion as the scheduler's retry would; returns its wall time."""
    t0 = time.perf_counter()
    proc = subprocess.run(process_cmd(warehouse, day), cwd=REPO, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return time.perf_counter() - t0


def progress(warehouse: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every table's snapshot and refs, and the capture log (newest first)."""
    with opened(warehouse) as catalog:
        return catalog_state(catalog), StateLog(catalog).runs(limit=1000)


def kill_at_random(warehouse: Path, day: int, delay_s: float, tally: KillTally) -> bool:
    """Start the day's run, SIGKILL it after ``delay_s``; returns whether it finished first."""
    state_before, log_before = progress(warehouse)
    proc = subprocess.Popen(process_cmd(warehouse, day), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    tally.attempts += 1
    try:
        proc.wait(timeout=delay_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        tally.mid_run += 1
    else:
        assert proc.stderr is not None
        assert proc.returncode == 0, proc.stderr.read()
        tally.finished_before_kill += 1
        return True
    finally:
        if proc.stderr is not None:
            proc.stderr.close()
    state_after, log_after = progress(warehouse)
    if state_after != state_before or log_after != log_before:
        tally.after_partial_work += 1
    last_run_id = log_before[0]["run_id"] if log_before else 0
    if any(r["run_id"] > last_run_id and r["status"] == "captured" for r in log_after):
        tally.between_capture_and_commit += 1
    return False


def valid_source_event_ids(catalog: SqlCatalog) -> list[str]:
    """Distinct event_ids stage 1 must keep, read straight from the source (not through the stage SQL)."""
    rows = catalog.load_table(SOURCE_TABLE).scan().to_arrow()
    keep = pc.and_(pc.is_valid(rows["title_id"]), pc.fill_null(pc.greater(rows["view_seconds"], 0), False))
    return sorted(set(rows.filter(keep)["event_id"].to_pylist()))


def assert_nothing_lost_or_duplicated(warehouse: Path) -> None:
    scenario = Scenario.from_dict(json.loads((warehouse / SCENARIO_FILE).read_text()))
    with opened(warehouse) as catalog:
        verdict = check(catalog, scenario)["ips"]
        assert verdict.equal_to_oracle, verdict.per_stage
        assert ips_event_ids(catalog) == valid_source_event_ids(catalog)


def ips_contents(warehouse: Path) -> dict[str, pa.Table]:
    """The rows of the three IPS tables, in a canonical order."""
    with opened(warehouse) as catalog:
        tables = {s: catalog.load_table(f"ips.{s}") for s in STAGES}
        return {
            s: t.scan().to_arrow().sort_by([(f.name, "ascending") for f in t.schema().fields])
            for s, t in tables.items()
        }


def assert_rerun_changes_nothing(warehouse: Path, day: int) -> float:
    """Run a completed day again: no snapshot, ref, capture or row changes. Returns its wall time."""
    state, rows = progress(warehouse), ips_contents(warehouse)
    wall_s = run_process(warehouse, day)
    assert progress(warehouse) == state
    assert ips_contents(warehouse) == rows
    return wall_s


@pytest.mark.slow
def test_killed_runs_resume_to_the_oracle(tmp_path: Path) -> None:
    wh = tmp_path / "warehouse"
    init = ["init", "--warehouse", str(wh), "--preset", "tiny", "--days", str(DAYS_KILLED + 1)]
    assert main([*init, "--events-per-day", "300", "--strategies", "ips", "--seed", "7"]) == 0
    # Day 0 runs undisturbed. A whole run and a no-op re-run (start-up and empty
    # captures) set the range of kill moments, mostly inside the work. The machine
    # is shared, so the range follows each day's no-op re-run.
    assert main(["ingest", "--warehouse", str(wh), "--day", "0"]) == 0
    full_run_s = run_process(wh, 0)
    assert_nothing_lost_or_duplicated(wh)
    noop_run_s = assert_rerun_changes_nothing(wh, 0)
    work_share = full_run_s / noop_run_s

    rng = random.Random(SEED)
    tally = KillTally()
    started = time.perf_counter()
    noop_today_s = noop_run_s

    def hunt_over() -> bool:
        return tally.attempts >= MIN_KILLS and time.perf_counter() - started > KILL_BUDGET_S

    for day in range(1, DAYS_KILLED + 1):
        if day > MIN_DAYS and hunt_over():
            break
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        for _ in range(KILLS_PER_DAY):
            if hunt_over():
                break
            delay_s = noop_today_s * rng.uniform(0.7, 1.0 + 0.9 * max(work_share - 1.0, 0.2))
            if kill_at_random(wh, day, delay_s, tally):
                break  # the run finished before its kill: the day is done
        run_process(wh, day)
        assert_nothing_lost_or_duplicated(wh)
        noop_today_s = assert_rerun_changes_nothing(wh, day)
    # An old day run again (a scheduler backfill) changes nothing either.
    assert_rerun_changes_nothing(wh, 1)
    assert main(["check", "--warehouse", str(wh)]) == 0
    print(
        f"\nkill test: {tally.attempts} runs started, {tally.mid_run} killed mid-run "
        f"({tally.after_partial_work} after committing some work, {tally.between_capture_and_commit} between a "
        f"capture and its commit), {tally.finished_before_kill} finished before their kill; "
        f"a whole run took {full_run_s:.1f} s, a no-op one {noop_run_s:.1f} s"
    )
    assert tally.mid_run >= 1 and tally.after_partial_work >= 1


class InjectedKill(Exception):
    pass


def test_run_killed_between_watermark_and_log_is_not_reported_abandoned(tmp_path: Path) -> None:
    catalog = open_catalog(tmp_path / "warehouse", create=True)
    create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
    engine = DuckDBEngine()

    def kill_during_commit(point: str) -> None:
        if point == "during_commit":
            raise InjectedKill(point)

    try:
        ingest_batch(catalog, batch([Event("a", 1, 1, "US", "tv", at(0, 5), 60, at(0, 23))]))
        with pytest.raises(InjectedKill):
            workflow.run_stage(StageContext(catalog, engine, fault=kill_during_commit), "playback_daily")
        killed = StateLog(catalog).runs("playback_daily", limit=1)[0]
        assert watermark(catalog.load_table(SOURCE_TABLE), "playback_daily") == killed["to_snapshot_id"]
        workflow.run_stage(StageContext(catalog, engine), "playback_daily")  # the retry: nothing new
        ingest_batch(catalog, batch([Event("b", 1, 1, "US", "tv", at(1, 5), 60, at(1, 23))]))
        workflow.run_stage(StageContext(catalog, engine), "playback_daily")
        runs = {r["run_id"]: r for r in StateLog(catalog).runs("playback_daily")}
        assert runs[killed["run_id"] + 1]["from_snapshot_id"] == killed["to_snapshot_id"]
        assert runs[killed["run_id"]]["status"] == "committed"
    finally:
        engine.close()
        catalog.engine.dispose()
