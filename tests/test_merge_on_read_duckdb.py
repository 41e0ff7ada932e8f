"""Merge-on-read on the embedded default: the DuckDB engine's merges by key write position deletes.

Every reader applies them (the DuckDB engine's scans, the equality check, pyiceberg's scan,
Spark); IpCapture reads a row-level snapshot as the changed rows; compaction folds the deletes;
a crash before the commit leaves nothing visible.
"""

from __future__ import annotations

import uuid
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFileContent, ManifestContent

from bench.runner import check, simulate
from bench.scenario import BadScenario, from_preset
from pipelines import row_level
from pipelines.catalog import create_tables, open_catalog
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import EPOCH, live_files, plan
from pipelines.ips.capture import changed_files
from pipelines.maintenance import compact
from pipelines.pipeline import PIPELINE, STAGES
from pipelines.recorder import NullRecorder
from tests.events import Event, at, batch, run_ips_day

# A few days: late rows reach earlier dates from day 1 on, so the merges by key replace rows.
# Maintenance after day 2 (0-based): days 3 and 4 write deletes again.
FEW = {"days": 5, "warmup_days": 1, "strategies": ("ips",), "maintenance_every_days": 3}
MERGED = ("playback_daily_agg", "account_cumulative")  # the stages that merge by key
# `tiny`'s aggregate partitions hold ~10-1,500 rows: below this many rows a merge rewrites a
# partition whole, above it writes position deletes, so a `tiny` run does both.
TINY_WHOLE_BELOW = 200


def sorted_rows(rows: pa.Table, keys: tuple[str, ...]) -> pa.Table:
    return rows.sort_by([(k, "ascending") for k in keys])


def duckdb_read(catalog: Any, name: str) -> pa.Table:
    table = catalog.load_table(name)
    engine = DuckDBEngine()
    engine.bind_files("t", plan(table, AlwaysTrue()), schema_to_pyarrow(table.schema(), include_field_ids=False))
    rows = engine.query("SELECT * FROM t")
    engine.close()
    return rows


def delete_files(catalog: Any, name: str) -> list[Any]:
    return live_files(catalog.load_table(name), None, ManifestContent.DELETES)


@pytest.fixture(scope="module")
def mor_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, dict[int, dict[str, int]]]:
    """A tiny merge-on-read run, and the live delete files of the merged targets after each day."""
    scenario = from_preset("tiny", merge_mode="merge-on-read", **FEW)
    warehouse = tmp_path_factory.mktemp("mor") / "wh"
    deletes: dict[int, dict[str, int]] = {}

    def count_deletes(day: int) -> None:
        catalog = open_catalog(warehouse)
        deletes[day] = {m: len(delete_files(catalog, f"ips.{m}")) for m in MERGED}
        catalog.engine.dispose()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(DuckDBEngine, "WHOLE_BELOW_ROWS", TINY_WHOLE_BELOW)
        run = simulate(scenario, warehouse, progress=False, on_day=count_deletes)
    return warehouse, run, deletes


def rewrote_whole(catalog: Any, name: str) -> bool:
    """Whether a merge by key written merge-on-read into ``name`` rewrote a partition whole (removed files)."""
    return any(
        s.summary.get(row_level.ROW_DELTA_PROPERTY) == row_level.MERGE_BY_KEY
        and int(s.summary.get("deleted-data-files") or 0) > 0
        for s in catalog.load_table(name).metadata.snapshots
        if s.summary is not None
    )


def test_merge_on_read_is_accepted_for_duckdb_and_bad_modes_are_not() -> None:
    assert from_preset("tiny", merge_mode="merge-on-read").engine == "duckdb"
    with pytest.raises(BadScenario, match="merge mode must be one of"):
        from_preset("tiny", merge_mode="merge-on-write")


