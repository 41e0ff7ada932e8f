"""How the rows a lookback leaves wrong grow as days pass (``--check daily``).

From ``summary.json``'s ``daily_checks`` only: after every processing day the
runner compared each strategy with the oracle; this section gives, per stage,
the lookback's mismatched rows on a sample of those days and how fast they grew.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from reports.style import count

# Rows of the day-by-day table: at most this many (evenly spaced, the last day always shown).
SAMPLED_DAYS = 10


def _sample(days: list[int]) -> list[int]:
    if len(days) <= SAMPLED_DAYS:
        return days
    step = -(-len(days) // SAMPLED_DAYS)
    picked = days[::step]
    return picked if picked[-1] == days[-1] else [*picked, days[-1]]


def section(summary: dict[str, Any]) -> list[str]:
    """The day-by-day section; nothing when the run checked only at the end."""
    checks = [c for c in summary.get("daily_checks") or [] if "lookback" in c]
    if not checks:
        return []
    stages = list(checks[-1]["lookback"]["per_stage"])
    start = date.fromisoformat(summary["scenario"]["start_date"])
    by_day = {c["day"]: c for c in checks}
    lines = [
        "## Rows the lookback leaves wrong, day by day",
        "",
        "Checked against the oracle after every processing day (mismatched rows per table; "
        "none of them unexplained unless the last column says so).",
        "",
        "| day | date | " + " | ".join(stages) + " | unexplained | IPS equal |",
        "|---:|---|" + "---:|" * len(stages) + "---:|---|",
    ]
    for day in _sample(sorted(by_day)):
        lb = by_day[day]["lookback"]
        ips = by_day[day].get("ips")
        cells = [count(lb["per_stage"][s]["mismatched_rows"]) for s in stages]
        lines.append(
            f"| {day} | {start + timedelta(days=day)} | "
            + " | ".join(cells)
            + f" | {count(lb['unexplained_mismatched_rows'])} | {'–' if ips is None else ips['equal_to_oracle']} |"
        )
    lines.append("")
    first, last = checks[0], checks[-1]
    span = last["day"] - first["day"]
    if span > 0:
        for s in stages:
            a = first["lookback"]["per_stage"][s]["mismatched_rows"]
            b = last["lookback"]["per_stage"][s]["mismatched_rows"]
            lines.append(
                f"- `{s}`: {count(a)} wrong rows after day {first['day']}, {count(b)} after day {last['day']} "
                f"({(b - a) / span:+,.0f} a day)."
            )
        lines.append("")
    return lines
