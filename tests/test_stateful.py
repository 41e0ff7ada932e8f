"""Model-based test: a real warehouse driven by random schedules of arrivals and runs.

A ``RuleBasedStateMachine`` ingests on-time and late batches (inside and beyond
the lookback window), re-sends duplicates (in the same batch, the next batch,
days later), runs IPS, runs the lookback day by day, crashes IPS at any stage
and boundary and leaves it crashed, expires snapshots, compacts the source and IPS's own
table, and deletes an account's events from the source (a privacy request). Beside the warehouse
it keeps a small model: every event sent, the current processing day, and
whether each strategy has processed everything ingested.

Invariant: once IPS has run to completion since the last arrival, its three
tables equal the oracle and ``ips.playback_daily`` holds each valid event
exactly once; once the lookback has run for the current day, every lookback
mismatch is explained by late events beyond its window. Every example ends by
resuming IPS (as the next scheduled run would) and checking again, so a crash
followed by more arrivals must still lose nothing. A scripted test drives the
same machine through a fixed program, for what the random examples do not reach.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from hypothesis import event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pyiceberg.manifest import ManifestContent
from pyiceberg.table import Table

from bench.runner import check
from bench.scenario import DEFAULT_MERGE_MODE, MERGE_MODES, from_preset
from datagen.ingest import ingest_batch
from pipelines import lookback
from pipelines.catalog import create_tables, open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import live_files
from pipelines.ips import workflow
from pipelines.ips.state import StateLog, watermark
from pipelines.maintenance import compact, expire_history
from pipelines.pipeline import SOURCE_TABLE, STAGES
from pipelines.recorder import FaultHook
from tests.events import START, Event, at, batch, ips_event_ids, is_valid, run_ips_workflows

LOOKBACK_DAYS = 3
SCENARIO = from_preset("tiny", lookback_days=LOOKBACK_DAYS, strategies=("ips", "lookback"))
FAULT_POINTS = ("after_capture", "before_write", "after_write", "during_commit")
# The merge modes in a fixed order whatever the default: the derandomized examples follow it.
MODES = tuple(sorted(MERGE_MODES))

# sqlite syncs every catalog commit to disk; on tmpfs that is free, which makes
# this test about three times faster. Durability across kills is test_kill's job.
SHM = Path("/dev/shm")
FAST_TMP = str(SHM) if SHM.is_dir() and os.access(SHM, os.W_OK) else None

# The ci profile asks few examples of each test; this one carries the suite's
# share of model-based examples (80 in CI, 800 in the dev profile). The ci profile is
# derandomized: CI runs the same examples every time. Its 80 reach (measured with
# --hypothesis-show-statistics, hypothesis 6.170): crashes of
# all three workflows (merge at after_capture, before_write, during_commit; filter at
# after_capture, before_write, after_write; range at before_write, after_write,
# during_commit), both merge modes and each whole-rewrite size, expiries that expire,
# a source compaction that rewrites, account deletes, re-sends days later.
# The seed hashes IpsMachine's source: any edit of the class draws other examples, and
# the list above must be measured again. Two events they never reach, a crash of a
# merge-on-read merge at before_commit and a compaction of IPS's tables that rewrites,
# a fixed program of the rules reaches in every run, `make check` included
# (test_scripted_crash_before_commit_and_compactions_that_rewrite, a few seconds).
_PROFILE = settings()
EXAMPLES = max(80, 4 * _PROFILE.max_examples)
STEPS = 16 if settings.get_current_profile_name() == "dev" else 8


class InjectedCrash(Exception):
    pass


class Payload(NamedTuple):
    account_id: int
    title_id: int | None
    country: str
    hour: int
    view_seconds: int | None


payloads = st.lists(
    st.builds(
        Payload,
        account_id=st.integers(1, 3),
        title_id=st.sampled_from([None, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]),
        country=st.sampled_from(["US", "BR"]),
        hour=st.integers(0, 22),
        # Half ordinary view times; the rest malformed (null, zero, negative) or capped.
        view_seconds=st.one_of(st.integers(1, 5000), st.sampled_from([None, 0, -1, 14_400, 20_000])),
    ),
    min_size=1,
    max_size=4,
)


def crash_at(point: str, hits: list[str]) -> FaultHook:
    def fault(p: str) -> None:
        if p == point:
            hits.append(p)
            raise InjectedCrash(p)

    return fault


class EmptyWarehouse:
    """A new warehouse with empty tables for every example, at one path of this process.

    Creating the tables took 7 % of an example's CPU; they are created once, and each example
    gets the same bytes back at the same path (Iceberg metadata and the catalog hold
    absolute paths, so the copy must lie where the original did).
    """

    def __init__(self) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="ipsbench-stateful-", dir=FAST_TMP))
        atexit.register(shutil.rmtree, self.home, ignore_errors=True)
        self.path = self.home / "warehouse"
        catalog = open_catalog(self.path, create=True)
        create_tables(catalog, SCENARIO.strategies, DEFAULT_MERGE_MODE)
        catalog.engine.dispose()
        self.files = {p.relative_to(self.path): p.read_bytes() for p in self.path.rglob("*") if p.is_file()}
        shutil.rmtree(self.path)

    def restore(self) -> Path:
        for name, data in self.files.items():
            (self.path / name).parent.mkdir(parents=True, exist_ok=True)
            (self.path / name).write_bytes(data)
        return self.path


_EMPTY: list[EmptyWarehouse] = []


def empty_warehouse() -> Path:
    if not _EMPTY:
        _EMPTY.append(EmptyWarehouse())
    return _EMPTY[0].restore()


class IpsMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.warehouse = empty_warehouse()
        self.catalog = open_catalog(self.warehouse)
        self.engine = DuckDBEngine()
        self.day = 0
        self.next_id = 0
        self.batches: list[list[Event]] = []
        # The first copy of every event sent.
        self.originals: dict[str, Event] = {}
        # Whether each strategy has processed everything ingested so far.
        self.ips_current = True
        self.lookback_current = True
        self.unchecked = False

    @initialize(mode=st.sampled_from(MODES), whole_below=st.sampled_from([0, 3, DuckDBEngine.WHOLE_BELOW_ROWS]))
    def choose_merge_mode(self, mode: str, whole_below: int = 0) -> None:
        """The IPS targets' write.merge.mode: merges by key rewrite files, or write position deletes.

        Merge-on-read rewrites a partition of fewer than ``whole_below`` rows whole instead
        (the default rewrites every partition here whole; 0: none; 3: some).
        """
        for s in STAGES:
            table = self.catalog.load_table(f"ips.{s}")
            with table.transaction() as tx:
                tx.set_properties({"write.merge.mode": mode})
        self.engine.WHOLE_BELOW_ROWS = whole_below
        event(f"merge mode {mode}" + (f", whole below {whole_below} rows" if mode == "merge-on-read" else ""))

    # -- arrivals -----------------------------------------------------------

    def _events(self, specs: list[Payload], lateness: int) -> list[Event]:
        out = []
        for p in specs:
            self.next_id += 1
            out.append(
                Event(
                    event_id=f"e{self.next_id}",
                    account_id=p.account_id,
                    title_id=p.title_id,
                    country=p.country,
                    device="tv",
                    event_ts=at(self.day - lateness, p.hour),
                    view_seconds=p.view_seconds,
                    ingest_ts=at(self.day, 23),
                )
            )
        return out

    def _ingest(self, events: list[Event]) -> None:
        ingest_batch(self.catalog, batch(events))
        self.batches.append(events)
        for e in events:
            self.originals.setdefault(e.event_id, e)
        self.ips_current = self.lookback_current = False

    @rule(specs=payloads)
    def ingest_on_time(self, specs: list[Payload]) -> None:
        self._ingest(self._events(specs, 0))

    @rule(specs=payloads, lateness=st.integers(1, LOOKBACK_DAYS - 1))
    def ingest_late_inside_window(self, specs: list[Payload], lateness: int) -> None:
        self._ingest(self._events(specs, lateness))

    @rule(specs=payloads, lateness=st.integers(LOOKBACK_DAYS, LOOKBACK_DAYS + 12))
    def ingest_late_beyond_window(self, specs: list[Payload], lateness: int) -> None:
        self._ingest(self._events(specs, lateness))

    @rule(specs=payloads, lateness=st.sampled_from([0, 1, LOOKBACK_DAYS + 1]))
    def resend_in_same_batch(self, specs: list[Payload], lateness: int) -> None:
        events = self._events(specs, lateness)
        self._ingest(events + events)

    @precondition(lambda self: bool(self.batches))
    @rule(data=st.data())
    def resend_in_next_batch(self, data: st.DataObject) -> None:
        last = self.batches[-1]
        again = data.draw(st.lists(st.sampled_from(last), min_size=1, max_size=len(last), unique_by=id))
        self._ingest([e.resent(self.day) for e in again])

    # Events to re-send: a privacy delete may have removed every one.
    @precondition(lambda self: bool(self.originals))
    @rule(data=st.data(), days_later=st.integers(LOOKBACK_DAYS, LOOKBACK_DAYS + 4))
    def resend_much_later(self, data: st.DataObject, days_later: int) -> None:
        """The day closes and ``days_later`` days pass; then a device re-sends events sent before."""
        self._close_day(idle_days=days_later - 1)
        event("resend_much_later")
        again = data.draw(st.lists(st.sampled_from(list(self.originals.values())), min_size=1, max_size=3))
        self._ingest([e.resent(self.day) for e in again])

    # -- runs ---------------------------------------------------------------

    def _run_ips(self) -> None:
        run_ips_workflows(self.catalog, self.engine)
        self.ips_current = True
        self.unchecked = True

    @rule()
    def run_ips(self) -> None:
        self._run_ips()

    def _close_day(self, idle_days: int) -> None:
        """The day's lookback run, then the next day (after ``idle_days`` without arrivals).

        A lookback on a day without arrivals recomputes unchanged input (no event
        is dated after the day it arrives), so skipping those runs changes nothing.
        """
        processing_date = START + timedelta(days=self.day)
        for stage in STAGES:
            lookback.run_stage(StageContext(self.catalog, self.engine), stage, processing_date, LOOKBACK_DAYS)
        self.lookback_current = True
        self.unchecked = True
        self.day += 1 + idle_days

    @rule(idle_days=st.integers(0, LOOKBACK_DAYS))
    def run_lookback_and_close_day(self, idle_days: int) -> None:
        self._close_day(idle_days)

    def _crash(self, stage: str, point: str) -> None:
        """Run the day's IPS workflows in order; ``stage`` crashes at ``point`` and the rest never run."""
        for s in STAGES[: STAGES.index(stage)]:
            workflow.run_stage(StageContext(self.catalog, self.engine), s)
        wf = workflow.WORKFLOWS[stage]
        before = watermark(self.catalog.load_table(wf.input_table), wf.name)
        hits: list[str] = []
        with contextlib.suppress(InjectedCrash):
            workflow.run_stage(StageContext(self.catalog, self.engine, fault=crash_at(point, hits)), stage)
        self.ips_current = False
        if not hits:
            event(f"crash {stage}: nothing new to capture, no crash")
            return
        event(f"crash {stage} at {point}")
        input_table = self.catalog.load_table(wf.input_table)
        after = watermark(input_table, wf.name)
        if point == "during_commit":
            assert after == input_table.metadata.current_snapshot_id
        else:
            assert after == before, f"watermark of {stage} moved although it crashed at {point}"
        assert StateLog(self.catalog).runs(wf.name, limit=1)[0]["status"] == "captured"

    # One rule per workflow, so that crashes are frequent enough to meet each other.
    @precondition(lambda self: not self.ips_current)
    @rule(point=st.sampled_from(FAULT_POINTS))
    def crash_merge_workflow(self, point: str) -> None:
        self._crash("playback_daily", point)

    @precondition(lambda self: not self.ips_current)
    # before_commit: a merge-on-read merge has written its delete and data files, not committed them.
    @rule(point=st.sampled_from((*FAULT_POINTS, "before_commit")))
    def crash_filter_workflow(self, point: str) -> None:
        self._crash("playback_daily_agg", point)

    @precondition(lambda self: not self.ips_current)
    @rule(point=st.sampled_from(FAULT_POINTS))
    def crash_range_workflow(self, point: str) -> None:
        self._crash("title_daily_rank", point)

    @rule()
    def expire_snapshots(self) -> None:
        expired = sum(
            expire_history(self.catalog.load_table(name)) for name in (SOURCE_TABLE, *(f"ips.{s}" for s in STAGES))
        )
        event(f"expire_snapshots: {'some' if expired else 'none'} expired")

    @rule(min_files=st.integers(1, 3), keep_main_file=st.booleans())
    def compact_source(self, min_files: int, keep_main_file: bool) -> None:
        removed, _ = compact(self.catalog.load_table(SOURCE_TABLE), min_files=min_files, keep_main_file=keep_main_file)
        event(f"compact_source: {'rewrote' if removed else 'nothing to do'}")

    @rule(min_files=st.integers(1, 3), keep_main_file=st.booleans())
    def compact_ips_daily(self, min_files: int, keep_main_file: bool) -> None:
        removed, _ = compact(
            self.catalog.load_table("ips.playback_daily"), min_files=min_files, keep_main_file=keep_main_file
        )
        event(f"compact_ips_daily: {'rewrote' if removed else 'nothing to do'}")

    @rule()
    def compact_ips_agg(self) -> None:
        """The filter stage's target: on merge-on-read its delete files are folded into rewritten files."""
        removed, _ = compact(self.catalog.load_table("ips.playback_daily_agg"), min_files=3)
        event(f"compact_ips_agg: {'rewrote' if removed else 'nothing to do'}")

    @precondition(lambda self: bool(self.originals))
    @rule(data=st.data())
    def delete_an_account(self, data: st.DataObject) -> None:
        """A privacy request: every event of one account leaves the source (a DELETE/OVERWRITE)."""
        account = data.draw(st.sampled_from(sorted({e.account_id for e in self.originals.values()})))
        self.catalog.load_table(SOURCE_TABLE).delete(f"account_id = {account}")
        event("delete_an_account")
        self.originals = {i: e for i, e in self.originals.items() if e.account_id != account}
        self.ips_current = self.lookback_current = False

    # -- checks -------------------------------------------------------------

    @invariant()
    def results_agree_with_the_oracle(self) -> None:
        if not self.unchecked:
            return
        self.unchecked = False
        verdicts = check(self.catalog, SCENARIO)
        if self.ips_current:
            ips = verdicts["ips"]
            assert ips.equal_to_oracle, ips.per_stage
            valid = sorted(i for i, e in self.originals.items() if is_valid(e))
            assert ips_event_ids(self.catalog) == valid, "an event was lost or duplicated in ips.playback_daily"
        if self.lookback_current:
            lb = verdicts["lookback"]
            assert lb.unexplained_mismatched_rows == 0, lb.per_stage

    def teardown(self) -> None:
        try:
            if not self.ips_current:
                # The next scheduled run resumes after crashes and unprocessed arrivals.
                self._run_ips()
                self.results_agree_with_the_oracle()
        finally:
            self.engine.close()
            self.catalog.engine.dispose()
            shutil.rmtree(self.warehouse, ignore_errors=True)


