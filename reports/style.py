"""How every report draws and writes a figure: one colour per strategy in every plot, stage colours,
number formats and plurals."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from bench.contract import TOTAL_STAGE

# The one mapping every plot uses, so a strategy keeps its colour from plot to plot.
STRATEGY_COLORS = {"lookback": "tab:blue", "ips": "tab:orange"}
# Stages take these in pipeline order; none is a strategy's colour, so a stage line never reads as one.
_STAGE_PALETTE = ("tab:green", "tab:purple", "tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
LINESTYLES = ("-", "--", ":", "-.")


def stage_colors(stages: Iterable[str]) -> dict[str, str]:
    """A colour per stage, in the order given; the total is black."""
    pipeline = [s for s in stages if s != TOTAL_STAGE]
    colors = {s: _STAGE_PALETTE[i % len(_STAGE_PALETTE)] for i, s in enumerate(pipeline)}
    return {**colors, TOTAL_STAGE: "black"}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def count(v: Any) -> str:
    return "–" if _missing(v) else f"{int(v):,}"


def mib(v: Any) -> str:
    return "–" if _missing(v) else f"{v / 2**20:,.0f}"


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 measured day``, ``2 measured days``; ``many`` for a plural that is not noun + s."""
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"
