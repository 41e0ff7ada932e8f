"""``ipsbench sweep``: one scenario run per point of a grid, one results table for the whole grid.

Every point is a complete run directory (``DIR/points/<name=value,...>/``,
with its own warehouse, result files and report), so a point can be inspected
or re-rendered on its own. The sweep table ``sweep_results.parquet`` holds one
row per point × strategy × stage (plus a ``total`` stage per strategy): the
varied values, the measured-day sums (medians over repeats), IPS/lookback
ratios and the correctness verdict. It is rewritten after every point, so an
interrupted sweep keeps what it measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import pandas as pd

from bench.contract import (
    EXIT_MISMATCH,
    EXIT_OK,
    POINTS_DIR,
    RATIO_KEYS,
    RESULTS_PARQUET,
    STRATEGIES,
    SWEEP_COLUMNS,
    SWEEP_CSV,
    SWEEP_FIGURES,
    SWEEP_FRESHNESS_COLUMNS,
    SWEEP_RATIO_COLUMNS,
    SWEEP_RESULTS,
    SWEEP_SPLIT_COLUMNS,
    SWEEP_SPREAD_COLUMNS,
    SWEEP_SUMMARY,
    SWEEP_VARIABLES,
    TOTAL_STAGE,
    aggregate_repeats,
    pct,
    ratio,
    warm,
)
from bench.machine import machine_info
from bench.options import (
    BadInput,
    add_scenario_options,
    check_new_dir,
    check_spark,
    events_for,
    scenario_from_args,
)
from bench.scenario import BadScenario, Scenario

# With --events the data is the user's: only how it is processed can vary.
EVENTS_FILE_VARIABLES = ("lookback_days",)


@dataclasses.dataclass(frozen=True)
class Point:
    """One grid point: the varied values, in --vary order, and the scenario they give."""

    index: int
    values: dict[str, Any]
    scenario: Scenario

    @property
    def name(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.values.items())


def parse_vary(specs: list[str]) -> dict[str, tuple[Any, ...]]:
    """``NAME=V1,V2,...`` options as ``{name: values}``; ``-`` and ``_`` are the same in names.

    Raises:
        BadInput: unknown or repeated name, empty, unreadable or repeated value.
    """
    varied: dict[str, tuple[Any, ...]] = {}
    for spec in specs:
        name, sep, text = spec.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or not name:
            raise BadInput(f"--vary takes NAME=V1,V2,..., got {spec!r}")
        if name not in SWEEP_VARIABLES:
            raise BadInput(f"--vary: cannot vary {name!r}; choose from {', '.join(SWEEP_VARIABLES)}")
        if name in varied:
            raise BadInput(f"--vary: {name} is given twice; list all its values in one --vary")
        values = []
        for item in text.split(","):
            try:
                values.append(SWEEP_VARIABLES[name](item.strip()))
            except ValueError:
                kind = "whole numbers" if SWEEP_VARIABLES[name] is int else "numbers"
                raise BadInput(f"--vary: {name} takes {kind}, got {item.strip()!r}") from None
        if len(set(values)) != len(values):
            raise BadInput(f"--vary: {name} lists a value twice: {text}")
        varied[name] = tuple(values)
    return varied


def plan_points(args: argparse.Namespace, varied: dict[str, tuple[Any, ...]]) -> list[Point]:
    """Every point of the grid, each scenario validated; raises ``BadInput`` naming the bad point."""
    for name in varied:
        if getattr(args, name, None) is not None:
            raise BadInput(f"--{name.replace('_', '-')} is set and also varied; give it once")
    if args.events_file:
        fixed = [n for n in varied if n not in EVENTS_FILE_VARIABLES]
        if fixed:
            raise BadInput(f"--events fixes the data; only {', '.join(EVENTS_FILE_VARIABLES)} can vary, not {fixed[0]}")
    points = []
    for index, combo in enumerate(itertools.product(*varied.values())):
        values = dict(zip(varied, combo, strict=True))
        point_args = argparse.Namespace(**{**vars(args), **values})
        try:
            scenario = scenario_from_args(point_args)
        except BadScenario as e:
            name = ",".join(f"{k}={v}" for k, v in values.items())
            raise BadInput(f"sweep point {name}: {e}") from None
        points.append(Point(index, values, scenario))
    if any(p.scenario.engine == "spark" for p in points):
        check_spark()
    return points


def _stage_rows(df: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """Per (strategy, stage) and per strategy total: medians over warm repeats of measured-day sums.

    The same warm repeats and the same arithmetic as the run's own summary, so
    the sweep table and each point's summary.json agree.
    """
    measured = warm(df[~df.warmup.astype(bool) & df.strategy.isin(STRATEGIES)])
    keys = [k for k in SWEEP_FIGURES if k in measured.columns]
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for strategy in STRATEGIES:
        rows = measured[measured.strategy == strategy]
        if rows.empty:
            continue
        for stage, part in rows.groupby("stage", sort=False):
            out[(strategy, str(stage))] = {"pattern": str(part.pattern.iloc[0]), **aggregate_repeats(part, keys)}
        out[(strategy, TOTAL_STAGE)] = {"pattern": "all", **aggregate_repeats(rows, keys)}
    return out


def _verdict_row(summary: dict[str, Any], strategy: str, stage: str) -> dict[str, Any]:
    verdict = summary.get("correctness", {}).get(strategy, {})
    if stage == TOTAL_STAGE:
        mismatched = verdict.get("mismatched_rows")
        unexplained = verdict.get("unexplained_mismatched_rows", mismatched)
    else:
        per_stage = verdict.get("per_stage", {}).get(stage, {})
        mismatched = per_stage.get("mismatched_rows")
        unexplained = per_stage.get("unexplained_mismatched_rows", mismatched)
    return {
        "equal_to_oracle": None if mismatched is None else mismatched == 0,
        "mismatched_rows": mismatched,
        "unexplained_mismatched_rows": unexplained,
        "late_events_beyond_window": summary.get("correctness", {})
        .get("lookback", {})
        .get("late_events_beyond_window"),
    }


def split_columns(summary: dict[str, Any], stage: str) -> dict[str, Any]:
    """An IPS row's in-window ratio, older share and distance from the floor (rows read), from summary.json."""
    sp = summary.get("split") or {}
    part = sp if stage == TOTAL_STAGE else next((s for s in sp.get("per_stage", []) if s["stage"] == stage), {})
    floors = [f for f in summary.get("floor") or [] if stage in (TOTAL_STAGE, f["stage"])]
    floor_rows = sum(f["floor"]["rows_read"] for f in floors)
    in_window = part.get("in_window", {}).get("ratio_ips_over_lookback", {})
    return {
        "in_window_ips_over_lookback_wall_s": in_window.get("wall_s"),
        "older_share_of_ips_wall": part.get("older", {}).get("share_of_ips_wall"),
        "ips_over_floor_rows_read": ratio(sum(f["ips"]["rows_read"] for f in floors), floor_rows) if floors else None,
    }


