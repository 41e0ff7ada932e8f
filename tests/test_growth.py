"""The day-by-day section of the report: the lookback's wrong rows per stage as days pass (``--check daily``)."""

from __future__ import annotations

from typing import Any

from reports import growth


def _check(day: int, wrong: dict[str, int], unexplained: int = 0) -> dict[str, Any]:
    per_stage = {s: {"mismatched_rows": n, "unexplained_mismatched_rows": 0} for s, n in wrong.items()}
    lookback: dict[str, Any] = {"equal_to_oracle": False, "mismatched_rows": sum(wrong.values())}
    lookback |= {"unexplained_mismatched_rows": unexplained, "per_stage": per_stage}
    ips = {"equal_to_oracle": True, "mismatched_rows": 0, "per_stage": {}}
    return {"day": day, "lookback": lookback, "ips": ips}


def _summary(checks: list[dict[str, Any]]) -> dict[str, Any]:
    return {"scenario": {"start_date": "2026-01-01"}, "daily_checks": checks}


def test_no_daily_checks_no_section() -> None:
    assert growth.section(_summary([])) == []
    assert growth.section({"scenario": {"start_date": "2026-01-01"}}) == []


def test_every_stage_gets_a_column_and_its_growth_per_day() -> None:
    # The cumulative stage's error carries forward: it grows by 7 rows a day; the daily stage's stays flat.
    checks = [_check(d, {"daily": 30, "cumulative": 7 * d}) for d in range(3, 9)]
    text = "\n".join(growth.section(_summary(checks)))
    assert "| day | date | daily | cumulative | unexplained | IPS equal |" in text
    assert "| 8 | 2026-01-09 | 30 | 56 | 0 | True |" in text
    assert "- `cumulative`: 21 wrong rows after day 3, 56 after day 8 (+7 a day)." in text
    assert "- `daily`: 30 wrong rows after day 3, 30 after day 8 (+0 a day)." in text


def test_a_long_run_is_sampled_and_always_shows_its_last_day() -> None:
    checks = [_check(d, {"s": d}) for d in range(45)]
    rows = [line for line in growth.section(_summary(checks)) if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) <= growth.SAMPLED_DAYS + 1
    assert rows[0].startswith("| 0 |") and rows[-1].startswith("| 44 |")
