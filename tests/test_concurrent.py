"""Concurrent writers: nothing committed while an IPS run is in flight is lost.

- A batch committed to a workflow's input between its capture and its commit
  is not in that capture (the watermark stops at the captured snapshot) and is
  captured by the next run. For ``playback_daily`` the writer is an ingest into
  ``source.playback``; for the downstream workflows it is the upstream MERGE
  workflow appending to ``ips.playback_daily``.
- IpCommit's tag commit racing a concurrent commit to the same table loses the
  catalog's compare-and-swap; it is retried (a bounded number of times) and the
  retries are reported in ``ips_capture_log.commit_retries``.

Every concurrent writer uses its own catalog connection, as another process would.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table.update import SetSnapshotRefUpdate

from bench.runner import check
from bench.scenario import DEFAULT_MERGE_MODE, from_preset
from datagen.ingest import ingest_batch
from pipelines.catalog import create_tables, open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.ips import workflow
from pipelines.ips.state import COMMIT_RETRIES, StateLog, tag_name, watermark
from pipelines.pipeline import STAGES
from tests.events import Event, at, batch, ips_event_ids, is_valid, run_ips_workflows
from tests.lanes import covered

SCENARIO = from_preset("tiny", lookback_days=3, strategies=("ips",))


def day0() -> list[Event]:
    return [Event(f"a{i}", i % 3, i % 5 + 1, "US", "tv", at(0, i % 24), 100 + i, at(0, 23)) for i in range(12)]


def day1() -> list[Event]:
    late = [Event(f"b{i}", i % 3, i % 7 + 1, "BR", "tv", at(1 - i % 3, 5), 50 + i, at(1, 23)) for i in range(10)]
    return [*late, day0()[0].resent(1)]


def concurrent_batch(n: int) -> list[Event]:
    """Valid events on dates old and new, and a re-sent one: each batch changes every downstream table."""
    fresh = [
        Event(f"c{n}_{i}", i % 4, i % 6 + 1, "US", "web", at(1 - i % 5, 7), 10 + n + i, at(1, 23)) for i in range(6)
    ]
    return [*fresh, day0()[n % 12].resent(1)]


@dataclass
class Warehouse:
    path: Path
    catalog: SqlCatalog
    other: SqlCatalog
    engine: DuckDBEngine
    other_engine: DuckDBEngine
    sent: list[Event]

    def ingest(self, events: list[Event], catalog: SqlCatalog | None = None) -> None:
        ingest_batch(catalog or self.catalog, batch(events))
        self.sent.extend(events)

    def assert_equal_to_oracle(self) -> None:
        verdict = check(self.catalog, SCENARIO)["ips"]
        assert verdict.equal_to_oracle, verdict.per_stage
        assert ips_event_ids(self.catalog) == sorted({e.event_id for e in self.sent if is_valid(e)})


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Day 0 ingested and processed, day 1 ingested: where every case starts.

    Built once per module and kept as files; each case gets it back at the same path
    (Iceberg metadata and the catalog hold absolute paths). Returns (path, kept copy).
    """
    root = tmp_path_factory.mktemp("concurrent")
    path = root / "warehouse"
    catalog = open_catalog(path, create=True)
    engine = DuckDBEngine()
    try:
        create_tables(catalog, SCENARIO.strategies, DEFAULT_MERGE_MODE)
        ingest_batch(catalog, batch(day0()))
        run_ips_workflows(catalog, engine)
        ingest_batch(catalog, batch(day1()))
    finally:
        engine.close()
        catalog.engine.dispose()
    shutil.copytree(path, root / "kept")
    return path, root / "kept"


@pytest.fixture
def wh(started: tuple[Path, Path]) -> Iterator[Warehouse]:
    """The started warehouse, as built, with a second connection and engine for the concurrent writer."""
    path, kept = started
    shutil.rmtree(path)
    shutil.copytree(kept, path)
    catalog = open_catalog(path)
    w = Warehouse(path, catalog, open_catalog(path), DuckDBEngine(), DuckDBEngine(), [*day0(), *day1()])
    yield w
    w.engine.close()
    w.other_engine.close()
    w.catalog.engine.dispose()
    w.other.engine.dispose()


def commit_concurrently(w: Warehouse, stage: str, n: int) -> list[str]:
    """Another writer commits to ``stage``'s input table; returns the new event_ids it brought."""
    events = concurrent_batch(n)
    known = {e.event_id for e in w.sent}
    w.ingest(events, w.other)
    if workflow.WORKFLOWS[stage].input_table != "source.playback":
        workflow.run_stage(StageContext(w.other, w.other_engine), "playback_daily")
    return [e.event_id for e in events if e.event_id not in known]


def input_snapshot(w: Warehouse, stage: str) -> int | None:
    return w.catalog.load_table(workflow.WORKFLOWS[stage].input_table).metadata.current_snapshot_id


