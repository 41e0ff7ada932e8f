"""The same pipelines on Spark: equal to DuckDB's results and to the oracle, the state shared.

One Spark application per pytest process (module-scoped); the standalone
cluster runs in a subprocess against a master and a worker started here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from bench.cli import main
from bench.runner import check, simulate
from bench.scenario import from_preset
from pipelines.catalog import open_catalog
from pipelines.pipeline import STAGES
from pipelines.pipeline import stage as stage_def

# pyspark 3.5's DataFrame.collect() drops its result socket without closing it.
# Every test starts or uses a JVM: `make test` only.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")]

TINY = {"days": 4, "warmup_days": 1}


def table_rows(warehouse: Path, name: str) -> pa.Table:
    stage = stage_def(name.split(".")[1])
    catalog = open_catalog(warehouse)
    rows = catalog.load_table(name).scan().to_arrow()
    catalog.engine.dispose()
    return rows.sort_by([(k, "ascending") for k in stage.key])


def test_spark_and_duckdb_give_identical_tables_equal_to_the_oracle(tmp_path: Path) -> None:
    runs = {}
    for engine in ("duckdb", "spark"):
        scenario = from_preset("tiny", engine=engine, **TINY)
        run = simulate(scenario, tmp_path / engine, progress=False)
        assert run.verdicts["ips"].equal_to_oracle, run.verdicts["ips"].per_stage
        assert run.verdicts["lookback"].unexplained_mismatched_rows == 0
        runs[engine] = run
    for strategy in ("lookback", "ips"):
        for stage in STAGES:
            name = f"{strategy}.{stage}"
            duck = table_rows(tmp_path / "duckdb", name)
            # Same rows and values; the Parquet writers differ only in string encoding (large vs not).
            assert table_rows(tmp_path / "spark", name).cast(duck.schema).equals(duck), name
    # Spark's commits are its own: the MERGE of stage 1 appends, the others overwrite.
    catalog = open_catalog(tmp_path / "spark")
    daily = catalog.load_table("ips.playback_daily").current_snapshot()
    assert daily is not None and daily.summary is not None
    assert daily.summary.operation.value == "append" and daily.summary["engine-name"] == "spark"
    spark_rows = [r for r in runs["spark"].rows if r["strategy"] in ("lookback", "ips") and r["stage"] in STAGES]
    assert all(r["bytes_read"] > 0 for r in spark_rows if r["strategy"] == "lookback")
    assert sum(r["rows_written"] for r in spark_rows) > 0


def test_days_alternate_between_engines_on_one_warehouse(tmp_path: Path) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), "--preset", "tiny", "--days", "4", "--warmup-days", "1"]) == 0
    for day, engine in enumerate(("duckdb", "spark", "duckdb", "spark")):
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        for strategy in ("ips", "lookback"):
            args = ["process", "--warehouse", str(wh), "--strategy", strategy, "--day", str(day)]
            assert main([*args, "--engine", engine]) == 0
    assert main(["check", "--warehouse", str(wh)]) == 0


def test_merge_on_read_writes_delete_files_and_stays_exact(tmp_path: Path) -> None:
    scenario = from_preset("tiny", engine="spark", merge_mode="merge-on-read", **TINY)
    run = simulate(scenario, tmp_path / "wh", progress=False)
    assert run.verdicts["ips"].equal_to_oracle
    catalog = open_catalog(tmp_path / "wh")
    agg = catalog.load_table("ips.playback_daily_agg").current_snapshot()
    assert agg is not None and agg.summary is not None
    assert int(agg.summary.get("total-position-deletes") or 0) > 0
    assert check(catalog, scenario)["ips"].equal_to_oracle


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[Any]:
    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(spark_class), *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _wait_for(log: Path, text: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not seen in {log} within {timeout_s}s:\n{log.read_text(errors='replace')[-2000:]}")


def test_tiny_on_a_standalone_cluster(tmp_path: Path) -> None:
    import pyspark

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(Path(pyspark.__file__).parent)}
    port = _free_port()
    master_url = f"spark://127.0.0.1:{port}"
    master = _start(
        [
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(_free_port()),
        ],
        tmp_path / "master.log",
        env,
    )
    worker = None
    try:
        _wait_for(tmp_path / "master.log", "I have been elected leader", 90)
        worker = _start(
            [
                "org.apache.spark.deploy.worker.Worker",
                master_url,
                "--host",
                "127.0.0.1",
                "--cores",
                "2",
                "--memory",
                "2g",
                "--work-dir",
                str(tmp_path / "work"),
                "--webui-port",
                str(_free_port()),
            ],
            tmp_path / "worker.log",
            env,
        )
        _wait_for(tmp_path / "worker.log", "Successfully registered with master", 90)
        out = tmp_path / "run"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.cli",
                "run",
                "--out",
                str(out),
                "--preset",
                "tiny",
                "--days",
                "3",
                "--warmup-days",
                "1",
                "--engine",
                "spark",
                "--spark-master",
                master_url,
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            env=env,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "ips: equal to oracle True" in proc.stdout
        # The tasks ran on the cluster's executor, not in the driver: its log (under the
        # worker's work directory, at Spark's default INFO level) records them.
        executor_logs = list((tmp_path / "work").glob("app-*/*/stderr"))
        assert any("Finished task" in log.read_text(errors="replace") for log in executor_logs), executor_logs
    finally:
        for p in (worker, master):
            if p is not None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=60)
