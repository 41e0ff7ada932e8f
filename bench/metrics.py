"""The runner's clock: a Recorder that times a stage and its phases.

What the clock leaves out of a stage's ``wall_s`` and ``cpu_s``, each kept in
a column of its own so its cost stays visible:

- the memory sampler's thread: its CPU, measured on the thread's own clock
  (``time.thread_time``), is subtracted from the process's CPU (``sampler_cpu_s``);
- the bookkeeping a pipeline runs in ``aside()`` to find its floor and where
  its rows lie (``aside_wall_s``, ``aside_cpu_s``).

Work is split at the lookback's window: rows and bytes by the partitions the
pipeline says they lie in (``partitions``), time by each side's share of the
rows read and written (a stage's engine calls handle both sides at once).
"""

from __future__ import annotations

import re
import resource
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from pathlib import Path
from typing import Any

import psutil

from bench.contract import COUNTERS, FLOOR_KEYS, PHASES, SPLIT_FIGURES

Figures = tuple[int, int]


_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
# The process's high-water mark as it stood at each reset (the kernel keeps none across them).
_peak_before_resets = 0


def _own_high_water() -> int | None:
    """This process's peak resident memory since its last reset (Linux ``VmHWM``), or None off Linux."""
    try:
        match = re.search(r"^VmHWM:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) * 1024 if match else None


def _reset_own_high_water() -> bool:
    """Start this process's high-water mark afresh (``clear_refs`` 5); False where the kernel offers none."""
    global _peak_before_resets
    before = _own_high_water()
    if before is None:
        return False
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    _peak_before_resets = max(_peak_before_resets, before)
    return True


def process_peak_rss() -> int:
    """This process's peak resident memory since it started, across the per-stage resets."""
    now = _own_high_water()
    if now is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return max(_peak_before_resets, now)


class PeakRss:
    """The peak resident memory of this process and its children (a Spark JVM) over a block.

    This process's own peak is the kernel's high-water mark, reset on entry: exact,
    and free. Children are sampled: every ``interval_s`` while there are any, their
    list looked up again every ``children_every_s`` (listing processes walks /proc,
    which at every sample cost a sixth of a stage's CPU on two cores). Where the
    kernel keeps no high-water mark this process is sampled too.

    ``cpu_s`` is the sampling thread's own CPU so far (its thread clock), which
    the process's CPU counters include and the stage's ``cpu_s`` must not.
    """

    def __init__(self, interval_s: float = 0.02, children_every_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.peak_bytes = 0
        self.cpu_s = 0.0
        self._refresh_every = max(1, round(children_every_s / interval_s))
        self._children: list[psutil.Process] = []
        self._high_water = False
        self._stop = threading.Event()
        self._proc = psutil.Process()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, refresh: bool) -> None:
        if refresh:
            self._children = self._proc.children(recursive=True)
        if self._high_water and not self._children:
            return  # the kernel keeps this process's peak
        rss = self._proc.memory_info().rss
        for child in self._children:
            try:
                rss += child.memory_info().rss
            except psutil.Error:
                continue
        self.peak_bytes = max(self.peak_bytes, rss)

    def _run(self) -> None:
        t0 = time.thread_time()
        samples = 0
        while not self._stop.wait(self.interval_s):
            samples += 1
            self._sample(refresh=samples % self._refresh_every == 0)
            self.cpu_s = time.thread_time() - t0
        self.cpu_s = time.thread_time() - t0

    def __enter__(self) -> PeakRss:
        self._high_water = _reset_own_high_water()
        self._sample(refresh=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(refresh=True)
        if self._high_water:
            self.peak_bytes = max(self.peak_bytes, _own_high_water() or 0)


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
    """Times one stage run (wall and process CPU, all threads) and collects its figures.

    Args:
        window_start: the first date of the lookback's window on this run's
            processing date; work on earlier partitions is counted as ``older_*``,
            the rest as ``window_*`` (None: all of it in the window).
    """

    def __init__(self, window_start: date | None = None) -> None:
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self.phases: dict[str, float] = dict.fromkeys(PHASES, 0.0)
        self.floors: dict[str, int] = dict.fromkeys(FLOOR_KEYS, 0)
        self.window_start = window_start
        # Per partition date: [rows, bytes] read and written.
        self.dated: dict[str, dict[date, list[int]]] = {"read": {}, "written": {}}
        self.partitions_written = 0
        self.info: dict[str, Any] = {}
        self.wall_s = 0.0
        self.cpu_s = 0.0
        self.aside_wall_s = 0.0
        self.aside_cpu_s = 0.0
        self.sampler_cpu_s = 0.0
        self.peak_rss_bytes = 0
        self._sampler: PeakRss | None = None

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

    def partitions(
        self, read: Mapping[date, Figures] | None = None, wrote: Mapping[date, Figures] | None = None
    ) -> None:
        for kind, figures in (("read", read), ("written", wrote)):
            for day, (rows, bytes_) in (figures or {}).items():
                acc = self.dated[kind].setdefault(day, [0, 0])
                acc[0] += rows
                acc[1] += bytes_

    def floor(self, rows_read: int, bytes_read: int, rows_written: int, bytes_written: int) -> None:
        for key, v in zip(FLOOR_KEYS, (rows_read, bytes_read, rows_written, bytes_written), strict=True):
            self.floors[key] += int(v)

    def _sampler_cpu(self) -> float:
        return self._sampler.cpu_s if self._sampler is not None else 0.0

    @contextmanager
    def aside(self) -> Iterator[None]:
        """Bookkeeping: timed on its own and left out of the stage's wall and CPU."""
        w0, c0, s0 = time.perf_counter(), cpu_seconds(), self._sampler_cpu()
        try:
            yield
        finally:
            self.aside_wall_s += time.perf_counter() - w0
            # The sampler's CPU meanwhile is subtracted once, as the sampler's.
            self.aside_cpu_s += cpu_seconds() - c0 - (self._sampler_cpu() - s0)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """The whole stage: wall clock, CPU of this process (DuckDB threads included), peak RSS.

        Minus the sampler's CPU and the bookkeeping done ``aside()``.
        """
        with PeakRss() as rss:
            self._sampler = rss
            w0, c0 = time.perf_counter(), cpu_seconds()
            aside_w0, aside_c0 = self.aside_wall_s, self.aside_cpu_s
            try:
                yield
            finally:
                sampler = rss.cpu_s
                self.wall_s += time.perf_counter() - w0 - (self.aside_wall_s - aside_w0)
                # Children's CPU comes in clock ticks: a near-idle stage could come out a tick below zero.
                self.cpu_s += max(0.0, cpu_seconds() - c0 - sampler - (self.aside_cpu_s - aside_c0))
                self.sampler_cpu_s += sampler
                self._sampler = None
        self.peak_rss_bytes = max(self.peak_rss_bytes, rss.peak_bytes)

    def split(self) -> dict[str, float | int]:
        """``window_*`` and ``older_*`` figures (``SPLIT_FIGURES``): rows and bytes by partition date,
        wall and CPU by each side's share of the rows read and written."""
        sides: dict[str, dict[str, float | int]] = {
            side: dict.fromkeys(("rows_read", "bytes_read", "rows_written", "bytes_written"), 0)
            for side in ("window", "older")
        }
        for kind, by_date in self.dated.items():
            for day, (rows, bytes_) in by_date.items():
                side = sides["older" if self.window_start is not None and day < self.window_start else "window"]
                side[f"rows_{kind}"] += rows
                side[f"bytes_{kind}"] += bytes_
        touched = {side: float(f["rows_read"] + f["rows_written"]) for side, f in sides.items()}
        older_share = touched["older"] / (touched["window"] + touched["older"]) if touched["older"] else 0.0
        for key in ("wall_s", "cpu_s"):
            whole = getattr(self, key)
            sides["older"][key] = whole * older_share
            sides["window"][key] = whole - sides["older"][key]
        return {f"{side}_{k}": sides[side][k] for side in sides for k in SPLIT_FIGURES}

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
        out.update(self.floors)
        out.update(self.split())
        out["aside_wall_s"] = self.aside_wall_s
        out["aside_cpu_s"] = self.aside_cpu_s
        out["sampler_cpu_s"] = self.sampler_cpu_s
        return out
