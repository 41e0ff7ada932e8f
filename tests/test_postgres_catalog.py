"""The catalog in a real PostgreSQL server: ``tiny`` on DuckDB and on a Spark cluster, equal to the oracle.

A cluster keeps its catalog in PostgreSQL (README, scale-out): pyiceberg's
``SqlCatalog`` and Spark's Iceberg ``JdbcCatalog`` then share one database
named by ``IPSBENCH_CATALOG_URI``. The server is Debian's ``postgresql``
package, started here on 127.0.0.1 (a free port, a throw-away data directory)
and stopped when the module ends; each test gets its own database. The Spark
run is the README's scale-out setting whole: a standalone cluster (master and
worker started here) with the catalog in PostgreSQL. ``.ci/run`` installs the
package when run as root; as root a missing server fails the tests, as another
user they skip naming the package. The cluster's master and worker start with the
module, in a thread, while the DuckDB run goes on: the Spark run waits only for what
is left of their start.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest
import sqlalchemy

from bench.runner import RunResult, simulate
from bench.scenario import from_preset
from pipelines.catalog import open_catalog
from pipelines.pipeline import SOURCE_TABLE, STAGES
from tests.services import Cluster, free_port, standalone_cluster

# pyspark 3.5's DataFrame.collect() drops its result socket without closing it.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:unclosed <socket.socket:ResourceWarning")]

# Late rows reach earlier dates from day 1 on: three days merge them twice. The same
# days on both engines.
DAYS = 3
WARMUP_DAYS = 1
USER = "ipsbench"
START_TIMEOUT_S = 60


def postgres_bin() -> Path | None:
    """The newest installed server's binaries (Debian keeps one directory per major version)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Server:
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg2://{USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        """Create an empty database; returns its SQLAlchemy URL."""
        admin = sqlalchemy.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
        finally:
            admin.dispose()
        return self.url(name)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    bin_dir = postgres_bin()
    if bin_dir is None:
        reason = "no PostgreSQL server in /usr/lib/postgresql/*/bin: apt-get install postgresql"
        if os.geteuid() == 0:
            pytest.fail(f"{reason} (.ci/run installs it when run as root)")
        pytest.skip(reason)
    # initdb refuses to run as root: the server then runs as `nobody`, in a directory
    # of its own outside pytest's temp root (which only root may enter).
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="ipsbench-pg-"))
    if as_user:
        shutil.chown(root, user="nobody")
    data, log = root / "data", root / "server.log"
    port = free_port()

    def run(*args: str) -> None:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, timeout=START_TIMEOUT_S)
        server_log = log.read_text(errors="replace") if log.exists() else ""
        assert proc.returncode == 0, proc.stdout + proc.stderr + server_log

    try:
        # Trust authentication on 127.0.0.1 only; fsync off: the data dies with the test.
        run(str(bin_dir / "initdb"), "-D", str(data), "-U", USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        options = f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off -c full_page_writes=off"
        run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
        try:
            yield Server(port)
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root)


@pytest.fixture(scope="module", autouse=True)
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[Cluster]]:
    """The standalone cluster (tests/services.py), starting in a thread from the module's first test on."""
    root = tmp_path_factory.mktemp("cluster")
    with ExitStack() as stack, ThreadPoolExecutor(max_workers=1) as pool:
        # The pool is left (its thread joined) before the stack stops the cluster.
        yield pool.submit(stack.enter_context, standalone_cluster(root))


def simulate_on_postgres(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RunResult, str]:
    """Run ``tiny`` on DuckDB with the catalog in a new database; returns the run and the database URL."""
    url = server.new_database("tiny_duckdb")
    monkeypatch.setenv("IPSBENCH_CATALOG_URI", url)
    scenario = from_preset("tiny", days=DAYS, warmup_days=WARMUP_DAYS)
    run = simulate(scenario, tmp_path / "warehouse", progress=False)
    assert run.verdicts["ips"].equal_to_oracle, run.verdicts["ips"].per_stage
    assert run.verdicts["lookback"].unexplained_mismatched_rows == 0
    return run, url


def assert_catalog_lives_in_postgres(url: str, warehouse: Path) -> None:
    """Every table and the capture log are rows of the PostgreSQL database, not of a sqlite file."""
    assert not (warehouse / "catalog.db").exists()
    db = sqlalchemy.create_engine(url)
    try:
        with db.connect() as conn:
            tables = conn.execute(
                sqlalchemy.text("SELECT table_namespace, table_name, metadata_location FROM iceberg_tables")
            ).all()
            runs = conn.execute(sqlalchemy.text("SELECT workflow, status FROM ips_capture_log")).all()
    finally:
        db.dispose()
    expected = {SOURCE_TABLE} | {f"{s}.{stage}" for s in ("lookback", "ips") for stage in STAGES}
    assert expected <= {f"{ns}.{name}" for ns, name, _ in tables}
    # pyiceberg writes /path (open_catalog gives a plain path), Spark may write file:/path: compare the paths.
    assert all(urlparse(location).path.startswith(f"{warehouse.resolve()}/") for _, _, location in tables)
    assert {status for _, status in runs} == {"committed"}
    assert {workflow for workflow, _ in runs} >= set(STAGES)


def test_tiny_on_duckdb_with_the_catalog_in_postgres(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, url = simulate_on_postgres(server, tmp_path, monkeypatch)
    assert_catalog_lives_in_postgres(url, tmp_path / "warehouse")


def test_tiny_on_a_spark_cluster_with_the_catalog_in_postgres(
    server: Server, cluster: Future[Cluster], tmp_path: Path
) -> None:
    url = server.new_database("tiny_spark")
    out = tmp_path / "run"
    started = cluster.result()
    days = [f"--days={DAYS}", f"--warmup-days={WARMUP_DAYS}"]
    spark = ["--engine", "spark", "--spark-master", started.master_url]
    proc = subprocess.run(
        [sys.executable, "-m", "bench.cli", "run", "--out", str(out), "--preset", "tiny", *days, *spark, "--quiet"],
        capture_output=True,
        text=True,
        timeout=1800,  # a hang guard: the run took 933 s on a machine loaded 5-fold
        env={**started.env, "IPSBENCH_CATALOG_URI": url},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ips: equal to oracle True" in proc.stdout
    assert started.executor_ran_tasks()
    assert_catalog_lives_in_postgres(url, out / "warehouse")
    # Spark committed through the same catalog: pyiceberg reads its MERGE from PostgreSQL.
    catalog = open_catalog(out / "warehouse", catalog_uri=url)
    try:
        snapshot = catalog.load_table("ips.playback_daily").current_snapshot()
    finally:
        catalog.engine.dispose()
    assert snapshot is not None and snapshot.summary is not None
    assert snapshot.summary["engine-name"] == "spark"