# Eighty examples of 8 steps: the long property run, in `make test` only.
TestIpsAgreesWithOracle = pytest.mark.slow(IpsMachine.TestCase)
TestIpsAgreesWithOracle.settings = settings(_PROFILE, max_examples=EXAMPLES, stateful_step_count=STEPS)


def live_count(machine: IpsMachine, table: str, content: ManifestContent) -> int:
    return len(live_files(machine.catalog.load_table(table), content=content))


def test_scripted_crash_before_commit_and_compactions_that_rewrite(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed program of the machine's rules reaching what the random examples do not.

    The 80 examples of the ci profile never crash a merge-on-read merge at
    ``before_commit`` (its data and delete files written, not committed) and never
    compact IPS's tables with something to rewrite; this program does both, with
    the machine's invariant after every step and its teardown at the end. Outside a
    hypothesis test ``event`` refuses to record, so the rules' events land in a list
    here, and each ``compact`` the rules call reports what it returned.
    """
    events: list[str] = []
    compacted: list[tuple[str, int, int]] = []
    real_compact = compact

    def recorded_compact(table: Table, min_files: int = 4, keep_main_file: bool = True) -> tuple[int, int]:
        removed, written = real_compact(table, min_files=min_files, keep_main_file=keep_main_file)
        compacted.append((".".join(table.name()), removed, written))
        return removed, written

    module = sys.modules[__name__]
    monkeypatch.setattr(module, "event", events.append)
    monkeypatch.setattr(module, "compact", recorded_compact)

    m = IpsMachine()

    def step(rule: Callable[..., None], *args: Any) -> None:
        rule(*args)
        m.results_agree_with_the_oracle()

    def checked_ips_run() -> None:
        step(m.run_ips)
        assert m.ips_current and not m.unchecked, "the invariant compared IPS with the oracle"

    agg = "ips.playback_daily_agg"
    try:
        step(m.choose_merge_mode, "merge-on-read")
        # Three runs, each appending to day 0's partition of ips.playback_daily (2, 1 and 1 rows).
        step(m.ingest_on_time, [Payload(1, 1, "US", 10, 600), Payload(2, 2, "BR", 11, 900)])
        checked_ips_run()
        step(m.ingest_on_time, [Payload(1, 3, "US", 12, 300)])
        checked_ips_run()
        # Account 1's row of day 0 changes again: the agg merge replaces it by a position delete.
        step(m.ingest_on_time, [Payload(1, 4, "US", 13, 120)])
        visible = m.catalog.load_table(agg).metadata.current_snapshot_id
        step(m.crash_filter_workflow, "before_commit")
        # The fault hook raised at before_commit (the rule then checked the watermark stayed and the run is open).
        assert events[-1] == "crash playback_daily_agg at before_commit", events
        assert m.catalog.load_table(agg).metadata.current_snapshot_id == visible, "the crashed merge committed"
        # The next scheduled run retries, and commits what the crash lost.
        checked_ips_run()
        assert m.catalog.load_table(agg).metadata.current_snapshot_id != visible
        assert live_count(m, agg, ManifestContent.DELETES) > 0, "the merge wrote no position deletes"

        daily_files = live_count(m, "ips.playback_daily", ManifestContent.DATA)
        step(m.compact_ips_daily, 3, True)
        table, removed, written = compacted[-1]
        assert table == "ips.playback_daily" and removed >= 2 and written >= 1, compacted
        assert live_count(m, "ips.playback_daily", ManifestContent.DATA) == daily_files - removed + written
        step(m.compact_ips_agg)
        table, removed, written = compacted[-1]
        assert table == agg and removed >= 2 and written >= 1, compacted
        assert live_count(m, agg, ManifestContent.DELETES) == 0, "a delete file outlived the compaction"

        # IPS passes over both compactions and still equals the oracle; the lookback too.
        step(m.ingest_late_inside_window, [Payload(1, 5, "US", 9, 60)], 1)
        checked_ips_run()
        step(m.run_lookback_and_close_day, 0)
        assert m.lookback_current and not m.unchecked
    finally:
        m.teardown()