def test_duckdb_merges_write_position_deletes_and_every_reader_equals_the_oracle(mor_run) -> None:
    warehouse, run, _ = mor_run
    assert run.verdicts["ips"].equal_to_oracle, run.verdicts["ips"].per_stage
    catalog = open_catalog(warehouse)
    for merged in MERGED:
        name = f"ips.{merged}"
        snaps = catalog.load_table(name).metadata.snapshots
        marks = [s.summary.get(row_level.ROW_DELTA_PROPERTY) for s in snaps if s.summary is not None]
        assert row_level.MERGE_BY_KEY in marks, name
        assert delete_files(catalog, name), name
        assert rewrote_whole(catalog, name), name  # and small partitions rewritten whole
    for stage in PIPELINE:
        name = f"ips.{stage.name}"
        by_pyiceberg = sorted_rows(catalog.load_table(name).scan().to_arrow(), stage.key)
        by_duckdb = sorted_rows(duckdb_read(catalog, name), stage.key)
        assert by_duckdb.equals(by_pyiceberg.cast(by_duckdb.schema)), name
        # Every live row once per key: no replaced row survived a delete.
        keys = by_duckdb.select(list(stage.key)).to_pylist()
        assert len({tuple(k.values()) for k in keys}) == len(keys), name
    # The equality check (the DuckDB engine, deletes applied) agrees, and the pyiceberg reads above equal it.
    scenario = from_preset("tiny", merge_mode="merge-on-read", **FEW)
    assert check(catalog, scenario)["ips"].equal_to_oracle


def test_maintenance_folds_the_merged_targets_deletes(mor_run) -> None:
    # IPS's compaction covers the filter and forward targets too: right after the maintenance
    # (day 2) neither holds a live delete file; before it and after it, merges had written some.
    _, run, deletes = mor_run
    assert [r["day"] for r in run.rows if r["stage"] == "compaction" and r["strategy"] == "ips"] == [2]
    for merged in MERGED:
        assert deletes[1][merged] > 0 and deletes[2][merged] == 0 and deletes[4][merged] > 0, (merged, deletes)
    assert run.verdicts["ips"].equal_to_oracle


def test_merge_on_read_writes_less_than_copy_on_write_and_the_same_rows(mor_run, tmp_path: Path) -> None:
    warehouse, mor, _ = mor_run
    cow = simulate(from_preset("tiny", merge_mode="copy-on-write", **FEW), tmp_path / "cow", progress=False)
    assert cow.verdicts["ips"].equal_to_oracle
    catalog_mor, catalog_cow = open_catalog(warehouse), open_catalog(tmp_path / "cow")
    for stage in PIPELINE:
        name = f"ips.{stage.name}"
        a = sorted_rows(catalog_mor.load_table(name).scan().to_arrow(), stage.key)
        b = sorted_rows(catalog_cow.load_table(name).scan().to_arrow(), stage.key)
        assert a.equals(b), name

    def written(run: Any, stage: str) -> int:
        return sum(r["bytes_written"] for r in run.rows if r["strategy"] == "ips" and r["stage"] == stage)

    for merged in MERGED:
        assert 0 < written(mor, merged) < written(cow, merged), merged


def agg_rows(days: list[date], accounts: range, seconds: int) -> pa.Table:
    n = len(days) * len(accounts)
    return pa.table(
        {
            "event_date": pa.array([d for d in days for _ in accounts], pa.date32()),
            "account_id": pa.array([a for _ in days for a in accounts], pa.int64()),
            "total_view_seconds": pa.array([seconds] * n, pa.int64()),
            "plays": pa.array([1] * n, pa.int64()),
            "distinct_titles": pa.array([1] * n, pa.int64()),
        }
    )


AGG = "ips.playback_daily_agg"
KEY = ("event_date", "account_id")


def merge(catalog: Any, rows: pa.Table, days: list[date], fault: Any = None, whole_below: int = 0) -> None:
    """A merge by key of ``rows`` into the (merge-on-read) aggregate table, through the DuckDB engine.

    Partitions of fewer than ``whole_below`` rows are rewritten whole (default: none, the tables here are small).
    """
    from pipelines.iceberg_io import plan_dates

    table = catalog.load_table(AGG)
    engine = DuckDBEngine()
    engine.WHOLE_BELOW_ROWS = whole_below
    engine.bind_arrow("incoming", rows)
    engine.merge_by_key(
        table,
        "SELECT * FROM incoming",
        KEY,
        days,
        plan_dates(table, days),
        NullRecorder(),
        fault or (lambda p: None),
    )
    engine.close()


