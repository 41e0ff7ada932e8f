"""A benchmark round runs on its own warehouse: its writes land there and the prepared state stays as it was."""

from __future__ import annotations

import hashlib
import shutil
from datetime import timedelta
from pathlib import Path

from bench.metrics import StageRecorder
from bench.runner import run_strategy_stage, simulate
from bench.scenario import from_preset
from datagen.ingest import ingest_batch
from datagen.model import arrival_batch
from pipelines.catalog import open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import live_files
from pipelines.pipeline import PIPELINE
from tests.benchmarks.rounds import Prepared

SCENARIO = from_preset("tiny", days=2, warmup_days=1, events_per_day=300, maintenance_every_days=0)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()
    }


def _paths_of(warehouse: Path) -> set[str]:
    """Every metadata file and live data file the warehouse's catalog points at."""
    catalog = open_catalog(warehouse)
    paths = set()
    for ns in catalog.list_namespaces():
        for ident in catalog.list_tables(ns):
            table = catalog.load_table(ident)
            paths.add(table.metadata_location)
            paths.update(f.file_path for f in live_files(table))
    catalog.engine.dispose()
    return paths


def _round(warehouse: Path) -> None:
    """What a benchmark round does: the next day's batch, then stage 1 of both strategies."""
    catalog = open_catalog(warehouse)
    day = SCENARIO.days
    model = from_preset("tiny", days=day + 1, warmup_days=1, events_per_day=300).event_model()
    ingest_batch(catalog, arrival_batch(model, day))
    engine = DuckDBEngine()
    for strategy in ("lookback", "ips"):
        ctx = StageContext(catalog, engine, StageRecorder())
        run_strategy_stage(ctx, strategy, PIPELINE[0].name, SCENARIO.start_date + timedelta(days=day), SCENARIO)
    engine.close()
    catalog.engine.dispose()


def test_a_round_writes_only_into_its_warehouse(tmp_path: Path) -> None:
    wh = tmp_path / "warehouse"
    simulate(SCENARIO, wh, progress=False)
    prepared = Prepared(wh, tmp_path / "prepared")
    kept = _digest(prepared.keep)
    before = _paths_of(wh)
    for _ in range(2):
        _round(prepared.restore())
        after = _paths_of(wh)
        assert after - before, "the round wrote nothing"
        assert all(p.startswith(str(wh)) or p.startswith(f"file://{wh}") for p in after), after - before
        assert _digest(prepared.keep) == kept
    # Why a plain copy is not a round's warehouse: it still points at the original's files.
    copy = tmp_path / "copy"
    shutil.copytree(prepared.keep, copy)
    assert not any(str(copy) in p for p in _paths_of(copy))
