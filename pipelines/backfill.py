"""Managed backfill: restate a stage's partitions, audited on a branch, published by moving ``main``.

A backfill restates the ``event_date`` partitions of one stage over a date
range, for one strategy's tables, from the stage's inputs (the same job as
``recompute``). What follows downstream comes from the pipeline's declaration
only: every stage reading the restated one, directly or through others, in
lineage order; a stage that carries a value forward (a running total) from the
first restated date to its last partition.

- IPS needs nothing more: the restatement is one OVERWRITE snapshot, which the
  downstream workflows capture as rewritten partitions and recompute.
- The lookback has no such capture: the user backfills each downstream stage
  in lineage order (the plan lists those commands).

Write-audit-publish: the OVERWRITE is committed to the branch ``BRANCH`` (created
at ``main``'s current snapshot); readers of ``main`` do not see it. The branch
is audited -- row counts (the restated partitions hold exactly the rows
written, the others are untouched) and, unless asked not to, the oracle on
the restated partitions -- and ``main`` is moved to the branch's snapshot only
when the audit passes (a fast-forward: the branch's snapshot is a child of
``main``'s, so an IPS capture walks it like any commit). A failed audit drops
the branch: ``main`` stays as it was. A killed backfill leaves at most a stale
branch, dropped by the next attempt, or a published ``main``: running it again
restates the same partitions to the same rows.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.manifest import DataFileContent
from pyiceberg.table import Table

from pipelines import oracle
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine, Inputs, in_dates
from pipelines.iceberg_io import (
    EPOCH,
    FileSet,
    conform,
    contiguous,
    data_files,
    live_files,
    partition_dates,
    partition_files,
)
from pipelines.pipeline import PIPELINE, Stage, stage, validate
from pipelines.recompute import recompute

BRANCH = "ipsbench-backfill"
# Set on the restating snapshot: what it restated (read back by ``ipsbench state`` and the tests).
BACKFILL_PROPERTY = "ipsbench.backfill"
AUDITS = ("oracle", "counts")


class BackfillRefused(Exception):
    """The backfill cannot run as asked (bad stage, range, or a table never processed): nothing written."""


class PublishConflict(Exception):
    """``main`` moved while the backfill was being audited: nothing published."""


def dependents(name: str, pipeline: Sequence[Stage] = PIPELINE) -> tuple[Stage, ...]:
    """The stages reading ``name``, directly or through other stages, in lineage order."""
    reached = {name}
    out: list[Stage] = []
    for s in validate(pipeline):
        if any(i.name in reached for i in s.inputs if not i.is_source):
            reached.add(s.name)
            out.append(s)
    return tuple(out)


def ancestors(name: str, pipeline: Sequence[Stage] = PIPELINE) -> tuple[Stage, ...]:
    """Stage ``name`` and every stage it reads from, directly or not, in lineage order."""
    needed = {name}
    for s in reversed(validate(pipeline)):
        if s.name in needed:
            needed.update(i.name for i in s.inputs if not i.is_source)
    return tuple(s for s in pipeline if s.name in needed)


def date_range(first: date, last: date) -> list[date]:
    return [first + timedelta(days=i) for i in range((last - first).days + 1)]


@dataclass(frozen=True)
class Restatement:
    """One table's restated partitions."""

    stage: Stage
    strategy: str
    dates: tuple[date, ...]

    @property
    def table(self) -> str:
        return self.stage.table(self.strategy)

    def ranges(self) -> list[tuple[date, date]]:
        return contiguous(self.dates)

    def describe(self) -> str:
        spans = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in self.ranges())
        return f"{self.table}: {len(self.dates)} partition(s) {spans or '(none)'}"


