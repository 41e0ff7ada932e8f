"""Lookback window arithmetic as exact tables of expected date ranges."""

from datetime import date

import pytest

from pipelines.lookback import window, window_dates


@pytest.mark.parametrize(
    ("processing_date", "lookback_days", "expected"),
    [
        (date(2026, 1, 14), 14, (date(2026, 1, 1), date(2026, 1, 14))),
        (date(2026, 1, 1), 14, (date(2025, 12, 19), date(2026, 1, 1))),
        (date(2026, 3, 1), 1, (date(2026, 3, 1), date(2026, 3, 1))),
        (date(2026, 3, 1), 2, (date(2026, 2, 28), date(2026, 3, 1))),
        (date(2024, 3, 1), 2, (date(2024, 2, 29), date(2024, 3, 1))),
        (date(2026, 1, 31), 30, (date(2026, 1, 2), date(2026, 1, 31))),
    ],
)
def test_window_bounds(processing_date: date, lookback_days: int, expected: tuple[date, date]) -> None:
    assert window(processing_date, lookback_days) == expected


@pytest.mark.parametrize(
    ("processing_date", "lookback_days", "expected"),
    [
        (date(2026, 1, 3), 3, [date(2026, 1, 1), date(2026, 1, 2), date(2026, 1, 3)]),
        (date(2026, 1, 1), 1, [date(2026, 1, 1)]),
        (date(2025, 1, 1), 2, [date(2024, 12, 31), date(2025, 1, 1)]),
    ],
)
def test_window_dates(processing_date: date, lookback_days: int, expected: list[date]) -> None:
    assert window_dates(processing_date, lookback_days) == expected


def test_window_rejects_empty() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        window(date(2026, 1, 1), 0)
