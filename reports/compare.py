"""Two runs' summaries side by side, stage by stage: old and new figures with the relative change.

As DuckDB's regression runner sets an old and a new build's timings side by
side, ``ipsbench compare OLD NEW`` does so for two result directories (or
committed ``results/<date>-<machine>/summary.json`` files). Pure: summaries
in, lines out; only ``read_summary`` touches a file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contract import STRATEGIES, SUMMARY_JSON, TOTAL_STAGE, pct

# Per stage and strategy total: the figures compared, and how each is printed.
STAGE_FIGURES = ("wall_s", "cpu_s", "rows_read", "bytes_read")
RATIO_FIGURES = ("wall_s", "cpu_s")
VERDICT_FIGURES = ("equal_to_oracle", "mismatched_rows", "unexplained_mismatched_rows")
# Scenario fields that make two runs measure different things when they differ.
SCENARIO_FIELDS = ("preset", "days", "warmup_days", "events_per_day", "late_fraction", "lookback_days", "engine")

Value = float | int | bool | None


class NotAResult(ValueError):
    """The path holds no readable summary.json."""


@dataclass(frozen=True)
class Line:
    """One figure of one (strategy, stage) in both runs; ``change`` is (new - old) / old."""

    strategy: str
    stage: str
    figure: str
    old: Value
    new: Value
    change: float | None


def read_summary(path: Path) -> dict[str, Any]:
    """The summary of a run directory, or the summary file itself."""
    file = path / SUMMARY_JSON if path.is_dir() else path
    try:
        summary = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise NotAResult(f"{file} is not a readable {SUMMARY_JSON}: {e}") from None
    missing = [k for k in ("totals", "stages", "correctness") if not isinstance(summary, dict) or k not in summary]
    if missing:
        raise NotAResult(f"{file} is not an ipsbench run summary (no {missing[0]})")
    return summary


def change(old: Value, new: Value) -> float | None:
    """The relative change; None for a verdict, a missing side, or an old figure of 0."""
    if isinstance(old, bool) or isinstance(new, bool) or old is None or new is None or old == 0:
        return None
    return (new - old) / old


def _line(strategy: str, stage: str, figure: str, old: Value, new: Value) -> Line:
    return Line(strategy, stage, figure, old, new, change(old, new))


def _figures(summary: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (strategy, stage), the stage's figures; the strategy's totals as its TOTAL_STAGE."""
    out = {(s["strategy"], s["stage"]): s for s in summary["stages"]}
    for strategy, totals in summary["totals"].items():
        out[(strategy, TOTAL_STAGE)] = {**totals, "ratio_over_lookback": summary.get("ratio_ips_over_lookback", {})}
    return out


def compare(old: dict[str, Any], new: dict[str, Any]) -> list[Line]:
    """Every figure both runs can have, per strategy and stage (in the new run's order), then the verdicts."""
    before, after = _figures(old), _figures(new)
    keys = list(dict.fromkeys([*after, *before]))
    lines = []
    for strategy in STRATEGIES:
        for key in (k for k in keys if k[0] == strategy):
            a, b = before.get(key, {}), after.get(key, {})
            lines += [_line(*key, f, a.get(f), b.get(f)) for f in STAGE_FIGURES]
            if strategy == "ips":
                ra, rb = a.get("ratio_over_lookback") or {}, b.get("ratio_over_lookback") or {}
                lines += [_line(*key, f"ips/lookback {f}", ra.get(f), rb.get(f)) for f in RATIO_FIGURES]
        verdict_old = old["correctness"].get(strategy, {})
        verdict_new = new["correctness"].get(strategy, {})
        if verdict_old or verdict_new:
            lines += [
                _line(strategy, "verdict", f, verdict_old.get(f), verdict_new.get(f))
                for f in VERDICT_FIGURES
                if f in verdict_old or f in verdict_new
            ]
    return lines


def scenario_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The scenario fields that differ: the two runs did not measure the same thing there."""
    a, b = old.get("scenario", {}), new.get("scenario", {})
    return [f"{k} {a.get(k)} -> {b.get(k)}" for k in SCENARIO_FIELDS if a.get(k) != b.get(k)]


def _show(figure: str, v: Value) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if figure.startswith("ips/lookback"):
        return pct(v)
    if figure.endswith("_s"):
        return f"{v:.3f}"
    return f"{int(v):,}"


def _show_change(line: Line) -> str:
    if line.change is not None:
        return f"{100 * line.change:+.1f} %"
    if line.old is None or line.new is None:
        return "–"
    return "same" if line.old == line.new else "CHANGED"


def format_table(lines: list[Line], notes: list[str] | None = None) -> str:
    """The lines as a fixed-width text table, with any scenario differences above it."""
    head = ("strategy", "stage", "figure", "old", "new", "change")
    rows = [
        (x.strategy, x.stage, x.figure, _show(x.figure, x.old), _show(x.figure, x.new), _show_change(x)) for x in lines
    ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    text = [
        "  ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
        for r in (head, *rows)
    ]
    warnings = [f"scenario differs: {n}" for n in notes or []]
    return "\n".join([*warnings, *text])