@dataclass(frozen=True)
class Plan:
    """What a backfill restates, and what must follow downstream (IPS by itself, the lookback by hand)."""

    strategy: str
    first: date
    last: date
    restate: Restatement
    downstream: tuple[Restatement, ...]

    @property
    def user_steps(self) -> int:
        """Backfill commands a user runs to correct every table: IPS one, the lookback one per stage."""
        return 1 if self.strategy == "ips" else 1 + len(self.downstream)

    def preview(self, warehouse: str = "WAREHOUSE") -> list[str]:
        lines = [f"backfill of {self.restate.stage.name} ({self.strategy}) over {self.first}..{self.last}"]
        lines.append(f"  restates {self.restate.describe()}")
        if self.restate.stage.carry is not None and self.restate.dates and self.restate.dates[-1] > self.last:
            lines.append("    (a running total: every partition after the range is restated too)")
        if not self.downstream:
            lines.append("  downstream: no stage reads it")
        elif self.strategy == "ips":
            lines.append(
                "  downstream, by itself at the next 'ipsbench process --strategy ips' (rewritten partitions):"
            )
            for r in self.downstream:
                lines.append(f"    {r.stage.name} ({r.stage.pattern} pattern) recomputes {r.describe()}")
        else:
            lines.append(f"  downstream: the lookback captures nothing; run these {len(self.downstream)} backfill(s)")
            lines.append("  after this one, in this order (each restates its partitions from the one before):")
            for r in self.downstream:
                lines.append(
                    f"    ipsbench backfill --warehouse {warehouse} --strategy {self.strategy} --stage {r.stage.name} "
                    f"--from {self.first} --to {self.last}   # {r.describe()}"
                )
        return lines


def _known_dates(catalog: Catalog, s: Stage, strategy: str) -> set[date]:
    """The partitions a stage's inputs and its own table hold (what a restatement can cover)."""
    known = set(partition_dates(catalog.load_table(s.table(strategy))))
    for i in s.inputs:
        known.update(partition_dates(catalog.load_table(i.table(strategy))))
    return known


def _restated(s: Stage, wanted: Iterable[date], known: set[date]) -> tuple[date, ...]:
    wanted = sorted(set(wanted))
    if not wanted:
        return ()
    if s.carry is not None:
        # Every row from the first restated date on takes the running total from the rows before it.
        return tuple(sorted(d for d in known if d >= wanted[0]))
    return tuple(d for d in wanted if d in known)


def make_plan(
    catalog: Catalog, stage_name: str, strategy: str, first: date, last: date, pipeline: Sequence[Stage] = PIPELINE
) -> Plan:
    """The plan of a backfill of ``stage_name``'s ``strategy`` table over ``first``..``last``.

    Raises:
        BackfillRefused: unknown stage, an empty range, no partition in it, or a table never written.
    """
    try:
        declared = stage(stage_name, pipeline)
    except KeyError as e:
        raise BackfillRefused(str(e.args[0])) from None
    if first > last:
        raise BackfillRefused(f"--from {first} is after --to {last}")
    target = catalog.load_table(declared.table(strategy))
    if target.metadata.current_snapshot_id is None:
        raise BackfillRefused(
            f"{declared.table(strategy)} has never been written; run 'ipsbench process --strategy {strategy}' first"
        )
    known = _known_dates(catalog, declared, strategy)
    dates = _restated(declared, date_range(first, last), known)
    if not dates:
        span = f"{min(known)}..{max(known)}" if known else "none"
        raise BackfillRefused(
            f"no partition of {declared.table(strategy)} or its inputs lies in {first}..{last} (they hold {span})"
        )
    by_stage = {declared.name: dates}
    downstream = []
    for d in dependents(declared.name, pipeline):
        wanted = {x for i in d.inputs if i.name in by_stage for x in by_stage[i.name]}
        restated = _restated(d, wanted, _known_dates(catalog, d, strategy))
        by_stage[d.name] = restated
        downstream.append(Restatement(d, strategy, restated))
    return Plan(strategy, first, last, Restatement(declared, strategy, dates), tuple(downstream))


@dataclass
class Audit:
    """What the audit of a restatement on the branch found."""

    rows_written: int = 0
    rows_on_branch: int = 0
    other_rows_before: int = 0
    other_rows_on_branch: int = 0
    oracle_mismatched_rows: int | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.reasons


@dataclass
class Outcome:
    """One restated table: its branch snapshot, the audit, and whether ``main`` moved to it."""

    restatement: Restatement
    base_snapshot_id: int | None
    snapshot_id: int | None = None
    rows_written: int = 0
    bytes_written: int = 0
    files_written: int = 0
    files_removed: int = 0
    audit: Audit = field(default_factory=Audit)
    published: bool = False


