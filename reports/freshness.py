"""The freshness section of a run's report, and what its schedule costs, from ``summary.json`` only."""

from __future__ import annotations

from typing import Any

from reports.style import count, plural


def duration(seconds: float | None) -> str:
    """A delay as a reader takes it in: seconds, minutes or hours."""
    if seconds is None:
        return "–"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3_600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3_600:.1f} h"


def _cells(figures: dict[str, Any]) -> str:
    return f"{duration(figures['p50_s'])} | {duration(figures['p95_s'])} | {duration(figures['max_s'])}"


def _schedule(fresh: dict[str, Any]) -> str:
    minutes = fresh["batch_minutes"]
    batches = "one arrival batch a day" if minutes == 1_440 else f"arrival batches of {minutes} minutes"
    lookback = "after every batch" if fresh.get("lookback_every_batch") else "once a day, after the day's last batch"
    return f"{batches}; IPS runs after every batch, the lookback {lookback}"


def section(summary: dict[str, Any]) -> list[str]:
    """Per strategy and table: freshness of on-time and late events, the late events never included."""
    fresh = summary.get("freshness")
    if not fresh or not fresh.get("per_strategy"):
        return []
    lines = [
        "## Freshness",
        "",
        f"Schedule: {_schedule(fresh)}. An event's freshness in a table is the simulated time from its "
        "arrival until the first run whose output includes it commits that table: a run starts when its "
        "batch closes (or when the previous run ends) and takes the time it measured. Events arriving "
        f"from day {fresh['events_from_day']} on (after the warm-up); late = arrived on a later date than "
        "its own; never = the lookback's window had left its date by its first run after the arrival.",
        "",
        "| strategy | table | on time: p50 | p95 | max | late: p50 | p95 | max | late never included |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for strategy, tables in fresh["per_strategy"].items():
        for table, figures in tables.items():
            late = figures["late"]
            lines.append(
                f"| {strategy} | {table} | {_cells(figures['on_time'])} | {_cells(late)} | "
                f"{count(late['never'])} of {count(late['events'])} |"
            )
    lines.append("")
    for strategy, late in fresh.get("late_to_last_stage", {}).items():
        lines.append(
            f"- {strategy}: a late event's correction reaches `{fresh['last_stage']}` after "
            f"{duration(late['p50_s'])} (median), {duration(late['p95_s'])} (p95), {duration(late['max_s'])} at "
            f"most; {count(late['never'])} of {count(late['events'])} late events never."
        )
    return [*lines, "", *_cadence_lines(summary)]


def _cadence_lines(summary: dict[str, Any]) -> list[str]:
    cadence = summary.get("cadence")
    if not cadence or not cadence.get("per_strategy"):
        return []
    lines = [
        "### What the schedule costs",
        "",
        f"Per simulated day over {plural(cadence['measured_days'], 'measured day')}, the pipeline stages only "
        "(upkeep apart).",
        "",
        "| strategy | runs a day | wall s a day | CPU s a day | run wall s (median) | run CPU s (median) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for strategy, f in cadence["per_strategy"].items():
        lines.append(
            f"| {strategy} | {f['runs_per_day']:.0f} | {f['wall_s_per_day']:.2f} | {f['cpu_s_per_day']:.2f} | "
            f"{f['run_wall_s_median']:.3f} | {f['run_cpu_s_median']:.3f} |"
        )
    ips = cadence["per_strategy"].get("ips", {})
    lines.append("")
    if ips.get("run_fixed_cpu_s") is not None:
        lines.append(
            f"- IPS's fixed cost of a run (CPU time of a run with nothing captured, fitted over its runs): "
            f"{ips['run_fixed_cpu_s']:.3f} s, plus {ips['run_cpu_s_per_1k_captured_rows']:.3f} s per 1,000 "
            "captured rows."
        )
    history = ips.get("capture_s_vs_history")
    if history and history.get("capture_ms_per_100_snapshots") is not None:
        lines.append(
            f"- IPS's capture per run against the source's history: {history['snapshots_min']}–"
            f"{history['snapshots_max']} snapshots retained, capture {history['capture_s_median']:.3f} s a run "
            f"(median), {history['capture_ms_per_100_snapshots']:+.0f} ms per 100 more snapshots (fitted)."
        )
    return [*lines, ""]
