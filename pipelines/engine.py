"""The embedded DuckDB engine: SQL over Parquet file lists and Arrow tables."""

from __future__ import annotations

import duckdb
import pyarrow as pa

from pipelines.iceberg_io import FileSet


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


class DuckDBEngine:
    """Runs the stage SQL in an in-process DuckDB with the session in UTC.

    Inputs are bound by name: a list of Iceberg data files (read with
    ``read_parquet``, which reads only the columns a statement uses) or an
    Arrow table.
    """

    name = "duckdb"

    def __init__(self, threads: int | None = None) -> None:
        self.con = duckdb.connect()
        self._run("SET TimeZone = 'UTC'")
        if threads:
            self._run(f"SET threads = {int(threads)}")
        self._kinds: dict[str, str] = {}

    def _run(self, sql: str) -> None:
        # DuckDB 2.0 keeps a statement's result open until drained.
        self.con.execute(sql).fetchall()

    def _drop(self, name: str) -> None:
        kind = self._kinds.pop(name, None)
        if kind == "arrow":
            self.con.unregister(name)
        elif kind is not None:
            self._run(f'DROP {kind} IF EXISTS "{name}"')

    def bind_files(self, name: str, files: FileSet, schema: pa.Schema, where: str = "") -> None:
        """Expose ``files`` as relation ``name`` (empty, with ``schema``, when there are none)."""
        self._drop(name)
        if not files.paths:
            self.bind_arrow(name, schema.empty_table())
            return
        listing = ", ".join(_quote(p) for p in files.paths)
        clause = f" WHERE {where}" if where else ""
        self._run(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM read_parquet([{listing}]){clause}')
        self._kinds[name] = "VIEW"

    def bind_sql(self, name: str, sql: str) -> None:
        """Expose the result of ``sql`` (evaluated lazily) as relation ``name``."""
        self._drop(name)
        self._run(f'CREATE TEMP VIEW "{name}" AS {sql}')
        self._kinds[name] = "VIEW"

    def bind_arrow(self, name: str, table: pa.Table) -> None:
        self._drop(name)
        self.con.register(name, table)
        self._kinds[name] = "arrow"

    def materialize(self, name: str, sql: str) -> int:
        """Evaluate ``sql`` once into temp table ``name``; returns its row count."""
        self._drop(name)
        self._run(f'CREATE TEMP TABLE "{name}" AS {sql}')
        self._kinds[name] = "TABLE"
        return self.scalar(f'SELECT COUNT(*) FROM "{name}"')

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def scalar(self, sql: str) -> int:
        rows = self.con.execute(sql).fetchall()
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def close(self) -> None:
        self.con.close()
