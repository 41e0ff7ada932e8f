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

from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyiceberg.table import Table

from pipelines.catalog import CATALOG_NAME
from pipelines.engine import PartitionedInput, in_dates
from pipelines.iceberg_io import FileSet, added_since
from pipelines.spark_session import spark_session

if TYPE_CHECKING:
    from pipelines.context import StageContext

MERGE_MODES = ("copy-on-write", "merge-on-read")


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

    def _commit(self, ctx: StageContext, target: Table, statement: Any, partitions: int) -> None:
        """Run a write and record what its commit added, from the new snapshot summaries."""
        before = target.metadata.current_snapshot_id
        with ctx.recorder.phase("write"):
            statement()
        target.refresh()
        if target.metadata.current_snapshot_id != before:
            stats = added_since(target, before)
            ctx.recorder.wrote(stats.rows, stats.bytes, stats.files, stats.commits, partitions)

    def replace_partitions(
        self,
        ctx: StageContext,
        target: Table,
        sql: str,
        dates: Sequence[date],
        pieces: PartitionedInput | None = None,
    ) -> None:
        # Spark plans the whole input at once and spills by itself: ``pieces`` is not needed.
        if not dates:
            return
        from pyspark.sql.functions import expr

        df = self.spark.sql(sql)
        ctx.fault("before_write")
        self._commit(
            ctx,
            target,
            lambda: df.writeTo(identifier(target)).overwrite(expr(in_dates("event_date", dates))),
            len(dates),
        )

    def _merge(
        self, ctx: StageContext, target: Table, sql: str, keys: Sequence[str], dates: Sequence[date], actions: str
    ) -> None:
        """MERGE INTO target USING (sql) ON keys, the target pruned to ``dates``."""
        self.bind_sql("merge_source", sql)
        on = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        statement = (
            f"MERGE INTO {identifier(target)} t USING merge_source s "
            f"ON {on} AND {in_dates('t.event_date', dates)} {actions}"
        )
        ctx.fault("before_write")
        self._commit(ctx, target, lambda: self.spark.sql(statement), len(dates))

    def insert_missing(
        self, ctx: StageContext, target: Table, sql: str, key: str, dates: Sequence[date], existing: FileSet
    ) -> None:
        self._merge(ctx, target, sql, (key,), dates, "WHEN NOT MATCHED THEN INSERT *")

    def merge_by_key(
        self, ctx: StageContext, target: Table, sql: str, keys: Sequence[str], dates: Sequence[date], old: FileSet
    ) -> None:
        self._merge(ctx, target, sql, keys, dates, "WHEN MATCHED THEN UPDATE SET * WHEN NOT MATCHED THEN INSERT *")

    def close(self) -> None:
        for name in list(self._cached):
            self._forget(name)
