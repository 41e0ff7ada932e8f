"""The saving apart from the price of correctness, and every pattern against its floor.

From ``summary.json``'s ``split`` and ``floor`` only (``bench.results`` computes
them from the rows each pattern recorded): the headline lines a report opens
with, and the two sections that detail them.
"""

from __future__ import annotations

from typing import Any

from bench.contract import FLOOR_FIGURES, PATTERNS, pct, ratio
from reports.style import count, plural

SIDE_FIGURES = ("wall_s", "cpu_s", "rows_read", "bytes_read", "rows_written", "bytes_written")
FIGURE_NAMES = {"rows_read": "rows read", "bytes_read": "bytes read", "rows_written": "rows written"}
FIGURE_NAMES |= {"bytes_written": "bytes written", "wall_s": "wall", "cpu_s": "CPU"}


def times(v: float | None) -> str:
    """A multiple of the floor for a report: ``3.2×``; a dash when there is none."""
    return "–" if v is None or v != v else f"{v:.1f}×"


def seconds(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f} s"


def by_pattern(floor: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per IPS pattern (in ``PATTERNS`` order): its stages' floor, IPS and lookback figures, summed."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for pattern in PATTERNS:
        stages = [s for s in floor if s["pattern"] == pattern]
        if stages:
            out[pattern] = {
                who: {k: float(sum((s[who] or {}).get(k) or 0 for s in stages)) for k in FLOOR_FIGURES}
                for who in ("floor", "ips", "lookback")
            }
    return out


def headline(summary: dict[str, Any]) -> list[str]:
    """The report's first lines: the in-window ratio, the older corrections apart, the distance from the floor."""
    lines = []
    sp = summary.get("split") or {}
    if sp:
        r = sp["in_window"]["ratio_ips_over_lookback"]
        lines.append(
            f"- **Saving, inside the lookback's {sp['window_days']}-day window**: IPS costs {pct(r['wall_s'])} of "
            f"the lookback's wall time (CPU {pct(r['cpu_s'])}, rows read {pct(r['rows_read'])}, "
            f"bytes read {pct(r['bytes_read'])})."
        )
        older, wrong = sp["older"]["ips"], sp.get("lookback_wrong_rows")
        fixes = (
            f"they fix the {count(wrong)} rows the lookback leaves wrong at the end of the run"
            if wrong is not None
            else "the lookback's wrong rows were not counted"
        )
        lines.append(
            f"- **Price of correctness, older partitions** (work the lookback never does): IPS spent "
            f"{seconds(older['wall_s'])} wall ({pct(sp['older']['share_of_ips_wall'])} of its wall time), "
            f"{seconds(older['cpu_s'])} CPU, read {count(older['rows_read'])} rows and wrote "
            f"{count(older['rows_written'])}; {fixes}."
        )
    patterns = by_pattern(summary.get("floor") or [])
    if patterns:
        parts = [
            f"{p} {times(ratio(f['ips']['rows_read'], f['floor']['rows_read']))}"
            + (
                f" (lookback {times(ratio(f['lookback']['rows_read'], f['floor']['rows_read']))})"
                if f["lookback"]["rows_read"]
                else ""
            )
            for p, f in patterns.items()
        ]
        lines.append(f"- **Distance from the floor** (rows read / the pattern's floor rows): {', '.join(parts)}.")
    return [*lines, ""] if lines else []


def split_section(summary: dict[str, Any]) -> list[str]:
    """Per stage: IPS's work in the window over the lookback's, and its work on older partitions."""
    sp = summary.get("split") or {}
    if not sp:
        return []
    lines = [
        "## Saving and the price of correctness",
        "",
        f"Work on partitions inside the lookback's {plural(sp['window_days'], 'day')} up to each processing date "
        "(and on later dates) is compared with the lookback's; work on older partitions is what IPS pays to correct "
        "what the lookback never revisits. Rows and bytes are counted on the partitions they lie in; an engine "
        "call handles both sides at once, so its wall and CPU time are split by the share of rows read and "
        "written on each side. Wrong rows: the lookback's mismatches with the oracle at the end of the run.",
        "",
        "| stage | pattern | in window: IPS/lookback wall | CPU | rows read | older: IPS wall s | CPU s | rows read "
        "| rows written | share of IPS wall | lookback's wrong rows |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in [*sp["per_stage"], {"stage": "all stages", "pattern": "", **sp}]:
        r, older = s["in_window"]["ratio_ips_over_lookback"], s["older"]["ips"]
        lines.append(
            f"| {s['stage']} | {s['pattern']} | {pct(r['wall_s'])} | {pct(r['cpu_s'])} | {pct(r['rows_read'])} | "
            f"{seconds(older['wall_s'])} | {seconds(older['cpu_s'])} | {count(older['rows_read'])} | "
            f"{count(older['rows_written'])} | {pct(s['older']['share_of_ips_wall'])} | "
            f"{count(s.get('lookback_wrong_rows'))} |"
        )
    return [*lines, ""]


def floor_section(summary: dict[str, Any]) -> list[str]:
    """Per stage: the floor beside what IPS and the lookback read and wrote, rows and bytes."""
    floor = summary.get("floor") or []
    if not floor:
        return []
    lines = [
        "## Against the floor",
        "",
        "The floor is the work a pattern cannot avoid for each day's changes: MERGE reads the captured rows and "
        "writes the missing ones; filter reads the changed keys' rows and writes their aggregates; range reads and "
        "writes the changed partitions; forward reads each changed account's rows from its earliest changed date "
        "(and its carried total) and writes its rows from there. Floor rows are counted exactly, floor bytes are "
        "those rows at their partitions' average bytes per row. Sums over measured days; × = over the floor. The "
        "lookback can come in under a floor: it skips the older partitions the floor includes.",
        "",
        "| stage | pattern | figure | floor | IPS | lookback | IPS × | lookback × |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for s in floor:
        for k in FLOOR_FIGURES:
            lookback = s["lookback"] or {}
            lines.append(
                f"| {s['stage']} | {s['pattern']} | {FIGURE_NAMES[k]} | {count(s['floor'][k])} | {count(s['ips'][k])} "
                f"| {count(lookback.get(k))} | {times(s['ips_over_floor'][k])} | "
                f"{times((s['lookback_over_floor'] or {}).get(k))} |"
            )
    return [*lines, ""]
