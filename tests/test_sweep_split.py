"""The sweep table carries, per IPS row, the in-window ratio, the older share and the distance from the floor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.contract import SUMMARY_JSON, TOTAL_STAGE
from bench.sweep import split_columns

# A real run's summary (make bench, committed): what each point's summary.json holds.
SUMMARY = Path(__file__).parent.parent / "results" / "2026-12-01-xeon-2core-small" / SUMMARY_JSON


@pytest.fixture(scope="module")
def summary() -> dict:
    return json.loads(SUMMARY.read_text())


def test_a_stage_row_takes_its_own_split_and_floor(summary: dict) -> None:
    for part in summary["split"]["per_stage"]:
        row = split_columns(summary, part["stage"])
        assert row["in_window_ips_over_lookback_wall_s"] == part["in_window"]["ratio_ips_over_lookback"]["wall_s"]
        assert row["older_share_of_ips_wall"] == part["older"]["share_of_ips_wall"]
        (floor,) = [f for f in summary["floor"] if f["stage"] == part["stage"]]
        assert row["ips_over_floor_rows_read"] == pytest.approx(floor["ips_over_floor"]["rows_read"])


def test_the_total_row_sums_every_pattern_against_every_floor(summary: dict) -> None:
    row = split_columns(summary, TOTAL_STAGE)
    assert (
        row["in_window_ips_over_lookback_wall_s"] == summary["split"]["in_window"]["ratio_ips_over_lookback"]["wall_s"]
    )
    ips = sum(f["ips"]["rows_read"] for f in summary["floor"])
    floor = sum(f["floor"]["rows_read"] for f in summary["floor"])
    assert row["ips_over_floor_rows_read"] == pytest.approx(ips / floor)
    assert 0 < row["older_share_of_ips_wall"] < 1


def test_a_summary_without_split_or_floor_leaves_the_columns_empty() -> None:
    assert set(split_columns({}, TOTAL_STAGE).values()) == {None}
    assert set(split_columns({"split": {"per_stage": []}, "floor": []}, "playback_daily").values()) == {None}