def _drop_branch(table: Table) -> None:
    if BRANCH in table.metadata.refs:
        with table.manage_snapshots() as ms:
            ms.remove_branch(BRANCH)


def _output(engine: DuckDBEngine, sql: str, source: Inputs) -> Iterable[pa.Table]:
    """The stage's output over ``source``'s dates, in chunks of whole partitions (as the engine's replace does)."""
    if source.rows <= engine.CHUNK_ROWS:
        source.bind(engine)
        return engine.ordered(sql)
    if not source.date_local:
        source.bind(engine)
        engine.materialize("stage_output", sql)
    else:
        engine.materialize_by_dates("stage_output", sql, source)
    return engine.chunks("stage_output")


def _files(table: Table, snapshot_id: int | None, dates: Sequence[date] | None = None) -> FileSet:
    """The live files of ``table`` at ``snapshot_id`` (on ``dates`` only, when given), from metadata."""
    snapshot = table.snapshot_by_id(snapshot_id) if snapshot_id is not None else None
    if snapshot is None:
        return FileSet()
    wanted = None if dates is None else {(d - EPOCH).days for d in dates}
    live = [f for f in live_files(table, snapshot) if wanted is None or int(f.partition[0]) in wanted]
    return FileSet.of(
        (f for f in live if f.content == DataFileContent.DATA), (f for f in live if f.content != DataFileContent.DATA)
    )


def _rows(table: Table, snapshot_id: int | None, dates: Sequence[date] | None = None) -> int:
    return _files(table, snapshot_id, dates).rows


# Iceberg type -> the SQL type both sides are cast to before comparing (as the equality check does).
_SQL_TYPES = {"string": "VARCHAR", "long": "BIGINT", "int": "INTEGER", "date": "DATE", "timestamptz": "TIMESTAMPTZ"}


def oracle_mismatches(
    catalog: Catalog, table: Table, snapshot_id: int, s: Stage, dates: Sequence[date], pipeline: Sequence[Stage]
) -> int:
    """Rows of ``table`` at ``snapshot_id`` on ``dates`` that the oracle lacks, plus those it has and they lack.

    The oracle runs the stage and the stages it reads, from every source row.
    """
    engine = DuckDBEngine()
    try:
        oracle.compute(engine, catalog, pipeline=ancestors(s.name, pipeline))
        files = _files(table, snapshot_id, dates)
        engine.bind_files("audited", files, schema_to_pyarrow(table.schema(), include_field_ids=False))
        cols = ", ".join(f"CAST({f.name} AS {_SQL_TYPES[str(f.field_type)]})" for f in s.schema.fields)
        where = in_dates("event_date", dates)
        mine = f"SELECT {cols} FROM audited WHERE {where}"
        truth = f"SELECT {cols} FROM {oracle.relation(s.name)} WHERE {where}"
        return engine.scalar(
            f"SELECT COUNT(*) FROM (({mine} EXCEPT ALL {truth}) UNION ALL ({truth} EXCEPT ALL {mine}))"
        )
    finally:
        engine.close()


def audit(
    catalog: Catalog, out: Outcome, pipeline: Sequence[Stage] = PIPELINE, *, against_oracle: bool = True
) -> Audit:
    """Audit the branch snapshot of ``out``: row counts, and (``against_oracle``) the oracle on its restated dates."""
    r = out.restatement
    table = catalog.load_table(r.table)
    a = Audit(rows_written=out.rows_written)
    snap = out.snapshot_id if out.snapshot_id is not None else out.base_snapshot_id
    a.rows_on_branch = _rows(table, snap, r.dates)
    a.other_rows_before = _rows(table, out.base_snapshot_id) - _rows(table, out.base_snapshot_id, r.dates)
    a.other_rows_on_branch = _rows(table, snap) - a.rows_on_branch
    if a.rows_on_branch != a.rows_written:
        a.reasons.append(f"the restated partitions hold {a.rows_on_branch:,} rows, the job wrote {a.rows_written:,}")
    if a.other_rows_on_branch != a.other_rows_before:
        a.reasons.append(
            f"partitions outside the restatement changed: {a.other_rows_before:,} rows before, "
            f"{a.other_rows_on_branch:,} on the branch"
        )
    if against_oracle and snap is not None:
        a.oracle_mismatched_rows = oracle_mismatches(catalog, table, snap, r.stage, r.dates, pipeline)
        if a.oracle_mismatched_rows:
            a.reasons.append(
                f"{a.oracle_mismatched_rows:,} row(s) of the restated partitions differ from the oracle "
                "(an upstream stage not yet restated, or late data the table never saw)"
            )
    return a


