"""The sweep report's per-stage comparison of points (engines, write modes): ratio and phase tables
from a hand-built sweep table, and re-rendering through ``ipsbench report``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.cli import main
from bench.contract import PHASES, TOTAL_STAGE, pct
from bench.sweep import sweep_frame
from reports.engines import MAX_PHASE_TABLES, engines_lines, point_labels
from reports.sweep import render_sweep

STAGES = {"playback_daily": "merge", "playback_daily_agg": "filter"}
VARIED = {"engine": ["duckdb", "spark"], "merge_mode": ["copy-on-write", "merge-on-read"]}


def _phases(wall: float, shares: dict[str, float]) -> dict[str, float]:
    return {f"{p}_s": wall * shares.get(p, 0.0) for p in PHASES}


def _grid() -> tuple[list[dict[str, Any]], dict[str, Any], dict[tuple[str, str, str], dict[str, float]]]:
    """Four points; each (point, strategy, stage) gets its own wall, CPU and phase split.

    Returns the rows, the sweep summary and the figures by (point, strategy, stage) to check against.
    """
    rows: list[dict[str, Any]] = []
    points: list[dict[str, Any]] = []
    figures: dict[tuple[str, str, str], dict[str, float]] = {}
    index = 0
    for engine in VARIED["engine"]:
        for mode in VARIED["merge_mode"]:
            values = {"engine": engine, "merge_mode": mode}
            name = ",".join(f"{k}={v}" for k, v in values.items())
            points.append({"point": name, "dir": f"points/{name}", "values": values, "passed": True})
            base = {
                "point": name,
                "point_index": index,
                "preset": "medium",
                "engine": engine,
                "repeats": 1,
                "measured_days": 2,
                "days": 16,
                "warmup_days": 14,
                "passed": True,
            }
            # Spark's transform runs inside the write: put its time there, DuckDB's in transform.
            heavy = "write" if engine == "spark" else "transform"
            per_strategy: dict[str, dict[str, float]] = {}
            for strategy in ("lookback", "ips"):
                sums = {"wall_s": 0.0, "cpu_s": 0.0, **{f"{p}_s": 0.0 for p in PHASES}}
                for j, stage in enumerate(STAGES):
                    wall = 10.0 * (index + 1) + 3.0 * j + (7.0 if strategy == "lookback" else 0.0)
                    cpu = 1.5 * wall + j
                    split = {"capture": 0.05, "probe": 0.2, heavy: 0.5} if strategy == "ips" else {heavy: 0.8}
                    fig = {"wall_s": wall, "cpu_s": cpu, **_phases(wall, split)}
                    figures[(name, strategy, stage)] = fig
                    for k, v in fig.items():
                        sums[k] += v
                    rows.append(
                        {
                            **base,
                            "strategy": strategy,
                            "stage": stage,
                            "pattern": STAGES[stage] if strategy == "ips" else "lookback",
                            **fig,
                        }
                    )
                figures[(name, strategy, TOTAL_STAGE)] = sums
                per_strategy[strategy] = sums
                rows.append({**base, "strategy": strategy, "stage": TOTAL_STAGE, "pattern": "all", **sums})
            for row in rows:
                if row["point"] == name and row["strategy"] == "ips":
                    lb = figures[(name, "lookback", row["stage"])]
                    row["ips_over_lookback_wall_s"] = row["wall_s"] / lb["wall_s"]
                    row["ips_over_lookback_cpu_s"] = row["cpu_s"] / lb["cpu_s"]
            index += 1
    summary = {
        "varied": VARIED,
        "scenario": {"preset": "medium", "events_per_day": 1_000_000, "repeats": 1},
        "engine": "duckdb",
        "machine": {},
        "complete": True,
        "passed": True,
        "points": points,
    }
    return rows, summary, figures


def _write(out: Path) -> dict[tuple[str, str, str], dict[str, float]]:
    rows, summary, figures = _grid()
    out.mkdir()
    sweep_frame(rows).to_parquet(out / "sweep_results.parquet", index=False)
    (out / "sweep_summary.json").write_text(json.dumps(summary))
    return figures


def _table_row(text: str, start: str) -> list[str]:
    [line] = [line for line in text.splitlines() if line.startswith(start)]
    return [c.strip() for c in line.strip("|").split("|")]


def test_labels_name_the_varied_values() -> None:
    _, summary, _ = _grid()
    labels = point_labels(summary)
    assert labels["engine=spark,merge_mode=merge-on-read"] == "spark · merge-on-read"
    assert list(labels) == [p["point"] for p in summary["points"]]


def test_each_stage_has_every_points_cpu_and_wall_ratio(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    figures = _write(out)
    text = render_sweep(out).read_text().split("## IPS/lookback per stage and point")[1].split("## Where")[0]
    header = _table_row(text, "| stage | pattern |")
    labels = point_labels(_grid()[1])
    assert header[2:] == [f"`{label}`" for label in labels.values()]
    for stage in (*STAGES, TOTAL_STAGE):
        cells = _table_row(text, "| **total** |" if stage == TOTAL_STAGE else f"| `{stage}` | {STAGES[stage]} |")
        for point, cell in zip(labels, cells[2:], strict=True):
            ips, lb = figures[(point, "ips", stage)], figures[(point, "lookback", stage)]
            assert cell == f"{pct(ips['cpu_s'] / lb['cpu_s'])} ({pct(ips['wall_s'] / lb['wall_s'])})"


def test_phase_tables_give_each_phase_and_what_none_claims(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    figures = _write(out)
    text = render_sweep(out).read_text()
    point = "engine=spark,merge_mode=copy-on-write"
    section = text.split("### Phases, `spark · copy-on-write`")[1].split("###")[0]
    for stage in STAGES:
        for strategy in ("lookback", "ips"):
            fig = figures[(point, strategy, stage)]
            cells = _table_row(section, f"| `{stage}` | {strategy} |")
            phases = [fig[f"{p}_s"] for p in PHASES]
            other = fig["wall_s"] - sum(phases)
            assert cells[2:] == [f"{v:.2f}" for v in (fig["wall_s"], fig["cpu_s"], *phases, other)]
    # The shares table: Spark's IPS spends half its wall in write, DuckDB's half in transform.
    shares = text.split("## Where the time goes")[1].split("###")[0]
    header = _table_row(shares, "| point | strategy |")
    spark = dict(zip(header, _table_row(shares, "| `spark · copy-on-write` | ips |"), strict=True))
    duck = dict(zip(header, _table_row(shares, "| `duckdb · copy-on-write` | ips |"), strict=True))
    assert (spark["write"], spark["transform"], spark["other"]) == ("50 %", "0 %", "25 %")
    assert (duck["write"], duck["transform"]) == ("0 %", "50 %")


def test_report_rerenders_from_result_files_and_skips_axis_plots_for_engines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    _write(out)
    assert main(["report", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "## IPS/lookback per stage and point" in text and "cost_vs_engine" not in text
    assert "Which pattern saves most?" in text and (out / "ratio_per_pattern.png").stat().st_size > 0
    assert "report:" in capsys.readouterr().out


def test_a_failed_point_and_a_long_sweep(tmp_path: Path) -> None:
    rows, summary, _ = _grid()
    failed = "engine=spark,merge_mode=merge-on-read"
    for row in rows:
        if row["point"] == failed:
            for k in list(row):
                if k.endswith("_s"):
                    row[k] = None
            row["error"] = "Py4JJavaError: java.lang.OutOfMemoryError: Java heap space"
    df = sweep_frame(rows)
    text = "\n".join(engines_lines(df, summary))
    assert "`spark · merge-on-read`" not in _table_row(text, "| stage | pattern |")
    assert "### Phases, `spark · merge-on-read`" not in text
    many = {**summary, "points": summary["points"] * (MAX_PHASE_TABLES // 4 + 1)}
    many["points"] = [{**p, "point": f"{p['point']}#{i}"} for i, p in enumerate(many["points"])]
    assert "### Phases" not in "\n".join(engines_lines(df, many))
