"""``ipsbench sweep`` end to end on the tiny preset, its result contract, and bad --vary input."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bench.cli import BadInput, build_parser, main
from bench.sweep import parse_vary, plan_points
from bench.validate import validate
from pipelines.catalog import open_catalog
from pipelines.iceberg_io import live_files
from pipelines.pipeline import STAGES

TINY = ["--preset", "tiny", "--days", "6", "--warmup-days", "2", "--quiet"]
# Where only the sweep's bookkeeping is tested (which warehouses are dropped), not what
# the points measure: three days, late rows merged from day 1 on.
SHORT = ["--preset", "tiny", "--days", "3", "--warmup-days", "1", "--quiet"]
VARY = ["--vary", "late-fraction=0.02,0.2", "--vary", "lookback_days=5"]
POINTS = ("late_fraction=0.02,lookback_days=5", "late_fraction=0.2,lookback_days=5")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, str]:
    out = tmp_path_factory.mktemp("sweeps") / "sweep"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["sweep", "--out", str(out), *VARY, *TINY])
    return out, code, err.getvalue()


@pytest.mark.slow
def test_tiny_sweep_follows_the_contract(tiny_sweep: tuple[Path, int, str]) -> None:
    out, code, stderr = tiny_sweep
    assert code == 0, stderr
    assert validate(out) == []
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["varied"] == {"late_fraction": [0.02, 0.2], "lookback_days": [5]}
    assert summary["complete"] and summary["passed"]
    assert [p["point"] for p in summary["points"]] == list(POINTS)
    for point in POINTS:
        assert (out / "points" / point / "summary.json").is_file()
        assert (out / "points" / point / "warehouse" / "catalog.db").is_file()
        assert f"{point}: passed in" in stderr
    df = pd.read_parquet(out / "sweep_results.parquet")
    assert len(df) == 2 * 2 * (len(STAGES) + 1)  # points, strategies, every stage and a total
    assert sorted(df.late_fraction.unique()) == [0.02, 0.2]
    ips = df[df.strategy == "ips"]
    assert ips.ips_over_lookback_wall_s.notna().all() and ips.equal_to_oracle.all()
    assert set(ips.pattern) == {"merge", "filter", "range", "forward", "all"}
    lookback_total = df[(df.strategy == "lookback") & (df.stage == "total")]
    assert (lookback_total.unexplained_mismatched_rows == 0).all()
    # The late-fraction point with more late data leaves more rows wrong in the lookback.
    assert lookback_total.sort_values("late_fraction").mismatched_rows.is_monotonic_increasing
    report = (out / "report.md").read_text()
    assert "Where incremental stops paying off" in report
    for plot in ("ratio_vs_late_fraction.png", "ratio_per_pattern.png"):
        assert f"![{plot}]({plot})" in report and (out / plot).is_file()


@pytest.mark.slow
def test_each_points_warehouse_stays_inside_its_directory(tiny_sweep: tuple[Path, int, str]) -> None:
    points = tiny_sweep[0] / "points"
    assert sorted(p.name for p in points.iterdir()) == list(POINTS)
    for point in POINTS:
        warehouse = (points / point / "warehouse").resolve()
        catalog = open_catalog(warehouse)
        names = [".".join(t) for ns in catalog.list_namespaces() for t in catalog.list_tables(ns)]
        assert len(names) >= 1 + 2 * len(STAGES)
        for name in names:
            table = catalog.load_table(name)
            # Every table's metadata and every file its current snapshot holds live in this point's warehouse.
            paths = [table.metadata_location, *(f.file_path for f in live_files(table))]
            outside = [p for p in paths if not Path(p.removeprefix("file://")).resolve().is_relative_to(warehouse)]
            assert outside == [], (point, name, outside[:3])


@pytest.mark.slow
def test_drop_warehouses_keeps_results_and_deletes_passed_points_warehouses(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["sweep", "--out", str(out), *SHORT, "--vary", "seed=1,2", "--drop-warehouses"])
    assert code == 0 and validate(out) == []
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert [p.get("warehouse_dropped") for p in summary["points"]] == [True, True]
    for point in ("seed=1", "seed=2"):
        assert not (out / "points" / point / "warehouse").exists()
        assert (out / "points" / point / "results.parquet").is_file()
    # Two points, two strategies, every stage and a total.
    assert len(pd.read_parquet(out / "sweep_results.parquet")) == 2 * 2 * (len(STAGES) + 1)


@pytest.mark.slow
def test_drop_warehouses_keeps_a_failing_points_warehouse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.execute

    real = bench.execute.run_scenario

    def verdict_failed(*args, **kwargs):
        summary, report, _ = real(*args, **kwargs)
        return summary, report, False

    monkeypatch.setattr("bench.execute.run_scenario", verdict_failed)
    out = tmp_path / "sweep"
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["sweep", "--out", str(out), *SHORT, "--vary", "seed=1", "--drop-warehouses"])
    assert code == 1
    assert (out / "points" / "seed=1" / "warehouse" / "catalog.db").is_file()
    assert "warehouse_dropped" not in json.loads((out / "sweep_summary.json").read_text())["points"][0]


def test_report_of_a_directory_without_results_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no result files" in capsys.readouterr().err


@pytest.mark.slow
def test_report_rerenders_a_sweep_from_result_files_only(tiny_sweep: tuple[Path, int, str]) -> None:
    out = tiny_sweep[0]
    points_before = {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*")}
    for generated in ("report.md", "ratio_vs_late_fraction.png", "ratio_per_pattern.png"):
        (out / generated).unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file() and (out / "ratio_per_pattern.png").is_file()
    assert {p: p.stat().st_mtime_ns for p in (out / "points").rglob("*")} == points_before
    assert validate(out) == []


@pytest.mark.slow
def test_validator_flags_a_broken_sweep_table(tiny_sweep: tuple[Path, int, str], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(tiny_sweep[0], broken, ignore=shutil.ignore_patterns("warehouse"))
    df = pd.read_parquet(broken / "sweep_results.parquet")
    df.loc[0, "wall_s"] = -1.0
    df = pd.concat([df, df.iloc[[1]]], ignore_index=True).drop(columns="cpu_s")
    df.to_parquet(broken / "sweep_results.parquet", index=False)
    problems = validate(broken)
    assert "sweep results lack column cpu_s" in problems
    df["cpu_s"] = 0.0
    df.to_parquet(broken / "sweep_results.parquet", index=False)
    problems = validate(broken)
    assert "sweep column wall_s has negative values" in problems
    assert "more than one row per (point, strategy, stage)" in problems
    assert "sweep_results.csv and sweep_results.parquet differ in rows" in problems


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--vary", "bogus=1,2"], "cannot vary 'bogus'"),
        (["--vary", "late_fraction"], "--vary takes NAME=V1,V2,..."),
        (["--vary", "late_fraction=0.1,abc"], "late_fraction takes numbers, got 'abc'"),
        (["--vary", "lookback_days=3,1.5"], "lookback_days takes whole numbers, got '1.5'"),
        (["--vary", "late_fraction=0.1,"], "late_fraction takes numbers, got ''"),
        (["--vary", "late_fraction=0.1,0.10"], "lists a value twice"),
        (["--vary", "late-fraction=0.1", "--vary", "late_fraction=0.2"], "late_fraction is given twice"),
        (["--vary", "late_fraction=0.1,1.5"], "sweep point late_fraction=1.5: late-fraction must be in [0, 1)"),
        (["--vary", "max_lateness_days=15,3"], "sweep point max_lateness_days=3: beyond-window-share > 0 needs"),
        (["--late-fraction", "0.1", "--vary", "late_fraction=0.2"], "--late-fraction is set and also varied"),
        (["--vary", "merge_mode=copy-on-write,in-place"], "sweep point merge_mode=in-place: merge mode must be one of"),
        (["--vary", "engine=duckdb,flink"], "sweep point engine=flink: unknown engine 'flink'"),
        (["--events", "missing.parquet", "--vary", "late_fraction=0.2"], "--events fixes the data"),
    ],
)
def test_bad_vary_exits_2_and_creates_nothing(
    options: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), *TINY, *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ipsbench: error: ") and err.count("\n") == 1 and message in err, err
    assert not out.exists()


def test_sweep_into_a_non_empty_dir_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["sweep", "--out", str(tmp_path), *TINY, "--vary", "late_fraction=0.1"]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def _args(*options: str) -> argparse.Namespace:
    return build_parser().parse_args(["sweep", "--out", "unused", *TINY, *options, "--vary", "seed=1"])


def test_parse_vary_types_values_and_accepts_dashes() -> None:
    varied = parse_vary(["events-per-day=1000,2000", "late_fraction=0.001,0.5", "max_lateness_days=20"])
    assert varied == {"events_per_day": (1000, 2000), "late_fraction": (0.001, 0.5), "max_lateness_days": (20,)}
    assert all(type(v) is int for v in varied["events_per_day"])
    with pytest.raises(BadInput):
        parse_vary(["=1"])


def test_plan_points_is_the_cartesian_product_in_vary_order() -> None:
    varied = parse_vary(["lookback_days=3,5", "late_fraction=0.01,0.1,0.3"])
    points = plan_points(_args(), varied)
    assert [p.name for p in points][:4] == [
        "lookback_days=3,late_fraction=0.01",
        "lookback_days=3,late_fraction=0.1",
        "lookback_days=3,late_fraction=0.3",
        "lookback_days=5,late_fraction=0.01",
    ]
    assert len(points) == 6
    assert {(p.scenario.lookback_days, p.scenario.late_fraction) for p in points} == {
        (x, f) for x in (3, 5) for f in (0.01, 0.1, 0.3)
    }
    # Options not varied come from the preset and the command line.
    assert {p.scenario.days for p in points} == {6} and {p.scenario.preset for p in points} == {"tiny"}


@pytest.mark.slow
def test_sweep_over_a_users_events_file_varies_the_window(tmp_path: Path) -> None:
    from tests.test_cli import sample_events, write_events

    path = write_events(tmp_path / "events.parquet", sample_events())
    out = tmp_path / "sweep"
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["sweep", "--out", str(out), "--events", str(path), "--warmup-days", "0", "--quiet",
                     "--vary", "lookback_days=2,4"])  # fmt: skip
    assert code == 0 and validate(out) == []
    df = pd.read_parquet(out / "sweep_results.parquet")
    lookback = df[(df.strategy == "lookback") & (df.stage == "total")].set_index("lookback_days")
    # u2 arrives 3 days late: beyond a 2-day window, inside a 4-day one.
    assert lookback.late_events_beyond_window.to_dict() == {2: 1, 4: 0}
    assert set(df.days) == {3}
    report = (out / "report.md").read_text()
    assert "cost_vs_lookback_days.png" in report and "accuracy_vs_lookback_days.png" in report


@pytest.mark.slow
def test_sweep_over_the_write_mode(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    with contextlib.redirect_stderr(io.StringIO()):
        code = main(["sweep", "--out", str(out), *SHORT, "--vary", "merge_mode=copy-on-write,merge-on-read"])
    assert code == 0 and validate(out) == []
    df = pd.read_parquet(out / "sweep_results.parquet")
    assert sorted(set(df.merge_mode)) == ["copy-on-write", "merge-on-read"]
    # Merge-on-read writes position deletes instead of rewriting the files it touches.
    written = df[(df.strategy == "ips") & (df.stage == "total")].set_index("merge_mode").bytes_written
    assert written["merge-on-read"] < written["copy-on-write"]
    assert "`merge_mode=merge-on-read`" in (out / "report.md").read_text()


def test_a_point_that_raises_is_recorded_not_dropped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr("bench.execute.run_scenario", crash)
    out = tmp_path / "sweep"
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["sweep", "--out", str(out), *TINY, "--vary", "seed=1,2"])
    assert code == 1
    assert "seed=1: FAILED (RuntimeError: disk full)" in err.getvalue()
    assert validate(out) == []
    summary = json.loads((out / "sweep_summary.json").read_text())
    assert summary["complete"] and not summary["passed"]
    assert [p["error"] for p in summary["points"]] == ["RuntimeError: disk full"] * 2
    df = pd.read_parquet(out / "sweep_results.parquet")
    assert len(df) == 2 * 2 * (len(STAGES) + 1) and df.wall_s.isna().all() and not df.passed.any()
    assert "disk full" in (out / "points" / "seed=1" / "error.txt").read_text()
    assert "**no**: RuntimeError: disk full" in (out / "report.md").read_text()
