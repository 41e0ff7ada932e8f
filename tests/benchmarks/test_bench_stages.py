"""pytest-benchmark: each lookback stage and each IPS pattern, on a fresh warehouse per round.

A warehouse is prepared once (``tiny`` scenario, both strategies run up to the
day before the measured one, that day's batch ingested); every round restores
it at its own path (``setup``, outside the timed region; see ``rounds``: a copy
elsewhere would still point at the original's files), runs one stage, and
checks the stage's output against the oracle, so a fast round that skipped work fails.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from bench.equality import compare
from bench.metrics import StageRecorder
from bench.runner import run_strategy_stage, simulate
from bench.scenario import from_preset
from datagen.ingest import ingest_batch
from datagen.model import arrival_batch
from pipelines import oracle
from pipelines.catalog import open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.ips.capture import build_icdc, find_changes
from pipelines.ips.state import watermark
from pipelines.pipeline import STAGES
from tests.benchmarks.rounds import Prepared

SCENARIO = from_preset("tiny", days=8, warmup_days=1, events_per_day=5_000, maintenance_every_days=0)
DAY = SCENARIO.days  # the measured day: one past the prepared run
DATE = SCENARIO.start_date + timedelta(days=DAY)


# A prepared warehouse per module and a run per stage: `make test` only.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    root = tmp_path_factory.mktemp("bench")
    wh = root / "warehouse"
    simulate(SCENARIO, wh, progress=False)
    catalog = open_catalog(wh)
    batch_scenario = from_preset("tiny", days=DAY + 1, warmup_days=1, events_per_day=5_000)
    ingest_batch(catalog, arrival_batch(batch_scenario.event_model(), DAY))
    catalog.engine.dispose()
    return Prepared(wh, root / "prepared")


def run_stage(warehouse: Path, strategy: str, stage: str) -> StageRecorder:
    """Run one stage of ``strategy`` for the measured day; returns its recorder."""
    catalog = open_catalog(warehouse)
    engine = DuckDBEngine()
    rec = StageRecorder()
    with rec.timed():
        run_strategy_stage(StageContext(catalog, engine, rec), strategy, stage, DATE, SCENARIO)
    engine.close()
    catalog.engine.dispose()
    return rec


def fresh_round(prepared: Prepared, strategy: str, stage: str) -> Callable[[], tuple[tuple[Any, ...], dict]]:
    """The prepared warehouse restored, with the day's earlier stages already run (not timed)."""

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        target = prepared.restore()
        for earlier in STAGES[: STAGES.index(stage)]:
            run_stage(target, strategy, earlier)
        return (target,), {}

    return setup


def assert_stage_matches_oracle(warehouse: Path, strategy: str, stage: str) -> None:
    catalog = open_catalog(warehouse)
    engine = DuckDBEngine()
    oracle.compute(engine, catalog)
    verdict = compare(engine, catalog, strategy, SCENARIO.lookback_days if strategy == "lookback" else None)
    engine.close()
    catalog.engine.dispose()
    assert verdict.per_stage[stage]["unexplained_mismatched_rows"] == 0, verdict.per_stage


@pytest.mark.parametrize("strategy", ["lookback", "ips"])
@pytest.mark.parametrize("stage", STAGES)
def test_stage(benchmark: Any, prepared: Prepared, strategy: str, stage: str) -> None:
    recorders: list[StageRecorder] = []

    def target(warehouse: Path) -> Path:
        recorders.append(run_stage(warehouse, strategy, stage))
        return warehouse

    last = benchmark.pedantic(target, setup=fresh_round(prepared, strategy, stage), rounds=3)
    assert_stage_matches_oracle(last, strategy, stage)
    row = recorders[-1].row()
    assert row["rows_read"] > 0 and row["rows_written"] > 0
    benchmark.extra_info.update(
        {k: row[k] for k in ("wall_s", "rows_read", "bytes_read", "rows_written", "bytes_written", "pattern")}
    )


def test_icdc_creation(benchmark: Any, prepared: Prepared) -> None:
    """Building the zero-copy ICDC table for the day's capture (metadata only)."""
    catalog = open_catalog(prepared.restore())
    source = catalog.load_table("source.playback")
    cap = find_changes("playback_daily", source, watermark(source, "playback_daily"), "event_ts")
    assert cap.files
    name = benchmark(build_icdc, catalog, source, "bench_icdc", cap.files)
    icdc = catalog.load_table(name)
    assert {t.file.file_path for t in icdc.scan().plan_files()} == {f.file_path for f in cap.files}
    benchmark.extra_info.update(files=len(cap.files), rows=cap.rows)
    catalog.engine.dispose()