def freshness_columns(summary: dict[str, Any], strategy: str, stage: str) -> dict[str, Any]:
    """A row's freshness from summary.json (all events): its table's, or on the total row the last stage's."""
    fresh = summary.get("freshness") or {}
    table = fresh.get("last_stage") if stage == TOTAL_STAGE else stage
    figures = fresh.get("per_strategy", {}).get(strategy, {}).get(table, {}).get("all", {})
    return {
        "freshness_p50_s": figures.get("p50_s"),
        "freshness_p95_s": figures.get("p95_s"),
        "freshness_never": figures.get("never"),
    }


def _peak_rss(summary: dict[str, Any], strategy: str) -> int | None:
    """Per-strategy peak RSS when the summary has one, else the run's."""
    per_strategy = summary.get("totals", {}).get(strategy, {}).get("peak_rss_bytes")
    if per_strategy is not None:
        return int(per_strategy)
    peak = summary.get("peak_rss_bytes")
    if isinstance(peak, dict):
        peak = peak.get(strategy)
    return None if peak is None else int(peak)


def point_rows(point: Point, df: pd.DataFrame, summary: dict[str, Any], passed: bool) -> list[dict[str, Any]]:
    """The sweep table's rows for one finished point."""
    base = _point_base(point, summary.get("measured_days", point.scenario.measured_days), passed)
    figures = _stage_rows(df)
    rows = []
    for (strategy, stage), fig in figures.items():
        row = {**base, "strategy": strategy, "stage": stage, **fig}
        lookback = figures.get(("lookback", stage))
        for k, col in zip(RATIO_KEYS, SWEEP_RATIO_COLUMNS, strict=True):
            row[col] = fig[k] / lookback[k] if strategy == "ips" and lookback and lookback[k] else None
        row.update(_verdict_row(summary, strategy, stage))
        row.update(freshness_columns(summary, strategy, stage))
        if strategy == "ips":
            row.update(split_columns(summary, stage))
        if row.get("peak_rss_bytes") is None:
            row["peak_rss_bytes"] = _peak_rss(summary, strategy)
        rows.append(row)
    return rows


