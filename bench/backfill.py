"""The repopulation scenario in a run: the upstream rewrite, the lookback user's backfills, the verdicts.

On processing day ``repopulate_day`` the source's event dates in the
repopulated range are rewritten (``datagen.repopulate``). IPS needs no user
step: its workflows capture the OVERWRITE and recompute downstream. The
lookback recomputes only its window; with ``lookback_backfill="manual"`` its
user then runs one backfill per stage the source reaches, in lineage order
(each a user step, costed like a stage).

Without those backfills the lookback keeps the uncorrected rows on the
repopulated dates its window had already left: those mismatches are
*explained* by the repopulation (the lookback, by design, never looks back that
far), as late events beyond the window are. ``check`` counts them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from bench.equality import Verdict, compare
from bench.metrics import StageRecorder
from bench.scenario import Scenario
from datagen.repopulate import Repopulated, repopulate
from pipelines import lookback, oracle
from pipelines.backfill import Restatement, dependents, make_plan, restate
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine, Engine, in_dates
from pipelines.iceberg_io import partition_dates, plan
from pipelines.pipeline import PIPELINE, SOURCE_TABLE, Stage, sources_of, view_cap_change

BACKFILL_STAGE = "backfill"
REPOPULATE_STAGE = "repopulate"


def repopulated_range(scenario: Scenario, start: date) -> tuple[date, date]:
    return start + timedelta(days=scenario.repopulate_from_day), start + timedelta(days=scenario.repopulate_to_day)


def restated_history(scenario: Scenario, start: date) -> tuple[int, date, date] | None:
    """The processing day a scenario restates history on, and the event dates it restates (None: it does not)."""
    if scenario.repopulate_day is not None:
        return (scenario.repopulate_day, *repopulated_range(scenario, start))
    if scenario.logic_change_day is not None:
        first = start + timedelta(days=scenario.logic_change_from_day)
        return scenario.logic_change_day, first, start + timedelta(days=scenario.logic_change_day)
    return None


def pipeline_on(scenario: Scenario, start: date, day: int, pipeline: Sequence[Stage] = PIPELINE) -> tuple[Stage, ...]:
    """The pipeline in force on processing day ``day``: after a logic change, its new version."""
    if scenario.logic_change_day is None or day < scenario.logic_change_day:
        return tuple(pipeline)
    first = start + timedelta(days=scenario.logic_change_from_day)
    return view_cap_change(first, scenario.new_view_seconds_cap, pipeline)


def changed_stage(old: Sequence[Stage], new: Sequence[Stage]) -> Stage:
    """The one stage whose logic differs between two versions of a pipeline."""
    (changed,) = [n for o, n in zip(old, new, strict=True) if o.sql != n.sql]
    return changed


def logic_change_backfills(
    catalog: SqlCatalog,
    engine: Engine,
    scenario: Scenario,
    start: date,
    base: dict[str, Any],
    strategy: str,
    pipeline: Sequence[Stage] = PIPELINE,
) -> list[dict[str, Any]]:
    """The restatement of history under a stage's new logic, on the day it takes effect.

    IPS: one backfill of the changed stage (its workflows carry it downstream),
    audited against the oracle of the new version. The lookback: one per stage
    from the changed one on, in lineage order, when its user backfills
    ("manual"); none otherwise.
    """
    assert scenario.logic_change_day is not None
    day = scenario.logic_change_day
    now = pipeline_on(scenario, start, day, pipeline)
    changed = changed_stage(pipeline_on(scenario, start, day - 1, pipeline) if day else tuple(pipeline), now)
    if strategy == lookback.STRATEGY:
        if scenario.lookback_backfill != "manual":
            return []
        stages = [changed, *dependents(changed.name, now)]
    else:
        stages = [changed]
    _, first, last = restated_history(scenario, start) or (day, start, start)
    return _backfills(catalog, engine, strategy, stages, first, last, base, now, against_oracle=strategy != "lookback")


def _backfills(
    catalog: SqlCatalog,
    engine: Engine,
    strategy: str,
    stages: Sequence[Stage],
    first: date,
    last: date,
    base: dict[str, Any],
    pipeline: Sequence[Stage],
    *,
    against_oracle: bool,
) -> list[dict[str, Any]]:
    """Backfill ``stages`` of ``strategy`` over ``first``..``last`` in order; one costed row (a user step) each.

    The branch write goes through pyiceberg with DuckDB computing the output: a
    Spark run's backfills use a DuckDB engine of their own (the tables are shared).
    """
    own = None if isinstance(engine, DuckDBEngine) else DuckDBEngine()
    try:
        rows = []
        for step, s in enumerate(stages, start=1):
            rec = StageRecorder()
            with rec.timed():
                restatement: Restatement = make_plan(catalog, s.name, strategy, first, last, pipeline).restate
                out = restate(
                    StageContext(catalog, own or engine, rec),
                    restatement,
                    pipeline=pipeline,
                    against_oracle=against_oracle,
                )
            if not out.audit.passed:
                raise RuntimeError(f"backfill of {restatement.table} failed its audit: {'; '.join(out.audit.reasons)}")
            rows.append(
                {
                    **base,
                    "strategy": strategy,
                    "stage": BACKFILL_STAGE,
                    **rec.row(),
                    "pattern": BACKFILL_STAGE,
                    "partitions": len(restatement.dates),
                    "backfilled_stage": s.name,
                    "user_step": step,
                }
            )
        return rows
    finally:
        if own is not None:
            own.close()


def reached(pipeline: Sequence[Stage] = PIPELINE, source: str = SOURCE_TABLE) -> list[Stage]:
    """The stages a change of ``source`` reaches, in lineage order: the lookback user's backfills."""
    return [s for s in pipeline if source in sources_of(s.name, pipeline)]


