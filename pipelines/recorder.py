"""What a pipeline tells the runner: phases, and what it read and wrote.

Pipelines own no clocks. The runner passes in a ``Recorder``; a pipeline
announces where each phase (capture, plan, probe, transform, write, commit)
begins and ends and reports the Iceberg files it scanned and wrote.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol


class Recorder(Protocol):
    def phase(self, name: str) -> AbstractContextManager[None]: ...

    def read(self, rows: int, bytes_: int, files: int) -> None: ...

    def wrote(self, rows: int, bytes_: int, files: int, commits: int, partitions: int) -> None: ...

    def note(self, **info: Any) -> None: ...


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


FaultHook = Callable[[str], None]


def no_fault(point: str) -> None:
    """The default fault hook: every boundary passes."""
    return None
