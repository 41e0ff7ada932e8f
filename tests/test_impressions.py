"""A user's impressions file beside the events file: stage 2c reads both, IPS equals the oracle, bad files refused."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from bench.scenario import from_preset
from datagen.model import arrival_batch
from pipelines.catalog import open_catalog
from pipelines.pipeline import IMPRESSIONS_TABLE
from tests.events import impressions_of

pytestmark = pytest.mark.slow


# Three arrival dates: late rows reach earlier dates from the second on.
FILE_DAYS = 3


def _files(tmp_path: Path) -> tuple[Path, Path, pa.Table]:
    model = from_preset("tiny").event_model()
    events = pa.concat_tables(arrival_batch(model, day) for day in range(FILE_DAYS))
    shown = impressions_of(events)
    pq.write_table(events, tmp_path / "events.parquet")
    pq.write_table(shown, tmp_path / "impressions.parquet")
    return tmp_path / "events.parquet", tmp_path / "impressions.parquet", shown


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--preset", "tiny", "--quiet", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_an_impressions_file_reaches_stage_2c_and_ips_equals_the_oracle(tmp_path: Path) -> None:
    events, impressions, shown = _files(tmp_path)
    out = tmp_path / "run"
    proc = _run("--out", str(out), "--events", str(events), "--impressions", str(impressions), "--warmup-days", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["correctness"]["ips"]["equal_to_oracle"] is True
    assert summary["events_file"]["rows"] == pq.read_metadata(events).num_rows
    stored = open_catalog(out / "warehouse").load_table(IMPRESSIONS_TABLE).scan().to_arrow()
    assert stored.num_rows == shown.num_rows
    take_rate = open_catalog(out / "warehouse").load_table("ips.title_take_rate").scan().to_arrow()
    assert pc.sum(take_rate.column("impressions")).as_py() > 0


def test_impressions_arriving_outside_the_events_dates_are_refused(tmp_path: Path) -> None:
    events, _, shown = _files(tmp_path)
    later = shown.set_column(
        shown.schema.get_field_index("ingest_ts"),
        "ingest_ts",
        pc.add(shown.column("ingest_ts"), pa.scalar(timedelta(days=30), pa.duration("us"))),
    )
    pq.write_table(later, tmp_path / "late.parquet")
    out = tmp_path / "run"
    proc = _run("--out", str(out), "--events", str(events), "--impressions", str(tmp_path / "late.parquet"))
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "arrive outside the events file's arrival dates" in proc.stderr
    assert not out.exists()


def test_impressions_without_events_are_refused(tmp_path: Path) -> None:
    _, impressions, _ = _files(tmp_path)
    out = tmp_path / "run"
    proc = _run("--out", str(out), "--impressions", str(impressions))
    assert proc.returncode == 2
    assert "--impressions needs --events" in proc.stderr
    assert not out.exists()
