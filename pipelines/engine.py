"""Engines: where the stage SQL runs and how its result is written.

Every engine offers the same small interface (``Engine``): bind an input
relation, evaluate SQL, and three writes that the strategies need -- replace
whole partitions (lookback, range), insert the rows whose key is missing
(MERGE ... WHEN NOT MATCHED THEN INSERT) and merge rows by key (filter).
The embedded default is DuckDB, writing through pyiceberg.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import duckdb
import pyarrow as pa
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table

from pipelines.iceberg_io import (
    EPOCH,
    FileSet,
    added_since,
    append,
    conform,
    data_files,
    overwrite_partitions,
    partition_entries,
    plan_dates,
)
from pipelines.recorder import FaultHook, Recorder
from pipelines.row_level import (
    MERGE_BY_KEY,
    ROW_DELTA_PROPERTY,
    commit_row_delta,
    merge_on_read,
    write_position_deletes,
)


def in_dates(column: str, dates: Sequence[date]) -> str:
    """A SQL predicate, valid in DuckDB and Spark SQL, for ``column`` on one of ``dates``."""
    if not dates:
        return "FALSE"
    listed = ", ".join(f"DATE '{d.isoformat()}'" for d in dates)
    return f"{column} IN ({listed})"


@dataclass(frozen=True)
class PartitionedInput:
    """A stage's input over some ``event_date``s, which an engine may bind a few dates at a time.

    Every stage's logic is local to an ``event_date`` partition (an event_id
    lives in one date), so an engine may evaluate a stage a few dates at a
    time, holding less at once, and get the same rows.

    Attributes:
        relation: the name the stage SQL reads the input by.
        table: the input table.
        date_column: a SQL expression for an input row's event date.
        dates: the event dates the stage recomputes.
        files: the planned scan of all ``dates`` (what the job reads).
        date_local: whether the stage's rows on a date depend on that date's
            input only; if not, it is never evaluated a few dates at a time.
    """

    relation: str
    table: Table
    date_column: str
    dates: Sequence[date]
    files: FileSet
    date_local: bool = True

    @property
    def rows(self) -> int:
        return self.files.rows

    def bind(self, engine: Engine, some: Sequence[date] | None = None) -> None:
        """Bind the relation to the rows of ``some`` of the dates (all of them by default)."""
        if some is None:
            engine.bind_input(self.relation, self.table, self.files, in_dates(self.date_column, self.dates))
        else:
            engine.bind_input(self.relation, self.table, plan_dates(self.table, some), in_dates(self.date_column, some))


@dataclass(frozen=True)
class Inputs:
    """Every input of a stage over the same ``event_date``s, bound together (all dates, or some)."""

    parts: tuple[PartitionedInput, ...]

    @property
    def dates(self) -> Sequence[date]:
        return self.parts[0].dates

    @property
    def rows(self) -> int:
        return sum(p.rows for p in self.parts)

    @property
    def date_local(self) -> bool:
        return all(p.date_local for p in self.parts)

    def bind(self, engine: Engine, some: Sequence[date] | None = None) -> None:
        for p in self.parts:
            p.bind(engine, some)


def date_pieces(dates: Sequence[date], rows: int, piece_rows: int) -> Iterator[list[date]]:
    """``dates`` in order, in runs of about ``piece_rows`` of the ``rows`` they hold (at least one date each)."""
    per_piece = max(1, piece_rows * len(dates) // max(rows, 1))
    ordered = sorted(dates)
    for i in range(0, len(ordered), per_piece):
        yield ordered[i : i + per_piece]


def arrow_schema(table: Table) -> pa.Schema:
    return schema_to_pyarrow(table.schema(), include_field_ids=False)


class Engine(Protocol):
    """What the strategies ask of an engine."""

    name: str

    def bind_input(self, name: str, table: Table, files: FileSet, where: str = "") -> None:
        """Expose the rows of ``table`` in ``files`` (the planned scan) matching ``where`` as ``name``."""

    def bind_sql(self, name: str, sql: str) -> None:
        """Expose the result of ``sql`` (lazily) as ``name``."""

    def materialize(self, name: str, sql: str) -> int:
        """Evaluate ``sql`` once into ``name``; returns its row count."""

    def scalar(self, sql: str) -> int: ...

    def replace_partitions(self, target: Table, sql: str, source: Inputs, recorder: Recorder, fault: FaultHook) -> None:
        """INSERT OVERWRITE: the ``event_date`` partitions ``source.dates`` of ``target`` become ``sql``'s rows.

        The engine binds ``source`` itself: at once, or a few dates at a time.
        """

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
        """MERGE INTO target USING (sql) ON key WHEN NOT MATCHED THEN INSERT, the target pruned to ``dates``.

        ``existing`` is the planned scan of those partitions (what the probe reads).
        """

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
        """MERGE INTO target USING (sql) ON keys WHEN MATCHED UPDATE WHEN NOT MATCHED INSERT, within ``dates``.

        ``old`` is the planned scan of those partitions of the target.
        """

    def close(self) -> None: ...


@dataclass(frozen=True)
class Key:
    """A one-column key a MERGE matches on, and the narrow column it may probe first.

    Attributes:
        name: the identity column.
        probe: a narrow column derived from it (a hash); a match on it is
            confirmed on ``name``, so a collision never drops or duplicates a row.
    """

    name: str
    probe: str | None = None


# DuckDB names a file it read by its path without a "file:" scheme; Iceberg paths may have one.
_LOCAL_PATH = "regexp_replace({}, '^file:(//)?', '')"


def _local(path: str) -> str:
    """``path`` as DuckDB's ``filename`` column reports it (no ``file:`` or ``file://`` scheme)."""
    for scheme in ("file://", "file:"):
        if path.startswith(scheme):
            return path[len(scheme) :]
    return path