def run_repopulation(catalog: SqlCatalog, scenario: Scenario, start: date, base: dict[str, Any]) -> dict[str, Any]:
    """Rewrite the repopulated source partitions; the row of its cost (charged to the source, as ingest is)."""
    first, last = repopulated_range(scenario, start)
    rec = StageRecorder()
    with rec.timed():
        done: Repopulated = repopulate(catalog, first, last, recorder=rec)
    return {
        **base,
        "strategy": "source",
        "stage": REPOPULATE_STAGE,
        **rec.row(),
        "pattern": "overwrite",
        "partitions": len(done.dates),
        "rewritten_partitions": len(done.dates),
    }


def manual_backfills(
    catalog: SqlCatalog,
    engine: Engine,
    scenario: Scenario,
    start: date,
    base: dict[str, Any],
    pipeline: Sequence[Stage] = PIPELINE,
) -> list[dict[str, Any]]:
    """The lookback user's backfills after a repopulation: one per reached stage, in lineage order.

    Audited on row counts only: a lookback table that missed late data (or a
    running total carried from such rows) need not match the oracle even once restated.
    """
    first, last = repopulated_range(scenario, start)
    return _backfills(
        catalog, engine, lookback.STRATEGY, reached(pipeline), first, last, base, pipeline, against_oracle=False
    )


def explained_dates(scenario: Scenario, start: date, s: Stage, known: Sequence[date]) -> list[date]:
    """The restated dates of ``s`` the lookback's window had already left on the day of the restatement.

    A stage carrying a running total is wrong from the first such date on.
    """
    restated = restated_history(scenario, start)
    if restated is None:
        return []
    day, first, last = restated
    window_start, _ = lookback.window(start + timedelta(days=day), scenario.lookback_days)
    left = [d for d in known if first <= d <= last and d < window_start]
    if s.carry is not None and left:
        return [d for d in known if d >= left[0]]
    return left


def check(
    catalog: SqlCatalog, scenario: Scenario, start: date, *, pipeline: Sequence[Stage] = PIPELINE
) -> tuple[dict[str, Verdict], int]:
    """Every strategy against the oracle, the lookback's mismatches due to the repopulation explained.

    The lookback is compared twice: with the oracle, then with the oracle in
    which the dates explained by the repopulation hold the lookback's own rows.
    What the second comparison leaves unexplained is the verdict's; its
    mismatches are the first's.

    Returns:
        The verdicts, and the lookback's mismatched rows the repopulation explains.
    """
    engine = DuckDBEngine()
    try:
        oracle.compute(engine, catalog, pipeline=pipeline)
        verdicts: dict[str, Verdict] = {
            s: compare(engine, catalog, s, scenario.lookback_days if s == "lookback" else None, pipeline=pipeline)
            for s in scenario.strategies
        }
        restated = restated_history(scenario, start)
        if "lookback" not in verdicts or scenario.lookback_backfill == "manual" or restated is None:
            return verdicts, 0
        for s in pipeline:
            table = catalog.load_table(s.table(lookback.STRATEGY))
            dates = explained_dates(scenario, start, s, partition_dates(table))
            if not dates:
                continue
            mine = f"repopulated_{s.name}"
            engine.bind_files(
                mine, plan(table, AlwaysTrue()), schema_to_pyarrow(table.schema(), include_field_ids=False)
            )
            cols = ", ".join(f.name for f in s.schema.fields)
            on = in_dates("event_date", dates)
            rel = oracle.relation(s.name)
            engine.materialize(
                f"{rel}_patched",
                f"SELECT {cols} FROM {rel} WHERE NOT ({on}) UNION ALL SELECT {cols} FROM {mine} WHERE {on}",
            )
            engine.materialize(rel, f"SELECT * FROM {rel}_patched")
        first = verdicts["lookback"]
        second = compare(engine, catalog, "lookback", scenario.lookback_days, pipeline=pipeline)
    finally:
        engine.close()
    per_stage = {
        name: {
            **figures,
            "unexplained_mismatched_rows": second.per_stage[name]["unexplained_mismatched_rows"],
            "repopulation_explained_rows": figures["unexplained_mismatched_rows"]
            - second.per_stage[name]["unexplained_mismatched_rows"],
        }
        for name, figures in first.per_stage.items()
    }
    verdicts["lookback"] = replace(
        first, unexplained_mismatched_rows=second.unexplained_mismatched_rows, per_stage=per_stage
    )
    return verdicts, first.unexplained_mismatched_rows - second.unexplained_mismatched_rows
