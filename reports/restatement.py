"""The report's section on an upstream repopulation: what each strategy paid and did to carry it."""

from __future__ import annotations

from typing import Any


def _cost(c: dict[str, float] | None) -> str:
    if c is None:
        return "-"
    read, written = c["bytes_read"] / 1e6, c["bytes_written"] / 1e6
    return f"{c['wall_s']:.2f} s wall, {c['cpu_s']:.2f} s CPU, {read:.2f} MB read, {written:.2f} MB written"


def section(summary: dict[str, Any]) -> list[str]:
    """Markdown lines (none when the run had no repopulation)."""
    r = summary.get("restatement")
    if not r:
        return []
    first, last = r["repopulated_days"]
    if r.get("kind", "repopulation") == "repopulation":
        title = "Upstream repopulation"
        what = (
            f"On day {r['repopulate_day']} the source's event dates of days {first}..{last} were rewritten with "
            f"corrected view_seconds (one OVERWRITE: {_cost(r['source_rewrite'])})."
        )
    else:
        title = "Logic change"
        what = (
            f"From day {r['repopulate_day']} stage 1 caps view time at {r['new_view_seconds_cap']:,} on event dates "
            f"from day {first} on; that history (days {first}..{last}) is restated under it."
        )
    lines = [
        f"## {title}",
        "",
        f"{what} The lookback's window is {r['lookback_window_days']} days; its user's backfill: "
        f"{r['lookback_backfill']}.",
        "",
        "| strategy | user steps | that day's stages | excess over a median day | user backfills | carried | "
        "mismatched rows after (repopulation) |",
        "|---|---:|---|---|---|---|---:|",
    ]
    for strategy, s in r["per_strategy"].items():
        lines.append(
            f"| {strategy} | {s['user_steps']} | {_cost(s['day_cost'])} | {_cost(s['day_excess_over_median'])} | "
            f"{_cost(s['backfill_cost']) if s['user_steps'] else '-'} | {s['correct_from']} | "
            f"{s['mismatched_rows_after']:,} ({s['repopulation_explained_rows']:,}) |"
        )
    lines += [
        "",
        "IPS needs no step beyond the restatement itself (none for an upstream repopulation, one backfill for a "
        "logic change): its workflows capture the rewrite as rewritten partitions and recompute them down to the "
        "last stage. The lookback recomputes only its window; the restated dates it had left stay wrong "
        "(counted in brackets, explained by the restatement) unless its user backfills every stage in lineage "
        "order. Mismatches outside the brackets are late events beyond the window.",
        "",
    ]
    return lines
