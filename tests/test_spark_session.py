"""Spark's Iceberg JDBC catalog reads and writes the warehouse pyiceberg made, by name."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pyiceberg.catalog.sql import SqlCatalog

from bench.scenario import DEFAULT_MERGE_MODE
from datagen.ingest import ingest_batch
from pipelines.catalog import CatalogMissing, create_tables, open_catalog
from pipelines.engine import DuckDBEngine
from pipelines.pipeline import stage
from pipelines.spark_session import SparkUnavailable, jdbc_catalog, jdbc_driver_jar, spark_conf
from tests.events import Event, at, batch

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

# pyspark 3.5's DataFrame.collect() drops its result socket without closing it
# (pyspark/rdd.py _load_from_socket); CPython frees it inside the call.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")

EVENTS = [
    Event("e1", 1, 10, "US", "tv", at(0, 1), 100, at(0, 2)),
    Event("e2", 2, 11, "BR", "web", at(0, 5), 20_000, at(0, 6)),
    Event("e3", 1, None, "US", "mobile", at(1, 3), 50, at(1, 4)),  # no title: dropped by stage 1
    Event("e4", 3, 12, "GB", "tv", at(1, 8), 0, at(1, 9)),  # no view time: dropped by stage 1
]
RESENT = Event("e1", 1, 10, "US", "tv", at(0, 1), 100, at(2, 23))  # the same payload, later


def _micros(e: Event) -> int:
    return int(e.event_ts.timestamp()) * 1_000_000 + e.event_ts.microsecond


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("spark") / "warehouse"
    cat = open_catalog(path, create=True)
    create_tables(cat, ("ips",), DEFAULT_MERGE_MODE)
    ingest_batch(cat, batch(EVENTS[:2]))
    ingest_batch(cat, batch([*EVENTS[2:], RESENT]))
    cat.engine.dispose()
    yield path


@pytest.fixture(scope="module")
def catalog(warehouse: Path) -> Iterator[SqlCatalog]:
    cat = open_catalog(warehouse)
    yield cat
    cat.engine.dispose()


@pytest.fixture(scope="module")
def spark(warehouse: Path, spark_app: Callable[[Path], SparkSession]) -> SparkSession:
    """A session of the worker's Spark application (conftest: one JVM per worker) on this module's warehouse."""
    return spark_app(warehouse)


def _rows(spark: SparkSession, sql: str) -> list[tuple[Any, ...]]:
    return sorted(tuple(r) for r in spark.sql(sql).collect())


@pytest.mark.slow
def test_spark_reads_the_source_table_by_name(spark: SparkSession) -> None:
    got = _rows(
        spark,
        "SELECT event_id, account_id, title_id, country, device, unix_micros(event_ts), view_seconds "
        "FROM ipsbench.source.playback",
    )
    want = sorted(
        (e.event_id, e.account_id, e.title_id, e.country, e.device, _micros(e), e.view_seconds)
        for e in [*EVENTS, RESENT]
    )
    assert got == want


@pytest.mark.slow
def test_stage_sql_on_spark_equals_duckdb(spark: SparkSession, catalog: SqlCatalog) -> None:
    sql = stage("playback_daily").statement()
    spark.table("ipsbench.source.playback").createOrReplaceTempView("events")
    columns = "event_id, event_key, CAST(event_date AS {}), {}(event_ts), view_seconds"
    got = _rows(spark, f"SELECT {columns.format('STRING', 'unix_micros')} FROM ({sql})")
    engine = DuckDBEngine()  # with the engine's conv() macro, which the event_key expression uses
    try:
        engine.bind_arrow("events", catalog.load_table("source.playback").scan().to_arrow())
        rows = engine.query(f"SELECT {columns.format('VARCHAR', 'epoch_us')} FROM ({sql})").to_pylist()
    finally:
        engine.close()
    assert got == sorted(tuple(r.values()) for r in rows)
    # The narrow key: the first 60 bits of the id's MD5, the same on both engines.
    assert [r[1] for r in got] == [int(hashlib.md5(r[0].encode()).hexdigest()[:15], 16) for r in got]
    assert [r[0] for r in got] == ["e1", "e2"]
    assert got[1][4] == 14_400  # view_seconds capped


@pytest.mark.slow
def test_spark_merge_is_visible_to_pyiceberg_and_pyiceberg_can_still_commit(
    spark: SparkSession, catalog: SqlCatalog
) -> None:
    spark.table("ipsbench.source.playback").createOrReplaceTempView("events")
    sql = stage("playback_daily").statement()
    merge = f"MERGE INTO ipsbench.ips.playback_daily t USING ({sql}) s ON t.event_id = s.event_id "
    spark.sql(merge + "WHEN NOT MATCHED THEN INSERT *")
    table = catalog.load_table("ips.playback_daily")
    snapshot = table.current_snapshot()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary.operation.value == "append"
    assert snapshot.summary["engine-name"] == "spark"
    assert sorted(table.scan().to_arrow().column("event_id").to_pylist()) == ["e1", "e2"]

    # Spark's catalog must hold no sqlite lock: pyiceberg commits, and Spark sees it at once.
    late = Event("e5", 4, 13, "DE", "web", at(0, 9), 30, at(3, 1))
    ingest_batch(catalog, batch([late]))
    spark.sql(merge + "WHEN NOT MATCHED THEN INSERT *")
    ids = [r[0] for r in _rows(spark, "SELECT event_id FROM ipsbench.ips.playback_daily")]
    assert ids == ["e1", "e2", "e5"]


def test_missing_catalog_and_driver_are_named(tmp_path: Path) -> None:
    with pytest.raises(CatalogMissing):
        spark_conf(tmp_path / "nowhere")
    with pytest.raises(SparkUnavailable, match="jdbc:sqlite: or jdbc:postgresql:"):
        jdbc_driver_jar("jdbc:mysql://db/ipsbench")


def test_spark_opens_the_catalog_database_pyiceberg_opens(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    open_catalog(wh, create=True).engine.dispose()
    try:
        conf = spark_conf(wh)  # no JVM: only the jars must be installed
    except SparkUnavailable as e:
        pytest.skip(str(e))
    assert conf["spark.sql.catalog.ipsbench.uri"] == f"jdbc:sqlite:{wh.resolve()}/catalog.db"


def test_jdbc_catalog_translates_sqlalchemy_urls() -> None:
    """IPSBENCH_CATALOG_URI reaches Spark through this (tests/test_postgres_catalog.py runs it for real)."""
    assert jdbc_catalog("sqlite:////w/catalog.db") == ("jdbc:sqlite:/w/catalog.db", {})
    assert jdbc_catalog("postgresql+psycopg2://bench:s%40cret@db.example:6543/ipsbench") == (
        "jdbc:postgresql://db.example:6543/ipsbench",
        {"user": "bench", "password": "s@cret"},
    )
    assert jdbc_catalog("postgresql://127.0.0.1/ipsbench?sslmode=require") == (
        "jdbc:postgresql://127.0.0.1:5432/ipsbench",
        {"sslmode": "require"},
    )
    with pytest.raises(SparkUnavailable, match="expected sqlite or postgresql"):
        jdbc_catalog("mysql://db/ipsbench")


@pytest.mark.slow
def test_a_second_warehouse_gets_its_own_catalog(spark: SparkSession, tmp_path: Path) -> None:
    from pipelines.spark_session import spark_session

    other = tmp_path / "other"
    cat = open_catalog(other, create=True)
    create_tables(cat, (), DEFAULT_MERGE_MODE)
    ingest_batch(cat, batch([Event("x1", 9, 1, "FR", "tv", at(0, 0), 5, at(0, 1))]))
    cat.engine.dispose()
    session = spark_session(other, master="local[*]")  # the worker's application, another catalog
    assert session is not spark
    assert [r[0] for r in session.sql("SELECT event_id FROM ipsbench.source.playback").collect()] == ["x1"]
    # the first session still reads its own warehouse
    assert "x1" not in [r[0] for r in spark.sql("SELECT event_id FROM ipsbench.source.playback").collect()]
    with pytest.raises(ValueError, match="already running"):
        spark_session(other, master="local[1]")