@pytest.fixture
def mor_catalog(tmp_path: Path) -> Any:
    catalog = open_catalog(tmp_path / "wh", create=True)
    create_tables(catalog, ("ips",), "merge-on-read")
    yield catalog
    catalog.engine.dispose()


DAYS = [date(2026, 1, 1), date(2026, 1, 2)]


def seeded(catalog: Any) -> int:
    """Two partitions of six accounts appended; returns that snapshot's id."""
    table = catalog.load_table(AGG)
    from pipelines.iceberg_io import append_files

    append_files(table, agg_rows(DAYS, range(6), 1))
    return catalog.load_table(AGG).metadata.current_snapshot_id


def test_capture_takes_a_row_delta_as_its_changed_rows_not_whole_partitions(mor_catalog) -> None:
    watermark = seeded(mor_catalog)
    merge(mor_catalog, agg_rows(DAYS[:1], range(2, 4), 50), DAYS)
    walk = changed_files(mor_catalog.load_table(AGG), watermark)
    assert walk.rewritten_days == set()
    assert [s for _, s in walk.non_append] == []
    assert {f.content for f in walk.appended} == {DataFileContent.DATA}
    assert sum(f.record_count for f in walk.appended) == 2  # exactly the two changed keys
    # Deletes that name a file captured in the same range make its partition rewritten:
    # the ICDC table would still show the rows they delete.
    merge(mor_catalog, agg_rows(DAYS[:1], range(3, 4), 60), DAYS)
    walk = changed_files(mor_catalog.load_table(AGG), watermark)
    assert walk.rewritten_days == {(DAYS[0] - EPOCH).days}
    # A delete not marked as a merge by key (e.g. another writer's) rewrites its partitions.
    table = mor_catalog.load_table(AGG)
    watermark = table.metadata.current_snapshot_id
    [day1] = [f for f in live_files(table, None, ManifestContent.DATA) if f.partition[0] == (DAYS[1] - EPOCH).days]
    deletes = row_level.write_position_deletes(
        table, pa.table({"file_path": [day1.file_path], "pos": [0]}), [day1], uuid.uuid4()
    )
    row_level.commit_row_delta(table, deletes)
    walk = changed_files(mor_catalog.load_table(AGG), watermark)
    assert walk.rewritten_days == {(DAYS[1] - EPOCH).days} and walk.appended == []


def files_of(catalog: Any, day: date, content: ManifestContent) -> list[Any]:
    return [f for f in live_files(catalog.load_table(AGG), None, content) if f.partition[0] == (day - EPOCH).days]


def test_a_small_partition_is_rewritten_whole_and_capture_still_takes_changed_rows(mor_catalog) -> None:
    small, large = DAYS
    table = mor_catalog.load_table(AGG)
    from pipelines.iceberg_io import append_files

    append_files(table, pa.concat_tables([agg_rows([small], range(4), 1), agg_rows([large], range(20), 1)]))
    watermark = mor_catalog.load_table(AGG).metadata.current_snapshot_id
    # Partitions of fewer than 10 rows are rewritten whole: the 4-row one, not the 20-row one.
    merge(mor_catalog, agg_rows(DAYS, range(2, 6), 50), DAYS, whole_below=10)
    expected = sorted_rows(
        pa.concat_tables(
            [
                agg_rows([small], range(2), 1),
                agg_rows([large], range(2), 1),
                agg_rows(DAYS, range(2, 6), 50),
                agg_rows([large], range(6, 20), 1),
            ]
        ),
        KEY,
    )
    rows = sorted_rows(mor_catalog.load_table(AGG).scan().to_arrow(), KEY)
    assert rows.equals(expected.cast(rows.schema))
    by_duckdb = sorted_rows(duckdb_read(mor_catalog, AGG), KEY)
    assert by_duckdb.equals(expected.cast(by_duckdb.schema))
    [rewritten] = files_of(mor_catalog, small, ManifestContent.DATA)
    assert rewritten.record_count == 6 and files_of(mor_catalog, small, ManifestContent.DELETES) == []
    assert len(files_of(mor_catalog, large, ManifestContent.DATA)) == 2
    assert [d.record_count for d in files_of(mor_catalog, large, ManifestContent.DELETES)] == [4]
    # IpCapture: still a row delta. The small partition's captured rows are its whole new file
    # (the rows it removed are among them), the large one's its 4 changed rows; nothing rewritten.
    walk = changed_files(mor_catalog.load_table(AGG), watermark)
    assert walk.rewritten_days == set() and walk.non_append == []
    assert sorted(f.record_count for f in walk.appended) == [4, 6]
    # A second whole rewrite in the same range: the file captured first is removed, the new one taken.
    merge(mor_catalog, agg_rows([small], range(5, 7), 60), [small], whole_below=10)
    walk = changed_files(mor_catalog.load_table(AGG), watermark)
    assert rewritten.file_path not in {f.file_path for f in walk.appended}
    assert sorted(f.record_count for f in walk.appended) == [4, 7] and walk.rewritten_days == set()


