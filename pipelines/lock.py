"""A named lock held in the catalog database: one ``process`` of a workflow per warehouse at a time.

Two ``process`` runs of the same strategy would capture the same snapshots and
race on the watermark and the target tables. The lock is a row of table
``ipsbench_lock`` in the catalog's own database (sqlite or PostgreSQL), so every
machine that shares the catalog sees it. It is taken with an INSERT that the
primary key rejects while another process holds it, and released by deleting
the row. A row left by a process that died on this host (SIGKILL, power loss)
is taken over; a holder on another host cannot be checked from here and is
waited for.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError

_DDL = """
CREATE TABLE IF NOT EXISTS ipsbench_lock (
  name TEXT PRIMARY KEY,
  token TEXT NOT NULL,
  pid INTEGER NOT NULL,
  host TEXT NOT NULL,
  process_start TEXT NOT NULL,
  since TEXT NOT NULL
)
"""

POLL_SECONDS = 0.2


class LockHeld(Exception):
    """Another live process holds the lock (the message names it)."""

    def __init__(self, name: str, holder: Holder, waited: float) -> None:
        after = f" after waiting {waited:g} s" if waited > 0 else ""
        super().__init__(f"{name} is held by {holder.describe()}{after}")
        self.holder = holder


@dataclass(frozen=True)
class Holder:
    token: str
    pid: int
    host: str
    process_start: str
    since: str

    def describe(self) -> str:
        return f"pid {self.pid} on host {self.host} since {self.since}"


def _process_start(pid: int) -> str:
    """When ``pid`` started, in clock ticks since boot ('' where /proc is not readable).

    With the pid alone, a pid reused after the holder died (certain after a
    reboot) would look like the holder still running.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    # Field 22 (starttime); the command name (field 2) may hold spaces, so count after its ')'.
    return stat.rsplit(")", 1)[1].split()[19]


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _me() -> tuple[int, str, str]:
    pid = os.getpid()
    start = _process_start(pid)
    # The boot id makes a start time from before a reboot differ from every one after it.
    return pid, socket.gethostname(), f"{_boot_id()}:{start}" if start else ""


def _alive_here(holder: Holder) -> bool:
    """Whether ``holder``, a process of this host, is still running."""
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, run by another user
    if not holder.process_start:
        return True
    start = _process_start(holder.pid)
    return not start or f"{_boot_id()}:{start}" == holder.process_start


def _holder(engine: Engine, name: str) -> Holder | None:
    with engine.connect() as conn:
        row = conn.execute(
            text("SELECT token, pid, host, process_start, since FROM ipsbench_lock WHERE name = :n"), {"n": name}
        ).first()
    return None if row is None else Holder(row.token, int(row.pid), row.host, row.process_start, row.since)


def _try_insert(engine: Engine, name: str, token: str) -> bool:
    pid, host, start = _me()
    since = datetime.now(UTC).isoformat(timespec="seconds")
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ipsbench_lock (name, token, pid, host, process_start, since) "
                    "VALUES (:n, :t, :pid, :host, :start, :since)"
                ),
                {"n": name, "t": token, "pid": pid, "host": host, "start": start, "since": since},
            )
    except IntegrityError:
        return False
    return True


def _delete(engine: Engine, name: str, token: str) -> None:
    # By token: only the row this holder wrote, never one a newer holder has taken since.
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM ipsbench_lock WHERE name = :n AND token = :t"), {"n": name, "t": token})


def create_lock_table(engine: Engine) -> None:
    try:
        with engine.begin() as conn:
            conn.execute(text(_DDL))
    except IntegrityError:
        # PostgreSQL: two concurrent CREATE TABLE IF NOT EXISTS can both miss the table and
        # the second then fails on the catalog's unique index; the first one created it.
        pass


def acquire(engine: Engine, name: str, timeout: float = 0.0, note: Callable[[str], None] | None = None) -> str:
    """Take lock ``name``, waiting for it up to ``timeout`` seconds; returns the token to release it with.

    Args:
        note: called with one line when a dead holder's lock is taken over.

    Raises:
        LockHeld: another live process still holds it after ``timeout`` seconds.
    """
    create_lock_table(engine)
    token = uuid.uuid4().hex
    deadline = time.monotonic() + timeout
    while not _try_insert(engine, name, token):
        holder = _holder(engine, name)
        if holder is None:
            continue  # released between our INSERT and SELECT: try again at once
        if holder.host == socket.gethostname() and not _alive_here(holder):
            _delete(engine, name, holder.token)
            if note is not None:
                note(f"lock {name!r} of {holder.describe()} taken over: that process is gone")
            continue
        if time.monotonic() >= deadline:
            raise LockHeld(name, holder, timeout)
        time.sleep(POLL_SECONDS)
    return token


def release(engine: Engine, name: str, token: str) -> None:
    """Release lock ``name`` taken with ``token`` (a no-op if it was taken over since)."""
    _delete(engine, name, token)


@contextmanager
def hold(engine: Engine, name: str, timeout: float = 0.0, note: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold lock ``name`` for the ``with`` block (see :func:`acquire`)."""
    token = acquire(engine, name, timeout, note)
    try:
        yield
    finally:
        release(engine, name, token)
