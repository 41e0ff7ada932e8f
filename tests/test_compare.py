"""``ipsbench compare``: two hand-built summaries, every figure and change exact."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from reports.compare import Line, NotAResult, change, compare, format_table, read_summary, scenario_changes


def summary(lookback_wall: float, ips_wall: float, unexplained: int, events_per_day: int = 2000) -> dict[str, Any]:
    def stage(strategy: str, wall: float, **extra: Any) -> dict[str, Any]:
        return {"strategy": strategy, "stage": "playback_daily", "pattern": "merge", "wall_s": wall,
                "cpu_s": 2 * wall, "rows_read": 1000, "bytes_read": 0, **extra}  # fmt: skip

    ratio = {"wall_s": ips_wall / lookback_wall, "cpu_s": ips_wall / lookback_wall}
    return {
        "scenario": {"preset": "tiny", "events_per_day": events_per_day},
        "totals": {
            "lookback": {"wall_s": lookback_wall, "cpu_s": 2 * lookback_wall, "rows_read": 1000, "bytes_read": 0},
            "ips": {"wall_s": ips_wall, "cpu_s": 2 * ips_wall, "rows_read": 1000, "bytes_read": 0},
        },
        "ratio_ips_over_lookback": ratio,
        "stages": [stage("lookback", lookback_wall), stage("ips", ips_wall, ratio_over_lookback=ratio)],
        "correctness": {
            "ips": {"equal_to_oracle": True, "mismatched_rows": 0},
            "lookback": {"equal_to_oracle": False, "mismatched_rows": 40, "unexplained_mismatched_rows": unexplained},
        },
    }


OLD = summary(lookback_wall=10.0, ips_wall=2.0, unexplained=0)
NEW = summary(lookback_wall=8.0, ips_wall=3.0, unexplained=2, events_per_day=4000)


def test_every_figure_old_new_and_relative_change() -> None:
    lines = {(x.strategy, x.stage, x.figure): x for x in compare(OLD, NEW)}
    assert lines[("lookback", "playback_daily", "wall_s")] == Line(
        "lookback", "playback_daily", "wall_s", 10.0, 8.0, -0.2
    )
    assert lines[("ips", "playback_daily", "cpu_s")] == Line("ips", "playback_daily", "cpu_s", 4.0, 6.0, 0.5)
    total_ratio = lines[("ips", "total", "ips/lookback wall_s")]
    assert (total_ratio.old, total_ratio.new) == (0.2, 0.375) and total_ratio.change == pytest.approx(0.875)
    # No change is computed from a zero or for a verdict.
    assert lines[("ips", "total", "bytes_read")].change is None
    assert lines[("lookback", "verdict", "unexplained_mismatched_rows")] == Line(
        "lookback", "verdict", "unexplained_mismatched_rows", 0, 2, None
    )
    assert ("ips", "verdict", "unexplained_mismatched_rows") not in lines
    # Stages in order, each strategy's total after its stages, verdicts last.
    assert [k for k in lines if k[0] == "lookback"][:5] == [
        ("lookback", "playback_daily", "wall_s"),
        ("lookback", "playback_daily", "cpu_s"),
        ("lookback", "playback_daily", "rows_read"),
        ("lookback", "playback_daily", "bytes_read"),
        ("lookback", "total", "wall_s"),
    ]


def test_table_text() -> None:
    text = format_table(compare(OLD, NEW), scenario_changes(OLD, NEW)).splitlines()
    assert text[0] == "scenario differs: events_per_day 2000 -> 4000"
    assert text[1].split() == ["strategy", "stage", "figure", "old", "new", "change"]
    rows = [line.split("  ") for line in text[2:]]
    cells = [[c.strip() for c in r if c.strip()] for r in rows]
    assert ["lookback", "playback_daily", "wall_s", "10.000", "8.000", "-20.0 %"] in cells
    assert ["ips", "playback_daily", "ips/lookback wall_s", "20.0 %", "37.5 %", "+87.5 %"] in cells
    assert ["ips", "total", "rows_read", "1,000", "1,000", "+0.0 %"] in cells
    assert ["ips", "verdict", "equal_to_oracle", "yes", "yes", "same"] in cells
    assert ["lookback", "verdict", "unexplained_mismatched_rows", "0", "2", "CHANGED"] in cells
    assert len({len(line) for line in text[1:]}) == 1  # fixed width


def test_change_is_relative_to_old() -> None:
    assert change(4.0, 5.0) == 0.25 and change(4, 3) == -0.25
    assert change(0, 5) is None and change(None, 5) is None and change(True, False) is None


def test_reads_a_directory_or_its_summary_file(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text(json.dumps(OLD))
    assert read_summary(tmp_path) == OLD == read_summary(tmp_path / "summary.json")
    (tmp_path / "other.json").write_text(json.dumps({"scenario": {}}))
    with pytest.raises(NotAResult, match="not an ipsbench run summary"):
        read_summary(tmp_path / "other.json")


def test_command_prints_the_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, s in (("old", OLD), ("new", NEW)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(s))
    assert main(["compare", str(tmp_path / "old"), str(tmp_path / "new" / "summary.json")]) == 0
    out = capsys.readouterr().out
    assert "scenario differs: events_per_day 2000 -> 4000" in out and "-20.0 %" in out


def test_command_refuses_a_path_without_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipsbench: error:") and "summary.json" in err and err.count("\n") == 1
