"""Where a cost ratio crosses 1: the point at which IPS stops (or starts) beating the lookback.

A tiny pure module (no plotting, no files) so its arithmetic has its own tests.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

# Above this max/min spread a sweep axis is drawn, and interpolated, on a log scale.
LOG_SPREAD = 20.0


@dataclass(frozen=True)
class Crossing:
    """The ratio passes 1 at ``x``; ``upward`` when IPS stops beating the lookback there."""

    x: float
    upward: bool


def use_log_scale(xs: Sequence[float]) -> bool:
    """Whether values spread widely enough (and are all positive) to be read on a log axis."""
    positive = [x for x in xs if x > 0]
    return len(positive) == len(xs) >= 2 and max(positive) / min(positive) >= LOG_SPREAD


def crossings(xs: Sequence[float], ratios: Sequence[float], log_x: bool = False) -> list[Crossing]:
    """Every x at which ``ratios`` passes 1, linearly interpolated between measured points.

    Points are sorted by x; NaN ratios are skipped. "Below" means ratio < 1 (IPS
    cheaper); a crossing is any change between below and not below, so a ratio
    of exactly 1 at a measured point is a crossing at that point.

    Args:
        xs: the varied value of each point.
        ratios: IPS/lookback cost at each point.
        log_x: interpolate linearly in log(x), as on a log-scaled axis.

    Returns:
        The crossings in increasing x.
    """
    points = sorted((x, r) for x, r in zip(xs, ratios, strict=True) if not math.isnan(r))
    found = []
    for (x0, r0), (x1, r1) in itertools.pairwise(points):
        if (r0 < 1) == (r1 < 1):
            continue
        found.append(Crossing(x=_between(x0, x1, (1 - r0) / (r1 - r0), log_x), upward=r1 >= 1))
    return found


def _between(x0: float, x1: float, t: float, log_x: bool) -> float:
    if log_x:
        return math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
    return x0 + t * (x1 - x0)


def describe(
    xs: Sequence[float], ratios: Sequence[float], log_x: bool = False, fmt: Callable[[float], str] = "{:g}".format
) -> str:
    """One phrase: where IPS stops beating the lookback, or that it never/always does in range."""
    valid = [(x, r) for x, r in zip(xs, ratios, strict=True) if not math.isnan(r)]
    if not valid:
        return "no ratio measured"
    lo, hi = fmt(min(x for x, _ in valid)), fmt(max(x for x, _ in valid))
    found = crossings(xs, ratios, log_x)
    if not found:
        if all(r < 1 for _, r in valid):
            return f"IPS cheaper over the whole range measured ({lo}–{hi}): no crossover"
        return f"IPS never cheaper in the range measured ({lo}–{hi}): no crossover"
    parts = [f"{'stops' if c.upward else 'starts'} beating the lookback at {fmt(c.x)}" for c in found]
    return "IPS " + ", then ".join(parts)
