"""The distributed engine: the same stage SQL on Spark 3.5 with Iceberg, native writes.

Inputs are read by table name through the shared ``ipsbench`` catalog (the
ICDC table included), with the same partition predicate the DuckDB engine
applies to its planned file list; writes are Spark's own: ``writeTo().overwrite``
(INSERT OVERWRITE of exactly the given partitions), insert-only ``MERGE INTO``
(an APPEND of the rows whose key is missing) and ``MERGE INTO ... WHEN
MATCHED UPDATE WHEN NOT MATCHED INSERT``. With ``write.merge.mode =
merge-on-read`` on a target, that last MERGE writes delete files and the
changed rows instead of rewriting whole files.

Figures (rows, bytes, files) still come from Iceberg metadata: what the scan
plans and what the commit's snapshot summary says it added.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from pyiceberg.table import Table

from pipelines.catalog import CATALOG_NAME
from pipelines.engine import Inputs, Key, in_dates
from pipelines.iceberg_io import FileSet, added_since
from pipelines.recorder import FaultHook, Recorder
from pipelines.spark_session import spark_session


def identifier(table: Table) -> str:
    return ".".join((CATALOG_NAME, *table.name()[-2:]))


class SparkEngine:
    """Runs the stage SQL on Spark (``local[*]`` or a ``spark://`` cluster)."""

    name = "spark"

    def __init__(self, warehouse: Path, master: str = "local[*]") -> None:
        self.spark: Any = spark_session(warehouse, master)
        self.spark.conf.set("spark.sql.sources.partitionOverwriteMode", "dynamic")
        self._cached: dict[str, Any] = {}

    def _forget(self, name: str) -> None:
        df = self._cached.pop(name, None)
        if df is not None:
            df.unpersist()

    def bind_input(self, name: str, table: Table, files: FileSet, where: str = "") -> None:
        self._forget(name)
        df = self.spark.table(identifier(table))
        (df.where(where) if where else df).createOrReplaceTempView(name)

    def bind_sql(self, name: str, sql: str) -> None:
        self._forget(name)
        self.spark.sql(sql).createOrReplaceTempView(name)

    def materialize(self, name: str, sql: str) -> int:
        self._forget(name)
        df = self.spark.sql(sql).cache()
        rows = int(df.count())
        df.createOrReplaceTempView(name)
        self._cached[name] = df
        return rows

    def scalar(self, sql: str) -> int:
        row = self.spark.sql(sql).collect()[0]
        return int(row[0]) if row[0] is not None else 0

    def _commit(self, target: Table, statement: Callable[[], object], partitions: int, recorder: Recorder) -> None:
        """Run a write and record what its commit added, from the new snapshot summaries."""
        before = target.metadata.current_snapshot_id
        with recorder.phase("write"):
            statement()
        target.refresh()
        if target.metadata.current_snapshot_id != before:
            stats = added_since(target, before)
            recorder.wrote(stats.rows, stats.bytes, stats.files, stats.commits, partitions)

    def replace_partitions(self, target: Table, sql: str, source: Inputs, recorder: Recorder, fault: FaultHook) -> None:
        # Spark plans the whole input at once and spills by itself: no pieces needed.
        dates = source.dates
        if not dates:
            return
        from pyspark.sql.functions import expr

        source.bind(self)
        df = self.spark.sql(sql)
        fault("before_write")
        self._commit(
            target,
            lambda: df.writeTo(identifier(target)).overwrite(expr(in_dates("event_date", dates))),
            len(dates),
            recorder,
        )

    def _merge(
        self,
        target: Table,
        sql: str,
        keys: Sequence[str],
        dates: Sequence[date],
        actions: str,
        recorder: Recorder,
        fault: FaultHook,
    ) -> None:
        """MERGE INTO target USING (sql) ON keys, the target pruned to ``dates``."""
        self.bind_sql("merge_source", sql)
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        statement = (
            f"MERGE INTO {identifier(target)} t USING merge_source s "
            f"ON {on} AND {in_dates('t.event_date', dates)} {actions}"
        )
        fault("before_write")
        self._commit(target, lambda: self.spark.sql(statement), len(dates), recorder)

    def insert_missing(
        self,
        target: Table,
        sql: str,
        key: Key,
        dates: Sequence[date],
        existing: FileSet,
        recorder: Recorder,
        fault: FaultHook,
    ) -> None:
        # Spark joins on both columns at once: the narrow one spares nothing here, but is equally exact.
        keys = (key.name,) if key.probe is None else (key.probe, key.name)
        self._merge(target, sql, keys, dates, "WHEN NOT MATCHED THEN INSERT *", recorder, fault)

    def merge_by_key(
        self,
        target: Table,
        sql: str,
        keys: Sequence[str],
        dates: Sequence[date],
        old: FileSet,
        recorder: Recorder,
        fault: FaultHook,
    ) -> None:
        actions = "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *"
        self._merge(target, sql, keys, dates, actions, recorder, fault)

    def close(self) -> None:
        for name in list(self._cached):
            self._forget(name)
