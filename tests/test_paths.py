"""Paths as users type them: any character works or is refused up front, "new" is judged on the
resolved path, and nothing is written outside ``--out``/``--warehouse``."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from datagen.ingest import ingest_batch
from pipelines.catalog import create_tables, open_catalog
from tests.events import Event, at, batch

# Characters a URI would have split on or encoded ('#', '?' aside: see GLOB below),
# and the hive-looking "name=value" of a sweep's folders.
ODD = "r#1 %41 'q=,:@ x"
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
def test_tiny_run_under_a_path_with_odd_characters_writes_only_there(tmp_path: Path) -> None:
    before = listing(tmp_path)
    out = tmp_path / "runs" / ODD
    done = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", *TINY_3_DAYS, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["correctness"]["ips"]["equal_to_oracle"]
    # Every new file is under --out (parents of --out aside, which the run creates).
    new = {p for p in listing(tmp_path) - before if (tmp_path / p) not in out.parents}
    assert new and all((tmp_path / p).is_relative_to(out) for p in new)
    # The catalog points into the warehouse, with the name as given (not cut at '#', not %-encoded).
    locations = table_locations(out / "warehouse")
    assert locations and all(loc.startswith(f"{out.resolve()}/warehouse/") for loc in locations)


def test_catalog_and_metadata_stay_in_a_warehouse_named_with_uri_characters(tmp_path: Path) -> None:
    """open_catalog itself takes '#' and '?' (the CLI refuses '?' for DuckDB's sake, not the catalog's)."""
    warehouse = tmp_path / "w#1 ?x %20"
    catalog = open_catalog(warehouse, create=True)
    try:
        create_tables(catalog, ("ips",))
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


@pytest.mark.parametrize("char", ["?", "[", "*"])
def test_glob_characters_are_refused_naming_the_character(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], char: str
) -> None:
    out = tmp_path / f"r#1 {char}x]"
    err = bad(["run", "--out", str(out), "--preset", "tiny"], capsys)
    assert f"holds {char!r}, which DuckDB reads as a wildcard" in err
    assert listing(tmp_path) == set()


def test_glob_character_in_an_existing_warehouse_is_refused_by_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A warehouse copied (cp -r) to a wildcard name: DuckDB would read the original's files."""
    copy = tmp_path / "run[1]"
    copy.mkdir()
    err = bad(["process", "--warehouse", str(copy), "--strategy", "ips", "--day", "0"], capsys)
    assert "holds '['" in err
    assert listing(tmp_path) == {Path("run[1]")}


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
def test_spark_reads_and_writes_a_warehouse_named_with_uri_characters(tmp_path: Path) -> None:
    from pipelines.spark_session import spark_session

    warehouse = tmp_path / ODD / "warehouse"
    catalog = open_catalog(warehouse, create=True)
    create_tables(catalog, ("ips",))
    ingest_batch(catalog, batch(EVENTS))
    spark = spark_session(warehouse, master="local[1]")
    try:
        assert spark.sql("SELECT count(*) FROM ipsbench.source.playback").collect()[0][0] == 2
        spark.sql("INSERT INTO ipsbench.source.playback SELECT * FROM ipsbench.source.playback")
    finally:
        spark.stop()
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
