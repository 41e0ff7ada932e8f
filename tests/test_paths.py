"""Paths as users type them: any character works or is refused up front, "new" is judged on the
resolved path, and nothing is written outside ``--out``/``--warehouse``."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.expressions import AlwaysTrue

from bench.cli import main
from bench.scenario import DEFAULT_MERGE_MODE
from datagen.ingest import ingest_batch
from pipelines.catalog import create_tables, open_catalog
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import FileSet, plan
from tests.events import Event, at, batch

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# Characters a URI would have split on or encoded, and the hive-looking "name=value" of a sweep's folders.
ODD = "r#1 %41 'q=,:@ x"
# DuckDB's wildcards (escaped where it reads files), with '#', '%' and a space.
GLOB = "r[1] *?x# %41 y"
EVENTS = [
    Event("e1", 1, 10, "US", "tv", at(0, 1), 100, at(0, 2)),
    Event("e2", 2, 11, "BR", "web", at(0, 5), 50, at(0, 6)),
]


TINY_3_DAYS = ["--preset", "tiny", "--days", "3", "--warmup-days", "1", "--quiet"]


def listing(root: Path) -> set[Path]:
    return {p.relative_to(root) for p in root.rglob("*")}


def bad(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ipsbench: error:") and "\n" not in err
    return err


def table_locations(warehouse: Path) -> list[str]:
    with sqlite3.connect(warehouse / "catalog.db") as db:
        return [row[0] for row in db.execute("SELECT metadata_location FROM iceberg_tables")]


@pytest.mark.slow
@pytest.mark.parametrize("name", [ODD, GLOB])
def test_tiny_run_under_a_path_with_odd_characters_writes_only_there(tmp_path: Path, name: str) -> None:
    before = listing(tmp_path)
    out = tmp_path / "runs" / name
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", *TINY_3_DAYS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["correctness"]["ips"]["equal_to_oracle"]
    assert summary["correctness"]["lookback"]["unexplained_mismatched_rows"] == 0
    # Every new file is under --out (parents of --out aside, which the run creates).
    new = {p for p in listing(tmp_path) - before if (tmp_path / p) not in out.parents}
    assert new and all((tmp_path / p).is_relative_to(out) for p in new)
    # The catalog points into the warehouse, with the name as given (not cut at '#', not %-encoded).
    locations = table_locations(out / "warehouse")
    assert locations and all(loc.startswith(f"{out.resolve()}/warehouse/") for loc in locations)


def test_catalog_and_metadata_stay_in_a_warehouse_named_with_uri_characters(tmp_path: Path) -> None:
    """open_catalog itself takes '#', '?' and '[' (the sqlite URL is escaped, the warehouse a plain path)."""
    warehouse = tmp_path / "w#1 ?x [2] %20"
    catalog = open_catalog(warehouse, create=True)
    try:
        create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
        ingest_batch(catalog, batch(EVENTS))
        table = catalog.load_table("source.playback")
        assert table.scan().to_arrow().num_rows == 2
        files = [task.file.file_path for task in table.scan().plan_files()]
    finally:
        catalog.engine.dispose()
    assert listing(tmp_path) == {Path(warehouse.name)} | {Path(warehouse.name) / p for p in listing(warehouse)}
    assert (warehouse / "catalog.db").is_file()
    assert files and all(Path(f).is_file() and Path(f).is_relative_to(warehouse) for f in files)
    assert all(loc.startswith(f"{warehouse}/") for loc in table_locations(warehouse))


def test_duckdb_reads_exactly_the_planned_files_under_a_wildcard_name(tmp_path: Path) -> None:
    """A warehouse copied (cp -r) to "r1" beside "r[1]": read unescaped, "r[1]/..." is a glob matching "r1/..."."""
    warehouse = tmp_path / "r[1]"
    catalog = open_catalog(warehouse, create=True)
    try:
        create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
        ingest_batch(catalog, batch(EVENTS))
        table = catalog.load_table("source.playback")
        files = plan(table, AlwaysTrue())
    finally:
        catalog.engine.dispose()
    shutil.copytree(warehouse, tmp_path / "r1")
    other = batch([dataclasses.replace(e, event_id=f"copy-{e.event_id}") for e in EVENTS])
    for path in (tmp_path / "r1").rglob("*.parquet"):
        pq.write_table(other, path)
    engine = DuckDBEngine()
    try:
        engine.bind_input("source", table, files)
        got = engine.query("SELECT event_id FROM source ORDER BY event_id").column("event_id").to_pylist()
    finally:
        engine.close()
    assert len(files.paths) == 1 and "[" in files.paths[0]
    assert got == ["e1", "e2"]


@pytest.mark.parametrize(
    ("name", "sibling"), [("a*b", "aXb"), ("q?x", "qZx"), ("r[1]", "r1"), ("u[[]v", "u[v"), ("w**", "wxy")]
)
def test_exact_file_matches_only_the_file_named(tmp_path: Path, name: str, sibling: str) -> None:
    """A sibling that the unescaped name matches as a glob is never read; only the named file is."""
    for n in (name, sibling):
        (tmp_path / n).mkdir(parents=True)
        pq.write_table(pa.table({"v": [n]}), tmp_path / n / "f.parquet")
    path = str(tmp_path / name / "f.parquet")
    engine = DuckDBEngine()
    try:
        engine.bind_files("f", FileSet((path,), 1), pa.schema([("v", pa.string())]))
        assert engine.query("SELECT v FROM f").column("v").to_pylist() == [name]
        # Unescaped, DuckDB's glob picks the sibling: what the escaping prevents.
        unescaped = engine.query(f"SELECT v FROM read_parquet(['{path}'])").column("v").to_pylist()
        assert sibling in unescaped
    finally:
        engine.close()


@pytest.fixture
def existing_run(tmp_path: Path) -> Path:
    """A warehouse A/warehouse made by init; the tests run in tmp_path."""
    wh = tmp_path / "A" / "warehouse"
    assert main(["init", "--warehouse", str(wh), "--preset", "tiny"]) == 0
    return wh


def test_dotdot_through_a_missing_directory_is_refused(
    existing_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = listing(tmp_path)
    scenario = (existing_run / "scenario.json").read_text()
    err = bad(["init", "--warehouse", "nope/../A/warehouse", "--preset", "tiny", "--days", "20"], capsys)
    assert "nope does not exist, so '..' after it leads nowhere" in err
    assert listing(tmp_path) == before
    assert (existing_run / "scenario.json").read_text() == scenario


def test_new_check_judges_the_resolved_path(
    existing_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "B").mkdir()
    before = listing(tmp_path)
    err = bad(["run", "--out", "out", "--warehouse", "B/../A/warehouse", "--preset", "tiny"], capsys)
    assert f"--warehouse B/../A/warehouse (that is {existing_run}) is not empty" in err
    assert listing(tmp_path) == before


def test_new_check_follows_symlinks(existing_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "link").symlink_to(existing_run.parent)
    before = listing(tmp_path)
    err = bad(["run", "--out", str(tmp_path / "link" / "warehouse"), "--preset", "tiny"], capsys)
    assert f"(that is {existing_run}) is not empty" in err
    assert listing(tmp_path) == before


def test_state_on_a_lookback_only_warehouse_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wh = tmp_path / "warehouse"
    assert main(["init", "--warehouse", str(wh), "--preset", "tiny", "--strategies", "lookback"]) == 0
    capsys.readouterr()
    err = bad(["state", "--warehouse", str(wh)], capsys)
    assert err == f"ipsbench: error: {wh} runs only lookback: it has no IPS workflow state to show"


@pytest.mark.slow
# pyspark 3.5's DataFrame.collect() drops its result socket without closing it.
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_spark_reads_and_writes_a_warehouse_named_with_uri_characters(
    tmp_path: Path, spark_app: Callable[[Path], SparkSession]
) -> None:
    warehouse = tmp_path / ODD / "warehouse"
    catalog = open_catalog(warehouse, create=True)
    create_tables(catalog, ("ips",), DEFAULT_MERGE_MODE)
    ingest_batch(catalog, batch(EVENTS))
    spark = spark_app(warehouse)  # the worker's Spark application (conftest), on this warehouse's catalog
    assert spark.sql("SELECT count(*) FROM ipsbench.source.playback").collect()[0][0] == 2
    spark.sql("INSERT INTO ipsbench.source.playback SELECT * FROM ipsbench.source.playback")
    # pyiceberg reads back what Spark committed: the data files and metadata Spark wrote are there too.
    table = catalog.load_table("source.playback")
    assert table.scan().to_arrow().num_rows == 4
    files = [task.file.file_path for task in table.scan().plan_files()]
    catalog.engine.dispose()
    assert len(files) == 2 and all(f.removeprefix("file:").startswith(str(warehouse)) for f in files)
    assert listing(tmp_path) == {Path(ODD), Path(ODD) / "warehouse"} | {
        Path(ODD) / "warehouse" / p for p in listing(warehouse)
    }
    assert os.path.isfile(warehouse / "catalog.db")
