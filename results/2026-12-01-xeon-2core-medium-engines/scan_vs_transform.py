"""The lookback's scan against its transform, on DuckDB and on Spark, on one finished warehouse.

For a stage and the 14 event dates of the last processing day's window, each engine runs, over the
same bound inputs the lookback binds (the same planned files, the same date predicate):

- scan: ``COUNT(*)`` and ``min()`` of every input column the stage reads (every value decoded,
  next to no work);
- scan + transform: ``COUNT(*)`` and ``min()`` of every output column over the stage's SQL (the
  whole logic, nothing written).

Their difference is the transform; the stage's measured lookback time minus scan + transform is the
write. Every query runs once untimed over the window's first date first (Spark's class loading and
JIT); wall and CPU of this process and its children (Spark's JVM), as the runner measures them.

    .venv/bin/python results/2026-12-01-xeon-2core-medium-engines/scan_vs_transform.py WAREHOUSE ENGINE \
        2026-01-15 [DAYS] [scan]

(``scan``: the scans only.) On Spark, Iceberg's aggregate push-down is turned off so that the scan
reads the data rather than answering ``min()`` from file metrics.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import date
from pathlib import Path

from bench.metrics import cpu_seconds
from bench.runner import make_engine
from pipelines.catalog import open_catalog
from pipelines.engine import Inputs, PartitionedInput
from pipelines.iceberg_io import plan_dates
from pipelines.lookback import window_dates
from pipelines.pipeline import stage

# The input columns each stage's SQL reads (stage 1 reads every source column).
READS = {
    "playback_daily": None,
    "playback_daily_agg": ["event_date", "account_id", "title_id", "view_seconds"],
}


def timed(engine: object, sql: str) -> dict[str, float]:
    w0, c0 = time.perf_counter(), cpu_seconds()
    engine.scalar(sql)  # type: ignore[attr-defined]
    return {"wall_s": time.perf_counter() - w0, "cpu_s": cpu_seconds() - c0}


def queries(catalog: object, engine: object, name: str, dates: list[date]) -> tuple[int, str, str]:
    """Bind the stage's lookback inputs on ``dates``; its input rows, scan query and scan + transform query."""
    st = stage(name)
    [si] = st.inputs
    src = catalog.load_table(si.table("lookback"))  # type: ignore[attr-defined]
    part = PartitionedInput(si.relation, src, si.date_column, dates, plan_dates(src, dates))
    Inputs((part,)).bind(engine)  # type: ignore[arg-type]
    cols = READS[name] or src.schema().column_names
    outs = catalog.load_table(st.table("lookback")).schema().column_names  # type: ignore[attr-defined]
    mins = ", ".join(f"CAST(min({c}) AS STRING) AS m_{c}" for c in cols)
    out_mins = ", ".join(f"CAST(min({c}) AS STRING) AS m_{c}" for c in outs)
    return (
        part.rows,
        f"SELECT COUNT(*) AS n, {mins} FROM {si.relation}",
        f"SELECT COUNT(*) AS n, {out_mins} FROM ({st.statement()}) s",
    )


def main(warehouse: Path, engine_name: str, processing: date, days: int, scan_only: bool = False) -> None:
    catalog = open_catalog(warehouse)
    engine = make_engine(engine_name, warehouse)
    if engine_name == "spark":
        # Iceberg answers min()/COUNT(*) from file metrics when it can: the scan must read the data.
        engine.spark.conf.set("spark.sql.iceberg.aggregate-push-down.enabled", "false")  # type: ignore[attr-defined]
    dates = window_dates(processing, days)
    out: dict = {"engine": engine_name, "processing_date": processing.isoformat(), "days": days, "stages": {}}
    # Warm-up (not timed): every query once over the window's first date (class loading, JIT).
    for name in READS:
        _, scan_sql, transform_sql = queries(catalog, engine, name, dates[:1])
        timed(engine, scan_sql)
        if not scan_only:
            timed(engine, transform_sql)
    for name in READS:
        rows, scan_sql, transform_sql = queries(catalog, engine, name, dates)
        scan = timed(engine, scan_sql)
        out["stages"][name] = {"input_rows": rows, "scan": scan}
        if not scan_only:
            out["stages"][name]["scan_transform"] = timed(engine, transform_sql)
        print(name, json.dumps(out["stages"][name]), file=sys.stderr, flush=True)
    print(json.dumps(out))
    if hasattr(engine, "close"):
        engine.close()


if __name__ == "__main__":
    days = int(sys.argv[4]) if len(sys.argv) > 4 else 14
    main(Path(sys.argv[1]), sys.argv[2], date.fromisoformat(sys.argv[3]), days, sys.argv[5:] == ["scan"])
