"""Servers the tests start on 127.0.0.1: free ports, and a Spark standalone cluster.

The cluster is the scale-out setting of the README (one master, one worker): a job
submitted to ``spark://`` runs its tasks on the worker's executor, not in the driver.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Cluster:
    master_url: str
    work_dir: Path
    env: dict[str, str]

    def executor_ran_tasks(self) -> bool:
        """The executors' logs (under the worker's work directory, at Spark's default INFO) record tasks."""
        logs = self.work_dir.glob("app-*/*/stderr")
        return any("Finished task" in log.read_text(errors="replace") for log in logs)


def _start(args: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[Any]:
    import pyspark

    spark_class = Path(pyspark.__file__).parent / "bin" / "spark-class"
    with log.open("w") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [str(spark_class), *args], stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def _wait_for(log: Path, text: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    tail = log.read_text(errors="replace")[-2000:]
    raise AssertionError(f"{text!r} not seen in {log} within {START_TIMEOUT_S}s:\n{tail}")


@contextmanager
def standalone_cluster(root: Path) -> Iterator[Cluster]:
    """A master and a worker (2 cores, 2 GiB) logging under ``root``; both stopped on exit."""
    import pyspark

    env = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_HOME": str(Path(pyspark.__file__).parent)}
    port = free_port()
    cluster = Cluster(f"spark://127.0.0.1:{port}", root / "work", env)
    ui = ["--webui-port", str(free_port())]
    master = _start(
        ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port), *ui],
        root / "master.log",
        env,
    )
    worker = None
    try:
        _wait_for(root / "master.log", "I have been elected leader")
        worker = _start(
            [
                "org.apache.spark.deploy.worker.Worker",
                cluster.master_url,
                *("--host", "127.0.0.1", "--cores", "2", "--memory", "2g"),
                *("--work-dir", str(cluster.work_dir), "--webui-port", str(free_port())),
            ],
            root / "worker.log",
            env,
        )
        _wait_for(root / "worker.log", "Successfully registered with master")
        yield cluster
    finally:
        for p in (worker, master):
            if p is not None:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=60)
