"""The same pipelines on Spark: equal to DuckDB's results and to the oracle, the state shared.

One Spark application per pytest process (conftest's ``spark_app``: the engine reuses it,
file after file). The standalone cluster runs in test_postgres_catalog, with the catalog
in PostgreSQL as on a real cluster.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from bench.cli import main
from bench.runner import check, simulate
from bench.scenario import from_preset
from bench.validate import validate
from pipelines.catalog import open_catalog
from pipelines.pipeline import STAGES
from pipelines.pipeline import stage as stage_def

# pyspark 3.5's DataFrame.collect() drops its result socket without closing it.
# Every test starts or uses a JVM: `make test` only.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning"),
    pytest.mark.usefixtures("spark_app"),
]

# Engine agreement and merge-on-read's delete files need late rows merged into earlier
# dates, which day 1 already brings: three days.
SHORT = {"days": 3, "warmup_days": 1}


def table_rows(warehouse: Path, name: str) -> pa.Table:
    stage = stage_def(name.split(".")[1])
    catalog = open_catalog(warehouse)
    rows = catalog.load_table(name).scan().to_arrow()
    catalog.engine.dispose()
    return rows.sort_by([(k, "ascending") for k in stage.key])


def test_spark_and_duckdb_give_identical_tables_equal_to_the_oracle(tmp_path: Path) -> None:
    # One sweep over the engine: both points on the same generated data.
    out = tmp_path / "sweep"
    days = ["--days", str(SHORT["days"]), "--warmup-days", str(SHORT["warmup_days"])]
    assert (
        main(["sweep", "--out", str(out), "--preset", "tiny", *days, "--vary", "engine=duckdb,spark", "--quiet"]) == 0
    )
    assert validate(out) == []
    totals = pd.read_parquet(out / "sweep_results.parquet").query("stage == 'total'").set_index(["engine", "strategy"])
    assert totals.equal_to_oracle[("duckdb", "ips")] and totals.equal_to_oracle[("spark", "ips")]
    assert (totals.unexplained_mismatched_rows.xs("lookback", level="strategy") == 0).all()
    # The same data and logic: the lookback is wrong on the same rows with either engine.
    wrong = totals.mismatched_rows.xs("lookback", level="strategy")
    assert wrong["duckdb"] == wrong["spark"]
    warehouse = {engine: out / "points" / f"engine={engine}" / "warehouse" for engine in ("duckdb", "spark")}
    for strategy in ("lookback", "ips"):
        for stage in STAGES:
            name = f"{strategy}.{stage}"
            duck = table_rows(warehouse["duckdb"], name)
            # Same rows and values; the Parquet writers differ only in string encoding (large vs not).
            assert table_rows(warehouse["spark"], name).cast(duck.schema).equals(duck), name
    # Spark's commits are its own: the MERGE of stage 1 appends, the others overwrite.
    catalog = open_catalog(warehouse["spark"])
    daily = catalog.load_table("ips.playback_daily").current_snapshot()
    assert daily is not None and daily.summary is not None
    assert daily.summary.operation.value == "append" and daily.summary["engine-name"] == "spark"
    spark_rows = pd.read_parquet(out / "points" / "engine=spark" / "results.parquet").query(
        "strategy in ('lookback', 'ips') and stage in @STAGES"
    )
    assert (spark_rows[spark_rows.strategy == "lookback"].bytes_read > 0).all()
    assert spark_rows.rows_written.sum() > 0


def test_days_alternate_between_engines_on_one_warehouse(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), "--preset", "tiny", "--days", "3", "--warmup-days", "1"]) == 0
    # Each engine takes over from the other once (DuckDB to Spark, Spark to DuckDB), on
    # days that bring late rows for earlier dates.
    for day, engine in enumerate(("duckdb", "spark", "duckdb")):
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        for strategy in ("ips", "lookback"):
            args = ["process", "--warehouse", str(wh), "--strategy", strategy, "--day", str(day)]
            assert main([*args, "--engine", engine]) == 0
    assert main(["check", "--warehouse", str(wh)]) == 0


def test_merge_on_read_writes_delete_files_and_stays_exact(tmp_path: Path) -> None:
    scenario = from_preset("tiny", engine="spark", merge_mode="merge-on-read", **SHORT)
    run = simulate(scenario, tmp_path / "wh", progress=False)
    assert run.verdicts["ips"].equal_to_oracle
    catalog = open_catalog(tmp_path / "wh")
    agg = catalog.load_table("ips.playback_daily_agg").current_snapshot()
    assert agg is not None and agg.summary is not None
    assert int(agg.summary.get("total-position-deletes") or 0) > 0
    assert check(catalog, scenario)["ips"].equal_to_oracle