def failed_rows(point: Point, error: str) -> list[dict[str, Any]]:
    """A point that raised: its rows are kept with empty figures, never dropped."""
    from pipelines.pipeline import STAGES

    base = _point_base(point, point.scenario.measured_days, False)
    return [
        {**base, "strategy": s, "stage": stage, "pattern": "all" if stage == TOTAL_STAGE else None, "error": error}
        for s in point.scenario.strategies
        for stage in (*STAGES, TOTAL_STAGE)
    ]


def _point_base(point: Point, measured_days: int, passed: bool) -> dict[str, Any]:
    sc = point.scenario
    base: dict[str, Any] = {"point": point.name, "point_index": point.index}
    base.update({k: getattr(sc, k) for k in ("preset", "engine", "repeats", *SWEEP_VARIABLES)})
    base["measured_days"] = measured_days
    base["passed"] = passed
    return base


def sweep_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Rows in the contract's column order; failed points leave figures empty (null)."""
    df = pd.DataFrame(rows, columns=list(SWEEP_COLUMNS))
    numeric = (
        *SWEEP_FIGURES,
        *SWEEP_SPREAD_COLUMNS,
        *SWEEP_RATIO_COLUMNS,
        *SWEEP_SPLIT_COLUMNS,
        *SWEEP_FRESHNESS_COLUMNS,
        "peak_rss_bytes",
    )
    for col in (*numeric, "mismatched_rows", "unexplained_mismatched_rows", "late_events_beyond_window"):
        df[col] = pd.to_numeric(df[col])
    for col in ("equal_to_oracle", "passed"):
        df[col] = df[col].astype("boolean")
    for col in ("pattern", "error"):
        df[col] = df[col].astype("string")
    return df