def restate(
    ctx: StageContext,
    r: Restatement,
    *,
    pipeline: Sequence[Stage] = PIPELINE,
    against_oracle: bool = True,
) -> Outcome:
    """Write-audit-publish one restatement: OVERWRITE on the branch, audit it, move ``main`` if it passes.

    ``ctx.engine`` must be a DuckDB engine (the branch write goes through pyiceberg).

    Raises:
        PublishConflict: ``main`` moved between the branch's creation and the publish.
    """
    if not isinstance(ctx.engine, DuckDBEngine):
        raise TypeError("a backfill computes its output with the DuckDB engine")
    engine = ctx.engine
    target = ctx.catalog.load_table(r.table)
    _drop_branch(target)  # a killed earlier attempt's branch: never published, start again
    target = ctx.catalog.load_table(r.table)
    base = target.metadata.current_snapshot_id
    out = Outcome(r, base)
    if base is not None:
        with target.manage_snapshots() as ms:
            ms.create_branch(base, BRANCH)

    def write(table: Table, sql: str, source: Inputs) -> None:
        with ctx.recorder.phase("transform"):
            chunks = _output(engine, sql, source)
        ctx.fault("before_write")
        with ctx.recorder.phase("write"):
            table = ctx.catalog.load_table(r.table)
            old = partition_files(table, source.dates)
            commit_uuid = uuid.uuid4()
            counter = itertools.count(0)
            new = [
                f
                for chunk in chunks
                for f in data_files(table.metadata, conform(table, chunk), table.io, commit_uuid, counter)
            ]
            out.rows_written = sum(f.record_count for f in new)
            out.bytes_written = sum(f.file_size_in_bytes for f in new)
            out.files_written, out.files_removed = len(new), len(old)
            if not old and not new:
                return
            note = {BACKFILL_PROPERTY: f"{r.stage.name} {r.dates[0]}..{r.dates[-1]} ({len(r.dates)} partitions)"}
            with (
                table.transaction() as tx,
                tx.update_snapshot(snapshot_properties=note, branch=BRANCH).overwrite(commit_uuid=commit_uuid) as rep,
            ):
                for gone in old:
                    rep.delete_data_file(gone)
                for added in new:
                    rep.append_data_file(added)
            out.snapshot_id = ctx.catalog.load_table(r.table).metadata.refs[BRANCH].snapshot_id
            ctx.recorder.wrote(out.rows_written, out.bytes_written, len(new), 1, len(r.dates))

    try:
        recompute(ctx, r.stage, r.strategy, r.dates, floor=False, write=write)
        ctx.fault("before_audit")
        with ctx.recorder.phase("audit"):
            out.audit = audit(ctx.catalog, out, pipeline, against_oracle=against_oracle)
        if out.audit.passed and out.snapshot_id is not None:
            ctx.fault("before_publish")
            with ctx.recorder.phase("commit"):
                table = ctx.catalog.load_table(r.table)
                if table.metadata.current_snapshot_id != base:
                    raise PublishConflict(
                        f"{r.table}: main moved from snapshot {base} to {table.metadata.current_snapshot_id} "
                        "during the backfill; nothing published, run it again"
                    )
                with table.manage_snapshots() as ms:
                    ms.set_current_snapshot(snapshot_id=out.snapshot_id)
                    ms.remove_branch(BRANCH)
                out.published = True
    finally:
        if not out.published:
            _drop_branch(ctx.catalog.load_table(r.table))
    return out
