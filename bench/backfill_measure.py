"""Restating N days of stage 1 on a finished run's warehouse: IPS against the lookback.

IPS: one backfill (write-audit-publish, audited against the oracle), then its
workflows' next run (the last processing day again) carries the restatement
down to the last stage by itself. The lookback: one backfill per stage from
stage 1 on, in lineage order (audited on row counts). Prints wall, CPU, rows
and bytes of each side and its user steps, as JSON.

    python -m bench.backfill_measure WAREHOUSE DAYS
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.metrics import StageRecorder
from bench.runner import check, run_strategy_stage
from bench.scenario import SCENARIO_FILE, Scenario
from pipelines.backfill import dependents, make_plan, restate
from pipelines.catalog import open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.pipeline import PIPELINE

KEYS = ("wall_s", "cpu_s", "rows_read", "bytes_read", "rows_written", "bytes_written")


def _add(acc: dict[str, float], rec: StageRecorder) -> None:
    row = rec.row()
    for k in KEYS:
        acc[k] = acc.get(k, 0) + row[k]


def measure(warehouse: Path, days: int) -> dict[str, Any]:
    scenario = Scenario.from_dict(json.loads((warehouse / SCENARIO_FILE).read_text()))
    catalog = open_catalog(warehouse)
    first = scenario.start_date
    last = first + timedelta(days=days - 1)
    stage1 = PIPELINE[0]
    engine = DuckDBEngine()
    out: dict[str, Any] = {"partitions_asked": days}
    try:
        restated: dict[str, float] = {}
        rec = StageRecorder()
        with rec.timed():
            done = restate(
                StageContext(catalog, engine, rec), make_plan(catalog, stage1.name, "ips", first, last).restate
            )
        if not done.published:
            raise RuntimeError(f"the IPS backfill was not published: {done.audit.reasons}")
        _add(restated, rec)
        carried: dict[str, float] = {}
        day = scenario.start_date + timedelta(days=scenario.days - 1)
        for s in PIPELINE:
            rec = StageRecorder()
            with rec.timed():
                run_strategy_stage(
                    StageContext(catalog, engine, rec, processing_date=day), "ips", s.name, day, scenario
                )
            _add(carried, rec)
        out["ips"] = {"user_steps": 1, "restatement": restated, "propagation": carried}
        backfills: dict[str, float] = {}
        stages: Sequence[str] = [stage1.name, *(s.name for s in dependents(stage1.name))]
        for name in stages:
            rec = StageRecorder()
            with rec.timed():
                plan = make_plan(catalog, name, "lookback", first, last)
                done = restate(StageContext(catalog, engine, rec), plan.restate, against_oracle=False)
            if not done.published:
                raise RuntimeError(f"the lookback backfill of {name} was not published: {done.audit.reasons}")
            _add(backfills, rec)
        out["lookback"] = {"user_steps": len(stages), "backfills": backfills}
        out["ips_equal_to_oracle_after"] = check(catalog, scenario)["ips"].equal_to_oracle
    finally:
        engine.close()
    return out


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]), int(sys.argv[2])), indent=1))
