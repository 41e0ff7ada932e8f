"""Two ``process`` runs of one strategy on one warehouse: the second waits or refuses (exit 2, one line)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy import text

from bench.cli import main
from pipelines.catalog import open_catalog
from pipelines.ips.state import StateLog
from pipelines.lock import LockHeld, acquire, create_lock_table, hold, release

LOCK = "process --strategy ips"
PROCESS = [sys.executable, "-m", "bench.cli", "process", "--warehouse"]


@pytest.fixture
def warehouse(tmp_path: Path) -> Path:
    wh = tmp_path / "warehouse"
    assert main(["init", "--warehouse", str(wh), "--preset", "tiny", "--days", "3", "--warmup-days", "1"]) == 0
    assert main(["ingest", "--warehouse", str(wh), "--day", "0"]) == 0
    return wh


@pytest.fixture
def catalog(warehouse: Path) -> Iterator[SqlCatalog]:
    cat = open_catalog(warehouse)
    yield cat
    cat.engine.dispose()


def process(warehouse: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """``ipsbench process`` in a process of its own, as a scheduler would start it."""
    return subprocess.run(
        [*PROCESS, str(warehouse), "--strategy", "ips", "--day", "0", *extra],
        capture_output=True,
        text=True,
        timeout=300,
    )


def lock_rows(catalog: SqlCatalog) -> list[tuple[str, int]]:
    with catalog.engine.connect() as conn:
        return [(r.name, r.pid) for r in conn.execute(text("SELECT name, pid FROM ipsbench_lock"))]


def captures(catalog: SqlCatalog) -> int:
    """IPS captures logged (its log table is created on first use: none yet is 0)."""
    return len(StateLog(catalog).runs())


def test_second_process_is_refused_naming_the_holder(warehouse: Path, catalog: SqlCatalog) -> None:
    with hold(catalog.engine, LOCK):
        done = process(warehouse)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"ipsbench: error: this warehouse's {LOCK} is held by pid {os.getpid()} ")
    assert f"on host {socket.gethostname()} since " in err and "--lock-timeout" in err
    # Refused before any work: IPS captured nothing.
    assert captures(catalog) == 0


@pytest.mark.slow
def test_second_process_waits_up_to_the_lock_timeout(warehouse: Path, catalog: SqlCatalog) -> None:
    with hold(catalog.engine, LOCK):
        started = time.monotonic()
        done = process(warehouse, "--lock-timeout", "2")
        elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    assert f"held by pid {os.getpid()} " in done.stderr and "after waiting 2 s" in done.stderr
    assert elapsed >= 2


@pytest.mark.slow
def test_waiting_process_runs_once_the_holder_releases(warehouse: Path, catalog: SqlCatalog) -> None:
    token = acquire(catalog.engine, LOCK)
    waiting = subprocess.Popen(
        [*PROCESS, str(warehouse), "--strategy", "ips", "--day", "0", "--lock-timeout", "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(3)
        assert waiting.poll() is None
        assert captures(catalog) == 0
    finally:
        release(catalog.engine, LOCK, token)
    out, err = waiting.communicate(timeout=300)
    assert waiting.returncode == 0, err
    assert "processed day 0" in out
    assert captures(catalog) > 0
    # Released on the way out, so the next scheduled run is not refused.
    assert lock_rows(catalog) == []


@pytest.mark.slow
def test_lock_of_a_killed_process_is_taken_over(warehouse: Path, catalog: SqlCatalog) -> None:
    # A process that takes the lock and dies holding it (SIGKILL: no finally runs).
    holder = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; from pipelines.catalog import open_catalog; "
            "from pipelines.lock import acquire; "
            f"acquire(open_catalog(Path(sys.argv[1])).engine, {LOCK!r}); os.kill(os.getpid(), signal.SIGKILL)",
            str(warehouse),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert holder.returncode == -signal.SIGKILL, holder.stderr
    [(_, dead_pid)] = lock_rows(catalog)
    done = process(warehouse)
    assert done.returncode == 0, done.stderr
    assert f"ipsbench: note: lock '{LOCK}' of pid {dead_pid} on host {socket.gethostname()}" in done.stderr
    assert "taken over: that process is gone" in done.stderr
    assert lock_rows(catalog) == []


def _insert_holder(catalog: SqlCatalog, pid: int, host: str, process_start: str) -> None:
    create_lock_table(catalog.engine)
    with catalog.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ipsbench_lock (name, token, pid, host, process_start, since) "
                "VALUES (:n, 'theirs', :pid, :host, :start, '2024-01-01T00:00:00+00:00')"
            ),
            {"n": LOCK, "pid": pid, "host": host, "start": process_start},
        )


def test_holder_on_another_host_is_not_taken_over(catalog: SqlCatalog) -> None:
    """Whether a process of another machine still runs cannot be seen from here: wait, never steal."""
    _insert_holder(catalog, 1, "elsewhere.example", "")
    with pytest.raises(LockHeld, match=r"held by pid 1 on host elsewhere\.example since 2024-01-01"):
        acquire(catalog.engine, LOCK)
    assert lock_rows(catalog) == [(LOCK, 1)]


def test_reused_pid_does_not_keep_a_dead_holder_alive(catalog: SqlCatalog) -> None:
    """After a reboot the holder's pid may belong to another process: its start time tells them apart."""
    notes: list[str] = []
    _insert_holder(catalog, os.getpid(), socket.gethostname(), "another-boot:12345")
    token = acquire(catalog.engine, LOCK, note=notes.append)
    assert [len(notes), "taken over" in notes[0]] == [1, True]
    assert lock_rows(catalog) == [(LOCK, os.getpid())]
    release(catalog.engine, LOCK, token)
    assert lock_rows(catalog) == []


def test_release_leaves_a_newer_holders_lock_alone(catalog: SqlCatalog) -> None:
    """A holder taken over (it was thought dead) must not, on its late exit, free its successor's lock."""
    create_lock_table(catalog.engine)
    _insert_holder(catalog, os.getpid(), socket.gethostname(), "")
    release(catalog.engine, LOCK, "an-older-token")
    assert lock_rows(catalog) == [(LOCK, os.getpid())]
