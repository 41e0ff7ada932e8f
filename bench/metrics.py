"""The runner's clock: a Recorder that times a stage and its phases."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psutil

from bench.contract import COUNTERS, PHASES


class PeakRss:
    """Samples the resident memory of this process and its children (a Spark JVM); keeps the peak."""

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = self._proc.memory_info().rss
        for child in self._proc.children(recursive=True):
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                continue
        self.peak_bytes = max(self.peak_bytes, rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


def cpu_seconds() -> float:
    """CPU time of this process and its live children (Spark's JVM is one), all threads."""
    total = time.process_time()
    for child in psutil.Process().children(recursive=True):
        try:
            t = child.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


class StageRecorder:
    """Times one stage run (wall and process CPU, all threads) and collects its figures."""

    def __init__(self) -> None:
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.partitions_written = 0
        self.info: dict[str, Any] = {}
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.peak_rss_bytes = 0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - t0

    def read(self, rows: int, bytes_: int, files: int) -> None:
        self.counters["rows_read"] += rows
        self.counters["bytes_read"] += bytes_
        self.counters["files_read"] += files

    def wrote(self, rows: int, bytes_: int, files: int, commits: int, partitions: int) -> None:
        self.counters["rows_written"] += rows
        self.counters["bytes_written"] += bytes_
        self.counters["files_written"] += files
        self.counters["commits"] += commits
        self.partitions_written += partitions

    def note(self, **info: Any) -> None:
        self.info.update(info)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """The whole stage: wall clock, CPU of this process (DuckDB threads included), peak RSS."""
        with PeakRss() as rss:
            w0, c0 = time.perf_counter(), cpu_seconds()
            try:
                yield
            finally:
                self.wall_s += time.perf_counter() - w0
                self.cpu_s += cpu_seconds() - c0
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss.peak_bytes)

    def row(self) -> dict[str, Any]:
        out: dict[str, Any] = {"wall_s": self.wall_s, "cpu_s": self.cpu_s, **self.counters}
        out["partitions_written"] = self.partitions_written
        out["peak_rss_bytes"] = self.peak_rss_bytes
        out.update({f"{p}_s": v for p, v in self.phases.items()})
        out["pattern"] = self.info.get("pattern", "")
        out["partitions"] = int(self.info.get("partitions", 0))
        out["captured_files"] = int(self.info.get("captured_files", 0))
        out["captured_rows"] = int(self.info.get("captured_rows", 0))
        out["rewritten_partitions"] = int(self.info.get("rewritten_partitions", 0))
        out["non_append_snapshots"] = int(self.info.get("non_append_snapshots", 0))
        return out
