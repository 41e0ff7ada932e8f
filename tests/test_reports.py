"""Report rendering from synthetic result files: crossover arithmetic, sweep plots, Netflix claims."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from bench.contract import TOTAL_STAGE
from bench.sweep import sweep_frame
from reports.crossover import Crossing, crossings, describe, use_log_scale
from reports.netflix import claims
from reports.render import render
from reports.sweep import render_sweep

STAGES = {"playback_daily": "merge", "playback_daily_agg": "filter", "title_daily_rank": "range"}


def test_crossing_is_interpolated_linearly_between_points() -> None:
    [c] = crossings([0.01, 0.1], [0.5, 1.5])
    assert c.x == pytest.approx(0.055) and c.upward
    # Unsorted input, a NaN skipped, a ratio of exactly 1 at a measured point.
    assert crossings([0.3, 0.1, 0.2, 0.05], [1.4, 0.8, 1.0, math.nan]) == [Crossing(x=0.2, upward=True)]


def test_crossing_in_log_space_is_the_geometric_interpolation() -> None:
    [c] = crossings([0.001, 0.1], [0.5, 1.5], log_x=True)
    assert c.x == pytest.approx(0.01) and c.upward


def test_every_crossing_is_reported_with_its_direction() -> None:
    found = crossings([1, 2, 3, 4], [0.5, 1.5, 0.5, 2.5])
    assert [(pytest.approx(c.x), c.upward) for c in found] == [(1.5, True), (2.5, False), (3.25, True)]
    assert crossings([1, 2], [0.5, 0.9]) == [] and crossings([1, 2], [1.0, 3.0]) == []


def test_describe_says_never_always_or_where() -> None:
    assert "IPS cheaper over the whole range measured (1–2)" in describe([1, 2], [0.5, 0.9])
    assert "IPS never cheaper in the range measured (1–2)" in describe([1, 2], [1.0, 3.0])
    assert describe([1, 3], [0.5, 1.5]) == "IPS stops beating the lookback at 2"
    assert describe([1], [math.nan]) == "no ratio measured"


def test_log_scale_only_for_wide_positive_ranges() -> None:
    assert use_log_scale([0.001, 0.01, 0.5])
    assert not use_log_scale([0.01, 0.1]) and not use_log_scale([0, 1, 100]) and not use_log_scale([5])


def _sweep_rows(
    late_fractions: list[float],
    ratios: dict[str, list[float]],
    lookback_days: int = 7,
    lookback_wall: float = 10.0,
    start_index: int = 0,
) -> list[dict[str, Any]]:
    """Rows of a synthetic sweep with the given IPS/lookback wall ratio per stage at each late fraction."""
    rows = []
    for i, lf in enumerate(late_fractions):
        name = f"late_fraction={lf},lookback_days={lookback_days}"
        base = {
            "point": name,
            "point_index": start_index + i,
            "preset": "tiny",
            "engine": "duckdb",
            "repeats": 1,
            "measured_days": 4,
            "late_fraction": lf,
            "lookback_days": lookback_days,
            "events_per_day": 2000,
            "beyond_window_share": 0.15,
            "max_lateness_days": 15,
            "duplicate_fraction": 0.02,
            "malformed_fraction": 0.01,
            "days": 6,
            "warmup_days": 2,
            "seed": 42,
            "passed": True,
        }
        for strategy in ("lookback", "ips"):
            for stage in (*STAGES, TOTAL_STAGE):
                ratio = ratios[stage][i]
                wall = lookback_wall * (ratio if strategy == "ips" else 1.0)
                wrong = 0 if strategy == "ips" else int(1000 * lf / lookback_days)
                rows.append(
                    {
                        **base,
                        "strategy": strategy,
                        "stage": stage,
                        "pattern": (
                            "all" if stage == TOTAL_STAGE else STAGES[stage] if strategy == "ips" else strategy
                        ),
                        "wall_s": wall,
                        "cpu_s": wall,
                        "rows_read": 100,
                        "bytes_read": 1000,
                        "rows_written": 10,
                        "ips_over_lookback_wall_s": ratio if strategy == "ips" else None,
                        "equal_to_oracle": wrong == 0,
                        "mismatched_rows": wrong,
                        "unexplained_mismatched_rows": 0,
                        "late_events_beyond_window": wrong // 3,
                        "peak_rss_bytes": 300 * 2**20,
                    }
                )
    return rows


def _write_sweep(out: Path, rows: list[dict[str, Any]], varied: dict[str, list[Any]]) -> None:
    out.mkdir()
    sweep_frame(rows).to_parquet(out / "sweep_results.parquet", index=False)
    points = list(dict.fromkeys(r["point"] for r in rows))
    summary = {
        "varied": varied,
        "scenario": {"preset": "tiny", "events_per_day": 2000, "repeats": 1},
        "engine": "duckdb",
        "machine": {},
        "complete": True,
        "passed": True,
        "points": [
            {"point": p, "dir": f"points/{p}", "values": {}, "passed": True, "peak_rss_bytes": 1} for p in points
        ],
    }
    (out / "sweep_summary.json").write_text(json.dumps(summary))


# Ratios chosen so the crossovers are known: filter reaches 1 a quarter of the way from 0.05 to 0.1
# (0.0625), range half way from 0.01 to 0.05 (0.03), MERGE never; 0.01–0.1 is drawn on a linear axis.
LATE = [0.01, 0.05, 0.1]
RATIOS = {
    "playback_daily": [0.3, 0.5, 0.8],
    "playback_daily_agg": [0.5, 0.9, 1.3],
    "title_daily_rank": [0.8, 1.2, 1.6],
    TOTAL_STAGE: [0.5, 0.8, 1.0],
}


def test_sweep_report_prints_interpolated_crossovers(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    _write_sweep(out, _sweep_rows(LATE, RATIOS), {"late_fraction": LATE, "lookback_days": [7]})
    text = render_sweep(out).read_text()
    assert "| all points | playback_daily_agg (filter) | IPS stops beating the lookback at 0.0625 (6.25 %) |" in text
    assert "| all points | title_daily_rank (range) | IPS stops beating the lookback at 0.03 (3 %) |" in text
    assert "| all points | playback_daily (merge) | IPS cheaper over the whole range measured" in text
    assert "| all points | total | IPS stops beating the lookback at 0.1 (10 %) |" in text
    assert "in log(late fraction)" not in text
    for plot in ("ratio_vs_late_fraction.png", "ratio_per_pattern.png"):
        assert (out / plot).stat().st_size > 0 and f"]({plot})" in text
    assert "cost_vs_lookback_days.png" not in text  # one window value: nothing to plot against


def test_two_dimensional_sweep_plots_window_cost_and_accuracy_per_facet(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    rows = _sweep_rows(LATE, RATIOS, lookback_days=7, lookback_wall=10.0)
    # A longer window: the lookback costs twice as much, IPS the same, so every ratio halves.
    halved = {k: [r / 2 for r in v] for k, v in RATIOS.items()}
    rows += _sweep_rows(LATE, halved, lookback_days=14, lookback_wall=20.0, start_index=3)
    _write_sweep(out, rows, {"late_fraction": LATE, "lookback_days": [7, 14]})
    text = render_sweep(out).read_text()
    assert (
        "| lookback_days=7 | playback_daily_agg (filter) | IPS stops beating the lookback at 0.0625 (6.25 %) |" in text
    )
    assert "| lookback_days=14 | title_daily_rank (range) | IPS cheaper over the whole range measured" in text
    for plot in ("cost_vs_lookback_days.png", "accuracy_vs_lookback_days.png", "ratio_vs_late_fraction.png"):
        assert (out / plot).is_file() and f"]({plot})" in text


def _run_dir(out: Path, wall: dict[tuple[str, str], list[float]], peak: Any = None) -> Path:
    """A synthetic run directory: two measured days, one warm-up day, len(walls) repeats."""
    out.mkdir()
    rows = []
    for (strategy, stage), per_repeat in wall.items():
        for repeat, w in enumerate(per_repeat):
            for day in range(3):
                rows.append(
                    {
                        "day": day,
                        "warmup": day == 0,
                        "strategy": strategy,
                        "stage": stage,
                        "pattern": STAGES[stage] if strategy == "ips" else "lookback",
                        "repeat": repeat,
                        "wall_s": w / 2,
                        "cpu_s": w / 2,
                    }
                )
    df = pd.DataFrame(rows)
    df.to_parquet(out / "results.parquet", index=False)
    stages = []
    for (strategy, stage), per_repeat in wall.items():
        median = float(pd.Series(per_repeat).median())
        stages.append(
            {
                "strategy": strategy,
                "stage": stage,
                "pattern": STAGES[stage] if strategy == "ips" else "lookback",
                "wall_s": median,
                "cpu_s": median,
                "rows_read": 1,
                "partitions_written": 5 if strategy == "lookback" else 3,
                "wall_s_min": min(per_repeat),
                "wall_s_max": max(per_repeat),
            }
        )
    summary = {
        "scenario": {
            "preset": "tiny",
            "warmup_days": 1,
            "events_per_day": 2000,
            "late_fraction": 0.05,
            "beyond_window_share": 0.15,
            "lookback_days": 5,
            "max_lateness_days": 15,
            "seed": 42,
        },
        "engine": "duckdb",
        "measured_days": 2,
        "totals": {},
        "ratio_ips_over_lookback": {},
        "stages": stages,
        "correctness": {"ips": {"equal_to_oracle": True, "mismatched_rows": 0}},
        "peak_rss_bytes": peak,
    }
    (out / "summary.json").write_text(json.dumps(summary))
    return out


def _walls(ips: dict[str, list[float]], lookback: float = 10.0) -> dict[tuple[str, str], list[float]]:
    repeats = len(next(iter(ips.values())))
    return {
        **{("lookback", s): [lookback] * repeats for s in STAGES},
        **{("ips", s): v for s, v in ips.items()},
    }


def test_netflix_claims_are_judged_from_the_data(tmp_path: Path) -> None:
    held = _run_dir(
        tmp_path / "held", _walls({"playback_daily": [0.5], "playback_daily_agg": [1.0], "title_daily_rank": [5.0]})
    )
    text = render(held).read_text()
    assert "**4 of 4 published qualitative claims held in this run:**" in text
    assert "| stage 1 (MERGE) | 7 h → ~30 min | 7.1 % | 5.0 % | 5.0 % |" in text
    # Range cheaper than filter: the QCon ranking does not hold, and stage 2 is no saving.
    failed = _run_dir(
        tmp_path / "failed", _walls({"playback_daily": [5.0], "playback_daily_agg": [12.0], "title_daily_rank": [2.0]})
    )
    found = {c.claim: c.held for c in claims(json.loads((failed / "summary.json").read_text()))}
    assert found["the MERGE and filter patterns save more than the range pattern (QCon)"] is False
    assert found["IPS runs stage 1 (MERGE) in a fraction of the lookback's time"] is True
    assert found["IPS runs stage 2 (filter) in a fraction of the lookback's time"] is False
    assert (
        "**did not hold** (IPS/lookback wall: MERGE 50.0 %, filter 120.0 %, range 20.0 %)" in render(failed).read_text()
    )


def test_repeats_show_median_and_min_max_and_peak_memory(tmp_path: Path) -> None:
    out = _run_dir(
        tmp_path / "run",
        _walls(
            {
                "playback_daily": [3.0, 5.0, 4.0],
                "playback_daily_agg": [1.0, 1.0, 1.0],
                "title_daily_rank": [2.0, 2.0, 2.0],
            }
        ),
        peak={"lookback": 100 * 2**20, "ips": 250 * 2**20},
    )
    text = render(out).read_text()
    assert "## Spread over 3 repeats" in text
    # The first repeat (3.0 s) is cold: kept apart from the median over the warm ones.
    assert "| ips | playback_daily | 4.50 (4.00–5.00) | 4.50 (4.00–5.00) | 3.00 | 3.00 |" in text
    assert "| ips | total | 7.50 (7.00–8.00) | 7.50 (7.00–8.00) | 6.00 | 6.00 |" in text
    assert "| ips | 250 |" in text and "| lookback | 100 |" in text
    assert "band: min" not in text  # the band is in the plot title, not the report
    single = render(_run_dir(tmp_path / "one", _walls({s: [1.0] for s in STAGES}), peak=123 * 2**20)).read_text()
    assert "Spread over" not in single and "Peak RSS of the run's process: 123 MiB" in single


def test_seed_is_drawn_on_a_categorical_axis() -> None:
    import matplotlib.pyplot as plt

    from reports.sweep import _axis, x_positions

    assert x_positions("seed", [1000, 1, 7]) == {1: 0.0, 7: 1.0, 1000: 2.0}
    assert x_positions("lookback_days", [14, 7]) == {14: 14.0, 7: 7.0}
    fig, ax = plt.subplots()
    _axis(ax, "seed", [1000, 1, 7])
    assert list(ax.get_xticks()) == [0, 1, 2]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "7", "1000"]
    plt.close(fig)


def test_one_measured_day_is_singular(tmp_path: Path) -> None:
    out = _run_dir(tmp_path / "run", _walls({s: [1.0] for s in STAGES}))
    summary = json.loads((out / "summary.json").read_text())
    (out / "summary.json").write_text(json.dumps({**summary, "measured_days": 1}))
    assert "Scenario `tiny`: 1 measured day (+1 warm-up day), 2,000 events/day" in render(out).read_text()


def test_each_strategy_keeps_its_colour_in_every_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import to_rgba

    from reports.style import STRATEGY_COLORS

    figures: list[Any] = []
    monkeypatch.setattr(plt, "close", figures.append)
    render(_run_dir(tmp_path / "run", _walls({s: [1.0, 2.0] for s in STAGES})))
    sweep = tmp_path / "sweep"
    halved = {k: [r / 2 for r in v] for k, v in RATIOS.items()}
    rows = _sweep_rows(LATE, RATIOS) + _sweep_rows(LATE, halved, lookback_days=14, lookback_wall=20.0, start_index=3)
    _write_sweep(sweep, rows, {"late_fraction": LATE, "lookback_days": [7, 14]})
    render_sweep(sweep)
    seen: dict[str, set[tuple[float, ...]]] = {}
    for fig in figures:
        for ax in fig.axes:
            for artist in [*ax.lines, *ax.patches]:
                strategy = str(artist.get_label()).split(" ")[0].split(":")[0].lower()
                if strategy in STRATEGY_COLORS:
                    color = artist.get_color() if hasattr(artist, "get_color") else artist.get_facecolor()
                    seen.setdefault(strategy, set()).add(to_rgba(color))
    # Lines and bars of both strategies in the run's plots and the sweep's cost and accuracy plots.
    assert len(figures) == 6
    assert seen == {s: {to_rgba(c)} for s, c in STRATEGY_COLORS.items()}


def _with_floor_and_split(out: Path, older_wall: float, wrong: dict[str, int]) -> Path:
    """A synthetic run directory whose summary carries the floor and the window split of its stages."""
    summary = json.loads((out / "summary.json").read_text())
    figures = ("rows_read", "bytes_read", "rows_written", "bytes_written")
    by = {(s["strategy"], s["stage"]): s for s in summary["stages"]}
    floor = []
    for i, (stage, pattern) in enumerate(STAGES.items()):
        base = {k: 100 * (i + 1) * (j + 1) for j, k in enumerate(figures)}
        ips = {k: v * (i + 2) for k, v in base.items()}
        lookback = {k: v * 3 for k, v in base.items()}
        floor.append(
            {
                "stage": stage,
                "pattern": pattern,
                "floor": base,
                "ips": ips,
                "lookback": lookback,
                "ips_over_floor": {k: ips[k] / base[k] for k in figures},
                "lookback_over_floor": {k: lookback[k] / base[k] for k in figures},
                "ips_days_below_floor": 0,
            }
        )

    def side(strategy: str, stage: str | None, older: bool) -> dict[str, float]:
        stages = [stage] if stage else list(STAGES)
        wall = sum(by[(strategy, s)]["wall_s"] for s in stages)
        share = older_wall / sum(by[("ips", s)]["wall_s"] for s in STAGES) if older else 0.0
        base = wall * share if older else wall - (older_wall if strategy == "ips" and stage is None else 0.0)
        return {"wall_s": base, "cpu_s": base, **{k: int(1000 * base) for k in figures}}

    def entry(stage: str | None) -> dict[str, Any]:
        ips, lookback, older = side("ips", stage, False), side("lookback", stage, False), side("ips", stage, True)
        return {
            "in_window": {
                "ips": ips,
                "lookback": lookback,
                "ratio_ips_over_lookback": {k: ips[k] / lookback[k] for k in ips},
            },
            "older": {"ips": older, "share_of_ips_wall": older["wall_s"] / (ips["wall_s"] + older["wall_s"])},
            "lookback_wrong_rows": wrong[stage] if stage else sum(wrong.values()),
        }

    split = {
        "window_days": summary["scenario"]["lookback_days"],
        **entry(None),
        "per_stage": [{"stage": s, "pattern": p, **entry(s)} for s, p in STAGES.items()],
    }
    (out / "summary.json").write_text(json.dumps({**summary, "floor": floor, "split": split}))
    return out


def test_report_opens_with_the_in_window_ratio_the_price_of_correctness_and_the_floor(tmp_path: Path) -> None:
    wrong = {"playback_daily": 12, "playback_daily_agg": 30, "title_daily_rank": 7}
    out = _with_floor_and_split(
        _run_dir(tmp_path / "run", _walls({s: [w] for s, w in zip(STAGES, (4.0, 6.0, 2.0), strict=True)})),
        older_wall=3.0,
        wrong=wrong,
    )
    summary = json.loads((out / "summary.json").read_text())
    text = render(out).read_text()
    first = text.split("## Totals")[0]
    sp = summary["split"]
    in_window = sp["in_window"]["ratio_ips_over_lookback"]["wall_s"]
    # Independently: IPS 12 s in all, 3 s of it on older partitions; the lookback 30 s.
    assert in_window == pytest.approx((12.0 - 3.0) / 30.0)
    assert f"IPS costs {100 * in_window:.1f} % of the lookback's wall time" in first
    assert f"IPS spent 3.00 s wall ({100 * 3.0 / 12.0:.1f} % of its wall time)" in first
    assert f"they fix the {sum(wrong.values())} rows the lookback leaves wrong" in first
    # Distance from the floor per pattern: IPS reads (i + 2) times the floor of stage i, the lookback 3 times.
    assert "merge 2.0× (lookback 3.0×), filter 3.0× (lookback 3.0×), range 4.0× (lookback 3.0×)" in first
    assert "## Saving and the price of correctness" in text and "## Against the floor" in text
    assert "| playback_daily_agg | filter | rows written | 600 | 1,800 | 1,800 | 3.0× | 3.0× |" in text
    assert f"| title_daily_rank | range | {100 * 2.0 / 10.0:.1f} % |" in text
    # A summary without them (older result files) renders as before, with no headline lines.
    plain = render(_run_dir(tmp_path / "plain", _walls({s: [1.0] for s in STAGES}))).read_text()
    assert "Distance from the floor" not in plain and "## Against the floor" not in plain