def _quote(path: str) -> str:
    return "'" + path.replace("'", "''") + "'"


# DuckDB's read_parquet expands these as wildcards even in a list of exact file names:
# unescaped, a warehouse under "r[1]" read the data files of a copy under "r1".
GLOB_CHARACTERS = "*?["
_ESCAPE_GLOB = str.maketrans({c: f"[{c}]" for c in GLOB_CHARACTERS})


def exact_file(path: str) -> str:
    """``path`` as a DuckDB glob that matches that one file: each wildcard character in brackets.

    "[*]", "[?]" and "[[]" each match the character itself (DuckDB 2.0); ']' alone is literal.
    """
    return path.translate(_ESCAPE_GLOB)


def _read(paths: Sequence[str], numbered: bool = False) -> str:
    """``read_parquet`` of exactly ``paths``; ``numbered``: with each row's ``filename`` and ``file_row_number``.

    Iceberg paths hold "name=value" folders (partitions; a user's own folders too):
    DuckDB must not turn them into extra hive-partition columns. Every row also has
    DuckDB's ``file_index``, the position of its file in ``paths``.
    """
    listing = ", ".join(_quote(exact_file(p)) for p in paths)
    extra = ", filename = true, file_row_number = true" if numbered else ""
    return f"read_parquet([{listing}], hive_partitioning = false{extra})"


def _split(files: Sequence[DataFile], days: set[int]) -> tuple[list[DataFile], list[DataFile]]:
    """``files`` in the day partitions ``days``, and the others."""
    inside = [f for f in files if int(f.partition[0]) in days]
    return inside, [f for f in files if int(f.partition[0]) not in days]


def _kept_rows(keys: Sequence[str]) -> str:
    """The rows of ``merge_target`` whose key ``merge_source`` does not hold: what a rewrite keeps."""
    on = " AND ".join(f'n."{k}" = o."{k}"' for k in keys)
    return f"SELECT o.* FROM merge_target o WHERE NOT EXISTS (SELECT 1 FROM merge_source n WHERE {on})"


