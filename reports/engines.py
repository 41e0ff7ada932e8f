"""A sweep's points side by side, stage by stage: each stage's IPS/lookback ratio and where each
strategy's time goes (its phases), one column or table per point.

Written for comparing engines and write modes (DuckDB against Spark, copy-on-write against
merge-on-read), it reads only the sweep table, so any sweep gets it. Phases are wall seconds summed
over the measured days; ``other`` is the stage's wall time no phase claims (binding inputs, the
engine's own bookkeeping, reading snapshot summaries back).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from bench.contract import PHASES, TOTAL_STAGE, pct, pipeline_stages

# Beyond this many points, the per-point phase tables are left to each point's report.
MAX_PHASE_TABLES = 6
# What each phase holds on each engine: a reader needs this before comparing phase tables across engines.
PHASE_NOTE = (
    "DuckDB runs the stage SQL when it is asked for (the scan is inside `transform`); Spark builds a plan and "
    "runs it when the result is written, so on Spark a stage's scan and transform are counted in `write` "
    "(and in `probe` where a pattern materialises a join)."
)


def multi_valued(varied: dict[str, list[Any]]) -> list[str]:
    """The options a sweep varies over two or more values, in --vary order."""
    return [k for k, v in varied.items() if len(v) > 1]


def point_labels(summary: dict[str, Any]) -> dict[str, str]:
    """A short label per point: the values of the options that vary across points, in --vary order."""
    points = summary.get("points", [])
    varied = summary.get("varied", {})
    keys = multi_valued(varied) or list(varied)
    labels = {}
    for entry in points:
        values = entry.get("values", {})
        labels[entry["point"]] = " · ".join(str(values.get(k, "?")) for k in keys) or entry["point"]
    return labels


def _ratio(row: pd.Series, key: str) -> float | None:
    v = row.get(f"ips_over_lookback_{key}")
    return None if v is None or pd.isna(v) else float(v)


def stage_ratio_lines(df: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    """Rows = stage (and the total), columns = points; each cell IPS/lookback CPU, then wall in brackets."""
    labels = point_labels(summary)
    points = [p for p in labels if not df[(df.point == p) & (df.strategy == "ips")].empty]
    if not points:
        return []
    ips = df[df.strategy == "ips"]
    patterns = dict(zip(ips.stage, ips.pattern, strict=False))
    stages = [*pipeline_stages(df.stage), TOTAL_STAGE]
    lines = [
        "## IPS/lookback per stage and point",
        "",
        "CPU time ratio, wall time ratio in brackets (below 100 % IPS costs less); sums over the measured days.",
        "",
        "| stage | pattern | " + " | ".join(f"`{labels[p]}`" for p in points) + " |",
        "|---|---|" + "---:|" * len(points),
    ]
    for stage in stages:
        cells = []
        for p in points:
            rows = ips[(ips.point == p) & (ips.stage == stage)]
            if rows.empty:
                cells.append("–")
                continue
            r = rows.iloc[0]
            cells.append(f"{pct(_ratio(r, 'cpu_s'))} ({pct(_ratio(r, 'wall_s'))})")
        name = "**total**" if stage == TOTAL_STAGE else f"`{stage}`"
        pattern = "all" if stage == TOTAL_STAGE else str(patterns.get(stage, ""))
        lines.append(f"| {name} | {pattern} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _phase_seconds(row: pd.Series) -> dict[str, float]:
    """A row's phases (wall s), with ``other``: the wall time none of them claims (never below 0)."""
    out = {p: float(row.get(f"{p}_s") or 0.0) for p in PHASES}
    wall = float(row.get("wall_s") or 0.0)
    out["other"] = max(0.0, wall - sum(out.values()))
    return out


def phase_share_lines(df: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    """Per point and strategy, over all stages: each phase's share of the wall time."""
    labels = point_labels(summary)
    totals = df[(df.stage == TOTAL_STAGE) & df.wall_s.notna()]
    if totals.empty:
        return []
    names = [*PHASES, "other"]
    lines = [
        "## Where the time goes: phases per point",
        "",
        "Share of each strategy's wall time over all stages and measured days. " + PHASE_NOTE,
        "",
        "| point | strategy | wall s | CPU s | " + " | ".join(names) + " |",
        "|---|---|---:|---:|" + "---:|" * len(names),
    ]
    for p in labels:
        for strategy in ("lookback", "ips"):
            rows = totals[(totals.point == p) & (totals.strategy == strategy)]
            if rows.empty:
                continue
            r = rows.iloc[0]
            wall = float(r.wall_s)
            phases = _phase_seconds(r)
            shares = " | ".join(pct(phases[n] / wall if wall else None, 0) for n in names)
            lines.append(f"| `{labels[p]}` | {strategy} | {wall:.1f} | {float(r.cpu_s):.1f} | {shares} |")
    return [*lines, ""]


def phase_table_lines(df: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    """Per point, one table: rows = stage × strategy, columns = wall, CPU and each phase in seconds."""
    labels = point_labels(summary)
    stages = pipeline_stages(df.stage)
    names = [*PHASES, "other"]
    lines: list[str] = []
    for p, label in labels.items():
        rows = df[(df.point == p) & df.wall_s.notna()]
        if rows.empty:
            continue
        lines += [
            f"### Phases, `{label}` (wall s over the measured days)",
            "",
            "| stage | strategy | wall s | CPU s | " + " | ".join(names) + " |",
            "|---|---|---:|---:|" + "---:|" * len(names),
        ]
        for stage in [*stages, TOTAL_STAGE]:
            for strategy in ("lookback", "ips"):
                match = rows[(rows.stage == stage) & (rows.strategy == strategy)]
                if match.empty:
                    continue
                r = match.iloc[0]
                phases = _phase_seconds(r)
                cells = " | ".join(f"{phases[n]:.2f}" for n in names)
                name = "**total**" if stage == TOTAL_STAGE else f"`{stage}`"
                lines.append(f"| {name} | {strategy} | {float(r.wall_s):.2f} | {float(r.cpu_s):.2f} | {cells} |")
        lines.append("")
    return lines


def engines_lines(df: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    """The per-stage ratio table, the phase shares and (up to ``MAX_PHASE_TABLES`` points) one phase
    table per point; a longer sweep leaves those to each point's report."""
    measured = df[df.error.isna()] if "error" in df.columns else df
    ratios = stage_ratio_lines(measured, summary)
    if not ratios:
        return []
    lines = [*ratios, *phase_share_lines(measured, summary)]
    if len(point_labels(summary)) <= MAX_PHASE_TABLES:
        lines += phase_table_lines(measured, summary)
    else:
        lines += ["Each stage's phases are in each point's own report (linked in the points table).", ""]
    return lines