@pytest.mark.parametrize(
    ("stage", "point"),
    covered(
        [("playback_daily", p) for p in ("after_capture", "before_write", "after_write", "during_commit")]
        + [(s, p) for s in STAGES[1:] for p in ("after_capture", "before_write")]
    ),
)
def test_batch_committed_mid_run_is_captured_by_the_next_run(wh: Warehouse, stage: str, point: str) -> None:
    for s in STAGES[: STAGES.index(stage)]:
        workflow.run_stage(StageContext(wh.catalog, wh.engine), s)
    brought: list[str] = []

    def writer_at(p: str) -> None:
        if p == point:
            brought.extend(commit_concurrently(wh, stage, 1))

    cap = workflow.run_stage(StageContext(wh.catalog, wh.engine, fault=writer_at), stage)
    assert brought, f"{stage} never reached {point}"
    wf = workflow.WORKFLOWS[stage]
    # The watermark stops at what was captured; the concurrent snapshot lies beyond it.
    assert watermark(wh.catalog.load_table(wf.input_table), wf.name) == cap.to_snapshot_id
    assert input_snapshot(wh, stage) != cap.to_snapshot_id
    if stage == "playback_daily":
        assert not set(brought) & set(ips_event_ids(wh.catalog))
    concurrent = input_snapshot(wh, stage)

    run_ips_workflows(wh.catalog, wh.engine)  # the next scheduled run
    nxt = StateLog(wh.catalog).runs(wf.name, limit=1)[0]
    assert nxt["from_snapshot_id"] == cap.to_snapshot_id and nxt["to_snapshot_id"] == concurrent
    assert nxt["status"] == "committed"
    wh.assert_equal_to_oracle()


class RacingWriter:
    """Commits to a table from another connection inside our catalog's ``commit_table``.

    pyiceberg's SQL catalog reads the table's current metadata, writes the new
    metadata, then swaps the pointer only if it is still the one it read.
    The writer commits right after that read, so the swap fails: a real
    conflict, exactly as a concurrent ingest in another process would cause.
    """

    def __init__(self, w: Warehouse, stage: str, conflicts: int) -> None:
        self.w, self.stage, self.left = w, stage, conflicts
        self.racing = False
        self.brought: list[str] = []
        self._commit = w.catalog.commit_table
        self._load = w.catalog.load_table

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(self.w.catalog, "commit_table", self.commit_table)
        monkeypatch.setattr(self.w.catalog, "load_table", self.load_table)

    def commit_table(self, table: Any, requirements: Any, updates: Any) -> Any:
        wf = workflow.WORKFLOWS[self.stage]
        moves_watermark = any(isinstance(u, SetSnapshotRefUpdate) and u.ref_name == tag_name(wf.name) for u in updates)
        self.racing = moves_watermark and self.left > 0
        try:
            return self._commit(table, requirements, updates)
        finally:
            self.racing = False

    def load_table(self, identifier: Any) -> Any:
        table = self._load(identifier)
        if self.racing:
            self.racing = False
            self.left -= 1
            self.brought += commit_concurrently(self.w, self.stage, 100 + len(self.brought))
        return table


@pytest.mark.parametrize(
    ("stage", "conflicts"),
    [("playback_daily", 1), ("playback_daily", 3), ("playback_daily_agg", 2), ("title_daily_rank", 2)],
)
def test_ip_commit_retries_a_conflicting_commit(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch, stage: str, conflicts: int
) -> None:
    for s in STAGES[: STAGES.index(stage)]:
        workflow.run_stage(StageContext(wh.catalog, wh.engine), s)
    racer = RacingWriter(wh, stage, conflicts)
    racer.install(monkeypatch)
    cap = workflow.run_stage(StageContext(wh.catalog, wh.engine), stage)
    monkeypatch.undo()

    wf = workflow.WORKFLOWS[stage]
    assert racer.left == 0 and racer.brought
    run = StateLog(wh.catalog).runs(wf.name, limit=1)[0]
    assert (run["status"], run["commit_retries"]) == ("committed", conflicts)
    # The retried commit kept the watermark on what was captured; the racing commits lie beyond it.
    assert watermark(wh.catalog.load_table(wf.input_table), wf.name) == cap.to_snapshot_id
    assert input_snapshot(wh, stage) != cap.to_snapshot_id
    if stage == "playback_daily":
        assert not set(racer.brought) & set(ips_event_ids(wh.catalog))
    run_ips_workflows(wh.catalog, wh.engine)
    wh.assert_equal_to_oracle()


@pytest.mark.parametrize("stage", ["playback_daily", pytest.param("playback_daily_agg", marks=pytest.mark.slow)])
def test_ip_commit_gives_up_after_bounded_retries_and_loses_nothing(
    wh: Warehouse, monkeypatch: pytest.MonkeyPatch, stage: str
) -> None:
    for s in STAGES[: STAGES.index(stage)]:
        workflow.run_stage(StageContext(wh.catalog, wh.engine), s)
    wf = workflow.WORKFLOWS[stage]
    before = watermark(wh.catalog.load_table(wf.input_table), wf.name)
    racer = RacingWriter(wh, stage, COMMIT_RETRIES + 1)
    racer.install(monkeypatch)
    with pytest.raises(CommitFailedException):
        workflow.run_stage(StageContext(wh.catalog, wh.engine), stage)
    monkeypatch.undo()

    assert racer.left == 0
    assert watermark(wh.catalog.load_table(wf.input_table), wf.name) == before
    assert StateLog(wh.catalog).runs(wf.name, limit=1)[0]["status"] == "captured"
    run_ips_workflows(wh.catalog, wh.engine)  # the scheduler's retry captures it all again
    wh.assert_equal_to_oracle()