class DuckDBEngine:
    """Runs the stage SQL in an in-process DuckDB with the session in UTC; writes through pyiceberg.

    Inputs are read from the planned Iceberg data files with ``read_parquet``,
    which reads only the columns a statement uses, with their position-delete
    files applied. A merge by key rewrites the partitions it touches
    (copy-on-write), or, on a ``write.merge.mode = merge-on-read`` target,
    writes position deletes for the rows it replaces plus the new rows
    (``pipelines.row_level``), and rewrites its small partitions whole.
    """

    name = "duckdb"
    # DuckDB's own memory (temp tables, joins, windows); beyond it, it spills to disk.
    MEMORY_LIMIT = "2GB"
    # A stage's output reaches pyiceberg in chunks of whole partitions of about this many rows.
    CHUNK_ROWS = 3_000_000
    # A merge-on-read merge rewrites a partition of fewer rows than this whole (one file, its
    # delete files folded) instead of adding a delete file and a data file to it: below this
    # size a file costs more than its rows, and each one added is opened again by every later
    # read and merge until compaction. On `small`'s long tail (~35 such partitions merged a day,
    # each up to ~3,000 rows), the filter stage's probe CPU fell from 1.35 to 0.91 s over 10 days.
    WHOLE_BELOW_ROWS = 5_000

    def __init__(self, threads: int | None = None, memory_limit: str = MEMORY_LIMIT) -> None:
        self.con = duckdb.connect()
        self._spill = tempfile.mkdtemp(prefix="ipsbench-duckdb-")
        self._run("SET TimeZone = 'UTC'")
        # Spark's conv() for the one use the stage SQL makes of it (hex digits to a
        # decimal integer; see logic.EVENT_KEY). Spark's returns a string that the
        # SQL casts to BIGINT; this returns the BIGINT, which the cast keeps.
        self._run(
            "CREATE MACRO conv(digits, from_base, to_base) AS CASE WHEN from_base = 16 AND to_base = 10 "
            "THEN CAST('0x' || digits AS BIGINT) ELSE error('conv: only base 16 to 10 is defined') END"
        )
        self._run(f"SET memory_limit = '{memory_limit}'")
        self._run(f"SET temp_directory = {_quote(self._spill)}")
        if threads:
            self._run(f"SET threads = {int(threads)}")
        self._kinds: dict[str, str] = {}

    def _run(self, sql: str) -> None:
        # DuckDB 2.0 keeps a statement's result open until drained.
        self.con.execute(sql).fetchall()

    def execute(self, sql: str) -> None:
        """Run a statement that returns no rows (e.g. INSERT INTO a temp table)."""
        self._run(sql)

    def _drop(self, name: str) -> None:
        kind = self._kinds.pop(name, None)
        if kind == "arrow":
            self.con.unregister(name)
        elif kind is not None:
            self._run(f'DROP {kind} IF EXISTS "{name}"')

    def bind_files(self, name: str, files: FileSet, schema: pa.Schema, where: str = "") -> None:
        """Expose the live rows of ``files`` as relation ``name`` (empty, with ``schema``, when there are none).

        Position-delete files among ``files`` are applied (see ``_scan``).
        """
        self._drop(name)
        if not files.paths:
            self.bind_arrow(name, schema.empty_table())
            return
        clause = f" WHERE {where}" if where else ""
        self._run(f'CREATE TEMP VIEW "{name}" AS SELECT * FROM ({self._scan(name, files)}) AS s{clause}')
        self._kinds[name] = "VIEW"

    def replaced_positions(self, files: FileSet, source: str, keys: Sequence[str], where: str) -> pa.Table:
        """``file_path`` and ``pos`` of the live rows of ``files`` matching ``where`` whose key ``source`` holds.

        The rows a merge by key replaces, named as position deletes name them.
        The key semi join runs first, on the bare scan (with a one-column
        pre-filter per non-date key column: DuckDB pushes a join filter into a
        scan for one equality only), so only the matched rows carry a file and
        a row number; files are numbered by DuckDB's ``file_index`` (the
        position in the list read) instead of joined by path, and the deletes
        already applied are named by the same numbers.
        """
        empty = pa.table({"file_path": pa.array([], pa.string()), "pos": pa.array([], pa.int64())})
        if not files.paths:
            return empty
        on = " AND ".join(f'n."{k}" = o."{k}"' for k in keys)
        narrow = "".join(f' AND o."{k}" IN (SELECT "{k}" FROM {source})' for k in keys if k != "event_date")
        self.materialize(
            "replaced_candidates",
            f"SELECT o.file_index AS fi, o.file_row_number AS pos FROM {_read(files.paths)} o "
            f"WHERE ({where}){narrow} AND EXISTS (SELECT 1 FROM {source} n WHERE {on})",
        )
        live = ""
        if files.delete_paths:
            self.bind_arrow(
                "replaced_files",
                pa.table({"f": [_local(p) for p in files.paths], "fi": pa.array(range(len(files.paths)), pa.int64())}),
            )
            self.materialize(
                "replaced_deleted",
                f"SELECT i.fi, d.pos FROM {_read(files.delete_paths)} d "
                f"JOIN replaced_files i ON i.f = {_LOCAL_PATH.format('d.file_path')}",
            )
            live = " WHERE NOT EXISTS (SELECT 1 FROM replaced_deleted x WHERE x.fi = c.fi AND x.pos = c.pos)"
        found = self.query(f"SELECT c.fi, c.pos FROM replaced_candidates c{live} ORDER BY c.fi, c.pos")
        if found.num_rows == 0:
            return empty
        paths = pa.array(files.paths, pa.string()).take(found.column("fi"))
        return pa.table({"file_path": paths, "pos": found.column("pos")})

    def _scan(self, name: str, files: FileSet) -> str:
        """SQL reading the live rows of ``files``: an anti join on (file, position) with their deletes.

        Only data files that a delete names are read with their file name and row
        numbers; the others are read as they are. DuckDB reports a file by its
        path without a ``file:`` scheme: the join compares paths so normalized.
        """
        deleted: set[str] = set()
        deletes = f"{name}__deletes"
        if files.delete_paths:
            self.materialize(
                deletes, f"SELECT {_LOCAL_PATH.format('file_path')} AS f, pos FROM {_read(files.delete_paths)}"
            )
            deleted = {str(r[0]) for r in self.con.execute(f'SELECT DISTINCT f FROM "{deletes}"').fetchall()}
        parts = []
        rest = [p for p in files.paths if _local(p) not in deleted]
        hit = [p for p in files.paths if _local(p) in deleted]
        if rest:
            parts.append(f"SELECT * FROM {_read(rest)}")
        if hit:
            parts.append(
                f"SELECT d.* EXCLUDE (filename, file_row_number) FROM {_read(hit, True)} d WHERE NOT EXISTS "
                f'(SELECT 1 FROM "{deletes}" x WHERE x.f = d.filename AND x.pos = d.file_row_number)'
            )
        return " UNION ALL BY NAME ".join(parts)

    def bind_input(self, name: str, table: Table, files: FileSet, where: str = "") -> None:
        self.bind_files(name, files, arrow_schema(table), where)

    def bind_sql(self, name: str, sql: str) -> None:
        self._drop(name)
        self._run(f'CREATE TEMP VIEW "{name}" AS {sql}')
        self._kinds[name] = "VIEW"

    def bind_arrow(self, name: str, table: pa.Table) -> None:
        self._drop(name)
        self.con.register(name, table)
        self._kinds[name] = "arrow"

    def materialize(self, name: str, sql: str) -> int:
        self._drop(name)
        self._run(f'CREATE TEMP TABLE "{name}" AS {sql}')
        self._kinds[name] = "TABLE"
        return self.scalar(f'SELECT COUNT(*) FROM "{name}"')

    def query(self, sql: str) -> pa.Table:
        return self.con.sql(sql).to_arrow_table()

    def dates(self, sql: str) -> list[date]:
        """The dates in the first column of ``sql``'s rows."""
        return sorted(row[0] for row in self.con.execute(sql).fetchall())

    def scalar(self, sql: str) -> int:
        rows = self.con.execute(sql).fetchall()
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def materialize_by_dates(self, name: str, sql: str, source: Inputs) -> None:
        """Evaluate ``sql`` into temp table ``name`` a few dates at a time: the rows it would give at once.

        About CHUNK_ROWS input rows per piece: a window or join over fewer rows
        needs less memory (no spilling). ``source`` is bound to each run of dates.
        """
        pieces = list(date_pieces(source.dates, source.rows, self.CHUNK_ROWS)) or [[]]
        for i, some in enumerate(pieces):
            source.bind(self, some)
            if i == 0:
                self.materialize(name, sql)
            else:
                self.execute(f'INSERT INTO "{name}" {sql}')

    def ordered(self, sql: str) -> list[pa.Table]:
        """``sql``'s rows in one Arrow table ordered by ``event_date``: one pass, no temp table.

        For outputs known to be small (at most about CHUNK_ROWS rows); larger
        ones go through a temp table and ``chunks``.
        """
        return [self.query(f"SELECT * FROM ({sql}) AS o ORDER BY event_date")]

    def chunks(self, name: str) -> Iterator[pa.Table]:
        """The rows of relation ``name``, as Arrow tables each holding whole ``event_date`` partitions.

        Rows come ordered by ``event_date``: DuckDB sorts in parallel, and the
        writer then finds each partition's rows together without a copy.
        """

        def rows(where: str = "") -> pa.Table:
            return self.query(f'SELECT * FROM "{name}"{where} ORDER BY event_date')

        counts = self.con.execute(f'SELECT event_date, COUNT(*) FROM "{name}" GROUP BY event_date').fetchall()
        if sum(n for _, n in counts) <= self.CHUNK_ROWS:
            yield rows()
            return
        group: list[date] = []
        total = 0
        for day, n in sorted(counts):
            if group and total + n > self.CHUNK_ROWS:
                yield rows(f" WHERE {in_dates('event_date', group)}")
                group, total = [], 0
            group.append(day)
            total += n
        if group:
            yield rows(f" WHERE {in_dates('event_date', group)}")

    def replace_partitions(self, target: Table, sql: str, source: Inputs, recorder: Recorder, fault: FaultHook) -> None:
        with recorder.phase("transform"):
            output: Iterable[pa.Table]
            if source.rows <= self.CHUNK_ROWS:
                source.bind(self)
                output = self.ordered(sql)
            elif not source.date_local:
                source.bind(self)
                self.materialize("stage_output", sql)
                output = self.chunks("stage_output")
            else:
                self.materialize_by_dates("stage_output", sql, source)
                output = self.chunks("stage_output")
        fault("before_write")
        with recorder.phase("write"):
            overwrite_partitions(target, output, source.dates, recorder)

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
        with recorder.phase("transform"):
            self.materialize("merge_source", sql)
        with recorder.phase("probe"):
            self.bind_files("merge_target", existing, arrow_schema(target), in_dates("event_date", dates))
            matches = "merge_target"
            if key.probe is not None:
                # The narrow column first: only the target rows whose probe value the
                # source also holds (re-sends, and the rare hash collision) are read
                # for the identity column, which confirms the match.
                self.materialize(
                    "probe_hits",
                    f'SELECT DISTINCT t."{key.probe}" AS v FROM merge_target t '
                    f'WHERE t."{key.probe}" IN (SELECT "{key.probe}" FROM merge_source)',
                )
                # DuckDB decodes a string column whole for any row group it reads, so
                # the confirmation reads only the partitions holding hits (a literal
                # date predicate prunes the other files by their statistics).
                hit_dates = self.dates(
                    f'SELECT DISTINCT event_date FROM merge_source WHERE "{key.probe}" IN (SELECT v FROM probe_hits)'
                )
                matches = "probe_matches"
                self.materialize(
                    matches,
                    f'SELECT "{key.name}" FROM merge_target '
                    f'WHERE {in_dates("event_date", hit_dates)} AND "{key.probe}" IN (SELECT v FROM probe_hits)',
                )
            new_rows = self.query(
                "SELECT s.* FROM merge_source s WHERE NOT EXISTS "
                f'(SELECT 1 FROM {matches} t WHERE t."{key.name}" = s."{key.name}") ORDER BY s.event_date'
            )
        fault("before_write")
        with recorder.phase("write"):
            append(target, new_rows, recorder)

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
        if merge_on_read(target):
            self._merge_on_read(target, sql, keys, dates, old, recorder, fault)
            return
        with recorder.phase("transform"):
            new_rows = self.materialize("merge_source", sql)
            self.bind_files("merge_target", old, arrow_schema(target), in_dates("event_date", dates))
            # Copy-on-write: the touched partitions are rewritten whole, unchanged keys included.
            merged = f"{_kept_rows(keys)} UNION ALL SELECT * FROM merge_source"
            if old.rows + new_rows <= self.CHUNK_ROWS:
                output: Iterable[pa.Table] = self.ordered(merged)
            else:
                self.materialize("stage_output", merged)
                output = self.chunks("stage_output")
        fault("before_write")
        with recorder.phase("write"):
            overwrite_partitions(target, output, dates, recorder)

    def _merge_on_read(
        self,
        target: Table,
        sql: str,
        keys: Sequence[str],
        dates: Sequence[date],
        old: FileSet,
        recorder: Recorder,
        fault: FaultHook,
    ) -> None:
        """The merge, merge-on-read: position deletes for the live rows whose key the source holds; its rows added.

        A partition of fewer than ``WHOLE_BELOW_ROWS`` rows is rewritten whole
        instead: its rows the source does not replace are added with the new
        ones, and its data and delete files removed. One snapshot (a row delta)
        marked ``ROW_DELTA_PROPERTY``: every row it deletes or removes is
        replaced by a row of the same key among the rows it adds.
        """
        with recorder.phase("transform"):
            self.materialize("merge_source", sql)
        with recorder.phase("plan"):
            live, live_deletes = partition_entries(target, dates)
            rows: dict[int, int] = {}
            for f in live:
                rows[int(f.partition[0])] = rows.get(int(f.partition[0]), 0) + f.record_count
            touched = {(d - EPOCH).days for d in self.dates("SELECT DISTINCT event_date FROM merge_source")}
            whole = {day for day in touched if 0 < rows.get(day, 0) < self.WHOLE_BELOW_ROWS}
            (whole_data, other_data), (whole_deletes, other_deletes) = _split(live, whole), _split(live_deletes, whole)
        with recorder.phase("transform"):
            added_rows = "SELECT * FROM merge_source"
            if whole:
                # The rewritten partitions' other rows, kept (as copy-on-write keeps them).
                self.bind_files("merge_target", FileSet.of(whole_data, whole_deletes), arrow_schema(target))
                added_rows += f" UNION ALL {_kept_rows(keys)}"
            new_rows = self.query(f"SELECT * FROM ({added_rows}) AS a ORDER BY event_date")
        with recorder.phase("probe"):
            # The live rows the new ones replace in the other partitions: their files and row positions.
            rest = FileSet.of(other_data, other_deletes) if whole else old
            replaced = self.replaced_positions(rest, "merge_source", keys, in_dates("event_date", dates))
        fault("before_write")
        with recorder.phase("write"):
            if replaced.num_rows == 0 and new_rows.num_rows == 0:
                return
            commit_uuid = uuid.uuid4()
            deletes = write_position_deletes(target, replaced, live, commit_uuid)
            fault("after_delete_files")
            added = data_files(target.metadata, conform(target, new_rows), target.io, commit_uuid)
            before = target.metadata.current_snapshot_id
            fault("before_commit")
            removed = [*whole_data, *whole_deletes]
            commit_row_delta(target, [*added, *deletes], removed, commit_uuid, {ROW_DELTA_PROPERTY: MERGE_BY_KEY})
            stats = added_since(target, before)
            recorder.wrote(stats.rows, stats.bytes, stats.files + len(deletes), stats.commits, len(dates))

    def close(self) -> None:
        self.con.close()
        shutil.rmtree(self._spill, ignore_errors=True)
