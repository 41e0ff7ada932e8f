"""What a pipeline tells the runner: phases, what it read and wrote, and its floor.

Pipelines own no clocks. The runner passes in a ``Recorder``; a pipeline
announces where each phase (capture, plan, probe, transform, write, commit)
begins and ends and reports the Iceberg files it scanned and wrote. Beside the
totals it says on which ``event_date`` partitions those rows and bytes lie
(``partitions``), so the runner can split the work at the lookback's window,
and, for an IPS pattern, the work the pattern cannot avoid (``floor``). The
bookkeeping that finds these figures runs inside ``aside()``, which the
runner's clock leaves out of the stage's times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from datetime import date
from typing import Any, Protocol

# Rows and bytes on one partition.
Figures = tuple[int, int]


class Recorder(Protocol):
    def phase(self, name: str) -> AbstractContextManager[None]: ...

    def read(self, rows: int, bytes_: int, files: int) -> None: ...

    def wrote(self, rows: int, bytes_: int, files: int, commits: int, partitions: int) -> None: ...

    def note(self, **info: Any) -> None: ...

    def partitions(
        self, read: Mapping[date, Figures] | None = None, wrote: Mapping[date, Figures] | None = None
    ) -> None:
        """Where rows and bytes already reported by ``read``/``wrote`` lie, per ``event_date`` partition."""

    def floor(self, rows_read: int, bytes_read: int, rows_written: int, bytes_written: int) -> None:
        """Work the pattern cannot avoid for the changes it processed (added up over calls)."""

    def aside(self) -> AbstractContextManager[None]:
        """Bookkeeping for the figures above: not part of the stage's cost."""


class NullRecorder:
    """A recorder that keeps nothing (for step-wise runs and tests)."""

    def phase(self, name: str) -> AbstractContextManager[None]:
        return nullcontext()

    def read(self, rows: int, bytes_: int, files: int) -> None:
        return None

    def wrote(self, rows: int, bytes_: int, files: int, commits: int, partitions: int) -> None:
        return None

    def note(self, **info: Any) -> None:
        return None

    def partitions(
        self, read: Mapping[date, Figures] | None = None, wrote: Mapping[date, Figures] | None = None
    ) -> None:
        return None

    def floor(self, rows_read: int, bytes_read: int, rows_written: int, bytes_written: int) -> None:
        return None

    def aside(self) -> AbstractContextManager[None]:
        return nullcontext()


FaultHook = Callable[[str], None]


def no_fault(point: str) -> None:
    """The default fault hook: every boundary passes."""
    return None
