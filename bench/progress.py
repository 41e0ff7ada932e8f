"""A one-line progress display on stderr (a line per day when stderr is not a terminal)."""

from __future__ import annotations

import shutil
import sys
import time
from collections import deque
from typing import TextIO

BAR_WIDTH = 24
# The time left is read from the pace of the last few updates: a run's first updates (the warm-up's
# ingest-only days) go much faster than the measured days that follow.
PACE_UPDATES = 3


class Progress:
    """Redraws one line in place on a terminal, cut to the terminal's width so that it never wraps;
    elsewhere (a log file, a pipe) writes plain lines, one per update, with no carriage return."""

    def __init__(self, total: int, label: str, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = total
        self.label = label
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._recent: deque[tuple[int, float]] = deque([(0, 0.0)], maxlen=PACE_UPDATES + 1)

    def update(self, done: int, detail: str = "") -> None:
        if not self.enabled:
            return
        filled = int(BAR_WIDTH * done / max(self.total, 1))
        elapsed = time.perf_counter() - self.t0
        self._recent.append((done, elapsed))
        (done0, t0), (done1, t1) = self._recent[0], self._recent[-1]
        eta = (t1 - t0) / (done1 - done0) * (self.total - done) if done1 > done0 else 0.0
        line = (
            f"{self.label} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{self.total} "
            f"{elapsed:6.1f}s elapsed, ~{eta:5.1f}s left  {detail}"
        )
        if self.tty:
            # One column short of the width: a character in the last column wraps on some terminals.
            width = shutil.get_terminal_size().columns - 1
            self.stream.write("\r" + line[:width].ljust(width))
            if done >= self.total:
                self.stream.write("\n")
        else:
            self.stream.write(line.rstrip() + "\n")
        self.stream.flush()
