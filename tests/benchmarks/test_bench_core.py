"""pytest-benchmark suite: `make benchmark` times it; `make test` runs each once as a smoke test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bench.scenario import DEFAULT_MERGE_MODE, from_preset
from datagen.ingest import ingest_batch
from datagen.model import arrival_batch
from pipelines.catalog import create_tables, open_catalog
from pipelines.ips.capture import ip_capture
from pipelines.ips.state import ip_commit, watermark
from pipelines.pipeline import SOURCE_TABLE


def test_generate_one_million_events(benchmark: Any) -> None:
    model = from_preset("medium").event_model()
    table = benchmark(arrival_batch, model, 20)
    assert table.num_rows >= model.events_per_day
    benchmark.extra_info["events"] = table.num_rows
    if benchmark.stats:
        benchmark.extra_info["events_per_s"] = table.num_rows / benchmark.stats.stats.median


@pytest.mark.slow
def test_capture_after_long_history(benchmark: Any, tmp_path: Path) -> None:
    """IpCapture of one new batch after 40 committed ones: metadata only, whatever the history."""
    catalog = open_catalog(tmp_path / "wh", create=True)
    create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
    model = from_preset("tiny", days=45, warmup_days=1).event_model()
    for day in range(40):
        ingest_batch(catalog, arrival_batch(model, day))
    committed = catalog.load_table(SOURCE_TABLE).metadata.current_snapshot_id
    assert committed is not None
    ip_commit(catalog, SOURCE_TABLE, "bench", committed)
    ingest_batch(catalog, arrival_batch(model, 40))
    source = catalog.load_table(SOURCE_TABLE)
    mark = watermark(source, "bench")

    cap = benchmark(ip_capture, catalog, "bench", source, mark, "event_ts")
    assert cap.rows == arrival_batch(model, 40).num_rows
    benchmark.extra_info.update(files=len(cap.files), rows=cap.rows, snapshots=len(cap.snapshots))