def test_a_merge_into_empty_partitions_adds_rows_and_no_delete_file(mor_catalog) -> None:
    merge(mor_catalog, agg_rows(DAYS, range(3), 5), DAYS)
    rows = sorted_rows(mor_catalog.load_table(AGG).scan().to_arrow(), KEY)
    assert rows.equals(sorted_rows(agg_rows(DAYS, range(3), 5), KEY).cast(rows.schema))
    assert delete_files(mor_catalog, AGG) == []


def test_compaction_folds_the_deletes_and_leaves_none(mor_catalog) -> None:
    seeded(mor_catalog)
    merge(mor_catalog, agg_rows(DAYS, range(1, 3), 70), DAYS)
    before = sorted_rows(mor_catalog.load_table(AGG).scan().to_arrow(), KEY)
    assert len(delete_files(mor_catalog, AGG)) == 2
    watermark = mor_catalog.load_table(AGG).metadata.current_snapshot_id
    # Two files per partition: below min_files, yet the delete files make them fragmented.
    removed, written = compact(mor_catalog.load_table(AGG), min_files=4)
    assert (removed, written) == (6, 2)  # 2 partitions x (2 data + 1 delete file) -> one file each
    table = mor_catalog.load_table(AGG)
    assert delete_files(mor_catalog, AGG) == []
    assert sorted_rows(table.scan().to_arrow(), KEY).equals(before)
    assert sorted_rows(duckdb_read(mor_catalog, AGG), KEY).equals(before.cast(duckdb_read(mor_catalog, AGG).schema))
    # No live delete file names a file that is gone, and IpCapture sees a compaction: nothing changed.
    walk = changed_files(table, watermark)
    assert walk.appended == [] and walk.rewritten_days == set() and walk.non_append[0][1] == "replace"


@pytest.mark.parametrize("point", ["before_write", "after_delete_files", "before_commit"])
def test_a_crash_between_writing_delete_files_and_committing_leaves_nothing_visible(mor_catalog, point: str) -> None:
    class Crash(Exception):
        pass

    def crash(p: str) -> None:
        if p == point:
            raise Crash(p)

    seeded(mor_catalog)
    before_id = mor_catalog.load_table(AGG).metadata.current_snapshot_id
    before = sorted_rows(mor_catalog.load_table(AGG).scan().to_arrow(), KEY)
    with pytest.raises(Crash):
        merge(mor_catalog, agg_rows(DAYS, range(2), 80), DAYS, crash)
    table = mor_catalog.load_table(AGG)
    assert table.metadata.current_snapshot_id == before_id
    assert delete_files(mor_catalog, AGG) == []
    assert sorted_rows(table.scan().to_arrow(), KEY).equals(before)
    assert sorted_rows(duckdb_read(mor_catalog, AGG), KEY).equals(before.cast(duckdb_read(mor_catalog, AGG).schema))
    # The retry writes the merge once.
    merge(mor_catalog, agg_rows(DAYS, range(2), 80), DAYS)
    after = sorted_rows(mor_catalog.load_table(AGG).scan().to_arrow(), KEY)
    assert after.num_rows == before.num_rows
    assert sorted(r["total_view_seconds"] for r in after.to_pylist()) == [1] * 8 + [80] * 4


