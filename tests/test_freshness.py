"""Freshness arithmetic on hand-built schedules: every expected figure is worked out by hand below."""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pytest

from bench.freshness import (
    Arrivals,
    Run,
    commit_times,
    delays,
    first_arrivals,
    first_runs,
    stats,
    strategy_freshness,
)
from reports.freshness import duration, section

HOUR = 3_600.0
DAY = 86_400.0


def test_runs_start_at_their_batch_close_or_after_the_previous_run() -> None:
    runs = [
        Run(0, 0, (("a", 100.0), ("b", 50.0))),  # batch 0 closes at 3600: commits 3700, 3750
        Run(1, 0, (("a", 4000.0), ("b", 10.0))),  # closes at 7200, free then: 11200, 11210
        Run(2, 0, (("a", 5.0), ("b", 5.0))),  # closes at 10800 but the previous run ends at 11210
    ]
    assert commit_times(runs, HOUR).tolist() == [[3700.0, 3750.0], [11200.0, 11210.0], [11215.0, 11220.0]]


def test_ips_includes_an_event_at_the_first_run_after_its_batch() -> None:
    runs = [Run(0, 0, (("a", 100.0), ("b", 50.0))), Run(1, 0, (("a", 4000.0), ("b", 10.0)))]
    # Batches 0, 0, 1, and 2 (after the last run: never).
    events = Arrivals(np.array([0.0, 3599.0, 3600.0, 7200.0]), np.zeros(4, dtype=np.int64))
    assert first_runs(runs, HOUR, events, None).tolist() == [0, 0, 1, -1]
    got = delays(runs, HOUR, events, None)
    expected = [[3700.0, 3750.0], [101.0, 151.0], [11200.0 - 3600.0, 11210.0 - 3600.0], [np.nan, np.nan]]
    np.testing.assert_array_equal(got, np.array(expected))


def lookback_runs() -> list[Run]:
    # Daily batches; run d after day d's batch, 60 s of one stage: commits at (d + 1) days + 60 s.
    return [Run(d, d, (("a", 60.0),)) for d in range(4)]


def lookback_events() -> Arrivals:
    return Arrivals(
        np.array(
            [
                DAY + HOUR,  # on time: arrives day 1, dated day 1
                2 * DAY,  # late: arrives day 2, dated day 1 (window of day 2 is [1, 2])
                3 * DAY + 100.0,  # late beyond the window: window of day 3 is [2, 3]
                1_000.0,  # ahead: arrives day 0, dated day 2
            ]
        ),
        np.array([1, 1, 1, 2]),
    )


def test_the_lookback_includes_an_event_once_its_window_holds_its_date() -> None:
    events = lookback_events()
    assert first_runs(lookback_runs(), DAY, events, 2).tolist() == [1, 2, -1, 2]
    got = delays(lookback_runs(), DAY, events, 2)[:, 0]
    expected = [2 * DAY + 60 - (DAY + HOUR), 3 * DAY + 60 - 2 * DAY, np.nan, 3 * DAY + 60 - 1_000.0]
    np.testing.assert_array_equal(got, np.array(expected))
    assert events.late.tolist() == [False, True, True, False]


def test_figures_on_time_and_late_apart() -> None:
    freshness = strategy_freshness(lookback_runs(), DAY, {"src": lookback_events()}, {"a": ("src",)}, 2)
    on_time = [2 * DAY + 60 - (DAY + HOUR), 3 * DAY + 60 - 1_000.0]  # 82860 and 258260
    assert freshness["a"]["on_time"] == {
        "events": 2,
        "never": 0,
        "p50_s": (on_time[0] + on_time[1]) / 2,
        # Linear between the two values: 95 % of the way.
        "p95_s": pytest.approx(on_time[0] + 0.95 * (on_time[1] - on_time[0])),
        "max_s": on_time[1],
    }
    late = DAY + 60
    assert freshness["a"]["late"] == {"events": 2, "never": 1, "p50_s": late, "p95_s": late, "max_s": late}
    assert freshness["a"]["all"]["events"] == 4 and freshness["a"]["all"]["never"] == 1


def test_a_table_counts_the_events_of_every_source_reaching_it() -> None:
    runs = [Run(0, 0, (("first", 10.0), ("both", 20.0)))]
    one = Arrivals(np.array([100.0]), np.array([0]))
    other = Arrivals(np.array([200.0, 300.0]), np.array([0, 0]))
    got = strategy_freshness(runs, HOUR, {"s1": one, "s2": other}, {"first": ("s1",), "both": ("s1", "s2")}, None)
    # "first" commits at 3610, "both" at 3630.
    assert got["first"]["all"] == {"events": 1, "never": 0, "p50_s": 3510.0, "p95_s": 3510.0, "max_s": 3510.0}
    assert got["both"]["all"]["events"] == 3
    assert got["both"]["all"]["max_s"] == 3630.0 - 100.0 and got["both"]["all"]["p50_s"] == 3630.0 - 200.0


def test_no_event_seen_gives_no_figures() -> None:
    assert stats(np.array([np.nan, np.nan])) == {"events": 2, "never": 2, "p50_s": None, "p95_s": None, "max_s": None}


def test_an_event_counts_once_from_its_first_arrival_after_the_warm_up() -> None:
    def ts(day: int, hour: int) -> datetime:
        return datetime(2026, 1, 1 + day, hour, tzinfo=UTC)

    rows = pa.table(
        {
            "event_id": ["e1", "e1", "e2", "e3"],
            "event_ts": [ts(0, 1), ts(0, 1), ts(0, 2), ts(1, 3)],
            # e1 is re-sent on day 1 after arriving on day 0; e2 arrives in the warm-up only.
            "ingest_ts": [ts(1, 2), ts(0, 5), ts(0, 6), ts(1, 4)],
        }
    )
    got = first_arrivals(rows, date(2026, 1, 1), from_day=0)
    order = np.argsort(got.arrival_s)
    assert got.arrival_s[order].tolist() == [5 * HOUR, 6 * HOUR, DAY + 4 * HOUR]
    assert got.event_day[order].tolist() == [0, 0, 1]
    after_warm_up = first_arrivals(rows, date(2026, 1, 1), from_day=1)
    assert after_warm_up.arrival_s.tolist() == [DAY + 4 * HOUR] and after_warm_up.event_day.tolist() == [1]


def test_runs_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="follow one another"):
        first_runs([Run(1, 0, ()), Run(1, 0, ())], HOUR, Arrivals(np.array([0.0]), np.array([0])), None)


def test_durations_read_in_seconds_minutes_or_hours() -> None:
    assert [duration(s) for s in (None, 59.6, 600.0, 3 * HOUR)] == ["–", "60 s", "10 min", "3.0 h"]


def test_the_report_section_shows_every_table_and_the_late_correction() -> None:
    tables = strategy_freshness(lookback_runs(), DAY, {"src": lookback_events()}, {"a": ("src",)}, 2)
    summary = {
        "freshness": {
            "batch_minutes": 1440,
            "events_from_day": 0,
            "per_strategy": {"lookback": tables},
            "last_stage": "a",
            "late_to_last_stage": {"lookback": tables["a"]["late"]},
        }
    }
    text = "\n".join(section(summary))
    # The late event seen: 1 day + 60 s = 24.0 h; one of the two late events never included.
    assert "| lookback | a |" in text and "1 of 2 |" in text
    assert "reaches `a` after 24.0 h (median)" in text
    assert section({"freshness": None}) == []