def write_sweep(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    df = sweep_frame(rows)
    df.to_parquet(out / SWEEP_RESULTS, index=False)
    df.to_csv(out / SWEEP_CSV, index=False)
    (out / SWEEP_SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")


def _progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _point_line(summary: dict[str, Any]) -> str:
    ratio = summary.get("ratio_ips_over_lookback", {}).get("wall_s")
    parts = [] if ratio is None else [f"IPS/lookback wall {pct(ratio)}"]
    c = summary.get("correctness", {})
    if "ips" in c:
        parts.append("IPS equal to oracle" if c["ips"]["equal_to_oracle"] else "IPS DIFFERS from oracle")
    if "lookback" in c:
        lb = c["lookback"]
        parts.append(f"lookback {lb['mismatched_rows']:,} rows wrong ({lb['unexplained_mismatched_rows']} unexplained)")
    return ", ".join(parts)


def run_sweep(
    out: Path,
    points: list[Point],
    events: Any,
    varied: dict[str, tuple[Any, ...]],
    quiet: bool,
    drop_warehouses: bool = False,
) -> bool:
    """Run every point into ``out/points/``; write the sweep table and report. Returns whether all passed.

    With ``drop_warehouses``, a point's warehouse is deleted once the point has
    passed and its result files are written (a failing point keeps it).
    """
    # The engine and the catalog load only when a sweep runs, not when the CLI starts.
    from bench.execute import run_scenario

    fixed = points[0].scenario.as_dict()
    for name in varied:
        fixed.pop(name)
    summary: dict[str, Any] = {
        "varied": {k: list(v) for k, v in varied.items()},
        "scenario": fixed,
        "engine": points[0].scenario.engine,
        "machine": machine_info(),
        "complete": False,
        "passed": False,
        "points": [],
    }
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for point in points:
        point_dir = out / POINTS_DIR / point.name
        point_dir.mkdir(parents=True)
        _progress(f"[{point.index + 1}/{len(points)}] {point.name}: running")
        started = time.perf_counter()
        entry: dict[str, Any] = {"point": point.name, "dir": f"{POINTS_DIR}/{point.name}", "values": point.values}
        try:
            run_summary, _, ok = run_scenario(point.scenario, events, point_dir, point_dir / "warehouse", not quiet)
        except Exception as e:
            # Recorded as a failed point (exit 1), not dropped: the other points still tell something.
            (point_dir / "error.txt").write_text(traceback.format_exc())
            error = f"{type(e).__name__}: {e}".splitlines()[0]
            rows += failed_rows(point, error)
            entry.update(passed=False, error=error)
            _progress(f"[{point.index + 1}/{len(points)}] {point.name}: FAILED ({error}); see {point_dir}/error.txt")
        else:
            df = pd.read_parquet(point_dir / RESULTS_PARQUET)
            rows += point_rows(point, df, run_summary, ok)
            entry.update(
                passed=ok,
                ratio_ips_over_lookback=run_summary.get("ratio_ips_over_lookback", {}),
                correctness=run_summary.get("correctness", {}),
                peak_rss_bytes=run_summary.get("peak_rss_bytes"),
            )
            _progress(
                f"[{point.index + 1}/{len(points)}] {point.name}: {'passed' if ok else 'FAILED'} in "
                f"{time.perf_counter() - started:.1f} s: {_point_line(run_summary)}"
            )
            if ok and drop_warehouses:
                try:
                    shutil.rmtree(point_dir / "warehouse")
                    entry["warehouse_dropped"] = True
                except OSError as e:
                    # The point's results are written; a warehouse left behind fails nothing.
                    entry.update(warehouse_dropped=False, warehouse_drop_error=str(e))
                    _progress(f"[{point.index + 1}/{len(points)}] {point.name}: warehouse not deleted: {e}")
        entry["elapsed_s"] = time.perf_counter() - started
        summary["points"].append(entry)
        summary["elapsed_s"] = time.perf_counter() - t0
        write_sweep(out, rows, summary)
    summary["complete"] = True
    summary["passed"] = all(p["passed"] for p in summary["points"])
    write_sweep(out, rows, summary)
    from reports.sweep import render_sweep  # matplotlib: loaded only when a sweep renders

    report = render_sweep(out)
    _progress(f"sweep: {sum(p['passed'] for p in summary['points'])}/{len(points)} points passed; report: {report}")
    return bool(summary["passed"])


def cmd_sweep(args: argparse.Namespace) -> int:
    varied = parse_vary(args.vary)
    points = plan_points(args, varied)
    out = Path(args.out)
    check_new_dir(out, "--out")
    events = None
    if args.events_file:
        scenario, events = events_for(points[0].scenario, args.max_days)
        # The events file fixes the dates and days; apply them to every point.
        dates = {k: getattr(scenario, k) for k in ("start_date", "days", "warmup_days")}
        points = [dataclasses.replace(p, scenario=dataclasses.replace(p.scenario, **dates)) for p in points]
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    _progress(f"sweep: {len(points)} point(s) over {', '.join(varied)} into {out}")
    try:
        ok = run_sweep(out, points, events, varied, args.quiet, args.drop_warehouses)
    except BaseException:
        if created and not (out / SWEEP_SUMMARY).exists():
            shutil.rmtree(out, ignore_errors=True)
        raise
    return EXIT_OK if ok else EXIT_MISMATCH


def add_sweep_parser(sub: Any) -> None:
    """Register ``ipsbench sweep`` on the CLI's subparsers."""
    sw = sub.add_parser(
        "sweep",
        help="run a grid of scenarios (cartesian product of --vary values); one results table",
        description="Run one scenario per point of the cartesian product of the --vary values, each into "
        "OUT/points/<name=value,...>/ with its own warehouse; write OUT/sweep_results.parquet/.csv, "
        "OUT/sweep_summary.json and OUT/report.md. Exit 0 only if every point passes.",
    )
    sw.add_argument("--out", required=True, help="new directory for the sweep")
    sw.add_argument(
        "--vary",
        action="append",
        required=True,
        metavar="NAME=V1,V2,...",
        help=f"a scenario option and its values (repeatable); NAME is one of {', '.join(SWEEP_VARIABLES)}",
    )
    sw.add_argument("--quiet", action="store_true", help="no per-day progress bar (per-point lines stay)")
    sw.add_argument(
        "--drop-warehouses",
        action="store_true",
        help="delete each point's Iceberg warehouse once the point has passed (result files and report stay; "
        "a failing point keeps its warehouse to inspect). A small point's warehouse takes about 1.6 GB, "
        "a medium one about 10 GB",
    )
    add_scenario_options(sw)
    sw.set_defaults(func=cmd_sweep)