def test_ips_days_with_merge_on_read_after_a_crash_equal_the_oracle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The workflow's own fault points, on merge-on-read targets: retry, then a further day, stay exact."""
    monkeypatch.setattr(DuckDBEngine, "WHOLE_BELOW_ROWS", 0)  # a few rows a partition: position deletes
    from datagen.ingest import ingest_batch
    from pipelines.context import StageContext
    from pipelines.ips import workflow

    catalog = open_catalog(tmp_path / "wh", create=True)
    create_tables(catalog, ("ips",), "merge-on-read")
    scenario = from_preset("tiny", lookback_days=3, strategies=("ips",), max_lateness_days=20)
    day0 = [Event(f"a{i}", i % 3, i % 5, "US", "tv", at(0, i % 24), 100 + i, at(0, 23)) for i in range(20)]
    day1 = [Event(f"b{i}", i % 3, i % 5, "BR", "tv", at(1 - i % 3, 5), 50 + i, at(1, 23)) for i in range(20)]
    day2 = [Event(f"c{i}", i % 4, i % 7, "US", "web", at(2 - i % 5, 7), 10 + i, at(2, 23)) for i in range(10)]
    run_ips_day(catalog, batch(day0))
    ingest_batch(catalog, batch(day1))
    engine = DuckDBEngine()

    def crash(p: str) -> None:
        if p == "before_commit":
            raise RuntimeError(p)

    crashed = []
    for s in STAGES:
        try:
            workflow.run_stage(StageContext(catalog, engine, fault=crash), s)
        except RuntimeError:
            crashed.append(s)
    assert crashed == list(MERGED)
    for s in STAGES:
        workflow.run_stage(StageContext(catalog, engine), s)
    engine.close()
    assert check(catalog, scenario)["ips"].equal_to_oracle
    run_ips_day(catalog, batch(day2))
    assert check(catalog, scenario)["ips"].equal_to_oracle
    assert delete_files(catalog, AGG)


# --- Spark reads and writes the same tables (a JVM: `make test` only) ------------------------


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_spark_reads_duckdb_merge_on_read_tables_as_the_oracle(mor_run) -> None:
    from pipelines.spark_engine import identifier
    from pipelines.spark_session import spark_session

    warehouse, _, _ = mor_run
    catalog = open_catalog(warehouse)
    spark = spark_session(warehouse)
    for stage in PIPELINE:
        name = f"ips.{stage.name}"
        table = catalog.load_table(name)
        expected = sorted_rows(duckdb_read(catalog, name), stage.key)
        by_spark = pa.Table.from_pylist(
            [r.asDict() for r in spark.table(identifier(table)).collect()], schema=expected.schema
        )
        assert sorted_rows(by_spark, stage.key).equals(expected), name


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")
def test_days_alternate_between_duckdb_and_spark_merge_on_read_and_stay_exact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench.cli import main

    monkeypatch.setattr(DuckDBEngine, "WHOLE_BELOW_ROWS", TINY_WHOLE_BELOW)

    wh = tmp_path / "wh"
    init = ["init", "--warehouse", str(wh), "--preset", "tiny", "--days", "4", "--warmup-days", "1"]
    assert main([*init, "--merge-mode", "merge-on-read", "--strategies", "ips"]) == 0
    for day, engine in enumerate(("duckdb", "spark", "duckdb", "spark")):
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        args = ["process", "--warehouse", str(wh), "--strategy", "ips", "--day", str(day), "--engine", engine]
        assert main(args) == 0
    catalog = open_catalog(wh)
    writers = {
        "spark" if s.summary.get("engine-name") == "spark" else s.summary.get(row_level.ROW_DELTA_PROPERTY)
        for s in catalog.load_table(AGG).metadata.snapshots
        if s.summary is not None and int(s.summary.get("added-position-deletes") or 0) > 0
    }
    assert writers == {"spark", row_level.MERGE_BY_KEY}  # both engines wrote position deletes
    assert main(["check", "--warehouse", str(wh)]) == 0
    for stage in PIPELINE:
        name = f"ips.{stage.name}"
        a = sorted_rows(duckdb_read(catalog, name), stage.key)
        assert sorted_rows(catalog.load_table(name).scan().to_arrow(), stage.key).cast(a.schema).equals(a), name
