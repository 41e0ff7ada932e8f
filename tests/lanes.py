"""The fast lane's share of a parametrized test: a cover of its cases, the others marked slow.

`make check` runs the fewest cases that still name every value of every parameter;
`make test` runs them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest


def covered(cases: Sequence[tuple[Any, ...]]) -> list[Any]:
    """``cases`` as ``pytest.param``s, those outside a small cover of every value marked slow.

    First the cases whose every value is new (a diagonal), then one case for each value
    still missing, in the order given.
    """
    seen: list[set[Any]] = [set() for _ in cases[0]] if cases else []
    fast: set[int] = set()

    def take(i: int) -> None:
        fast.add(i)
        for column, value in zip(seen, cases[i], strict=True):
            column.add(value)

    for i, case in enumerate(cases):
        if all(value not in column for column, value in zip(seen, case, strict=True)):
            take(i)
    for i, case in enumerate(cases):
        if any(value not in column for column, value in zip(seen, case, strict=True)):
            take(i)
    return [pytest.param(*case, marks=() if i in fast else pytest.mark.slow) for i, case in enumerate(cases)]
