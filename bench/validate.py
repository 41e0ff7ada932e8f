"""A validator for result files: the contract of DESIGN.md, checked.

``validate(DIR)`` checks a run directory (``ipsbench run``) or a sweep
directory (``ipsbench sweep``, recognized by its ``sweep_summary.json``; every
point's run directory is checked too). ``python -m bench.validate DIR...``
prints the problems and exits 1 if there are any.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.contract import (
    RATIO_KEYS,
    REPORT_MD,
    RESULT_COLUMNS,
    RESULTS_CSV,
    RESULTS_PARQUET,
    ROW_KEYS,
    SUMMARY_JSON,
    SWEEP_COLUMNS,
    SWEEP_CSV,
    SWEEP_FIGURES,
    SWEEP_KEY_COLUMNS,
    SWEEP_RATIO_COLUMNS,
    SWEEP_RESULTS,
    SWEEP_SPREAD_COLUMNS,
    SWEEP_SUMMARY,
    SWEEP_VARIABLES,
    TOTAL_KEYS,
)

SWEEP_NUMERIC = (
    *SWEEP_FIGURES,
    *SWEEP_SPREAD_COLUMNS,
    *SWEEP_RATIO_COLUMNS,
    "mismatched_rows",
    "unexplained_mismatched_rows",
    "late_events_beyond_window",
    "peak_rss_bytes",
    "point_index",
    "measured_days",
    "repeats",
    *(name for name, kind in SWEEP_VARIABLES.items() if kind is not str),
)
SWEEP_BOOLEAN = ("passed", "equal_to_oracle")
SWEEP_SUMMARY_KEYS = ("varied", "scenario", "engine", "machine", "complete", "passed", "points")


def validate(out: Path) -> list[str]:
    """Problems found in ``out``'s result files (empty when they follow the contract)."""
    if (out / SWEEP_SUMMARY).is_file():
        return validate_sweep(out)
    return validate_run(out)


def _report_problems(out: Path) -> list[str]:
    """Every image report.md shows must exist beside it."""
    text = (out / REPORT_MD).read_text()
    return [
        f"report.md shows {img}, which is missing"
        for img in re.findall(r"!\[[^]]*]\(([^)]+)\)", text)
        if not (out / img).is_file()
    ]


def validate_run(out: Path) -> list[str]:
    """Problems found in a run directory's result files."""
    problems: list[str] = []
    for name in (RESULTS_PARQUET, RESULTS_CSV, SUMMARY_JSON, REPORT_MD):
        if not (out / name).is_file():
            problems.append(f"missing {name}")
    if problems:
        return problems
    df = pd.read_parquet(out / RESULTS_PARQUET)
    for col in RESULT_COLUMNS:
        if col not in df.columns:
            problems.append(f"results lack column {col}")
    if problems:
        return problems
    for col in TOTAL_KEYS:
        if not pd.api.types.is_numeric_dtype(df[col]):
            problems.append(f"column {col} is not numeric")
        elif (df[col] < 0).any():
            problems.append(f"column {col} has negative values")
    if df.duplicated(list(ROW_KEYS)).any():
        problems.append("more than one row per (strategy, stage, day, repeat)")
    if len(pd.read_csv(out / RESULTS_CSV)) != len(df):
        problems.append("results.csv and results.parquet differ in rows")
    summary = json.loads((out / SUMMARY_JSON).read_text())
    for key in ("scenario", "engine", "measured_days", "totals", "ratio_ips_over_lookback", "stages", "correctness"):
        if key not in summary:
            problems.append(f"summary lacks {key}")
    for strategy, totals in summary.get("totals", {}).items():
        for k in TOTAL_KEYS:
            if not isinstance(totals.get(k), int | float) or totals[k] < 0:
                problems.append(f"totals.{strategy}.{k} is missing or negative")
    if len(summary.get("totals", {})) == 2:
        for k in RATIO_KEYS:
            if k not in summary["ratio_ips_over_lookback"]:
                problems.append(f"ratio_ips_over_lookback lacks {k}")
    for strategy, verdict in summary.get("correctness", {}).items():
        if "equal_to_oracle" not in verdict or "mismatched_rows" not in verdict:
            problems.append(f"correctness.{strategy} is incomplete")
        if strategy == "lookback" and "unexplained_mismatched_rows" not in verdict:
            problems.append("correctness.lookback lacks unexplained_mismatched_rows")
    return problems + _report_problems(out)


def _sweep_table_problems(df: pd.DataFrame) -> list[str]:
    problems = [f"sweep results lack column {c}" for c in SWEEP_COLUMNS if c not in df.columns]
    if problems:
        return problems
    failed = df.error.notna()
    for col in SWEEP_NUMERIC:
        if not pd.api.types.is_numeric_dtype(df[col]):
            problems.append(f"sweep column {col} is not numeric")
        elif (df[col] < 0).any():
            problems.append(f"sweep column {col} has negative values")
    for col in SWEEP_BOOLEAN:
        if not pd.api.types.is_bool_dtype(df[col]):
            problems.append(f"sweep column {col} is not boolean")
    for col in TOTAL_KEYS:
        if col in df.columns and df.loc[~failed, col].isna().any():
            problems.append(f"sweep column {col} is empty for a point that ran")
    for col in SWEEP_KEY_COLUMNS:
        if df[col].isna().any():
            problems.append(f"sweep column {col} has empty values")
    if df.duplicated(list(SWEEP_KEY_COLUMNS)).any():
        problems.append("more than one row per (point, strategy, stage)")
    if df.loc[df.strategy != "ips", list(SWEEP_RATIO_COLUMNS)].notna().any().any():
        problems.append("a non-IPS row carries an IPS/lookback ratio")
    return problems


def _point_problems(df: pd.DataFrame, summary: dict[str, Any], out: Path) -> list[str]:
    problems = []
    varied = summary["varied"]
    entries = {p["point"]: p for p in summary["points"]}
    if set(df.point) != set(entries):
        problems.append("sweep results and sweep_summary.json list different points")
    if summary["complete"] and len(entries) != math.prod(len(v) for v in varied.values()):
        problems.append("a complete sweep lacks points of the grid")
    if summary["passed"] != all(p["passed"] for p in entries.values()):
        problems.append("sweep_summary.json's passed disagrees with its points")
    for name, entry in entries.items():
        rows = df[df.point == name]
        if set(entry["values"]) != set(varied):
            problems.append(f"point {name} does not give a value for every varied option")
        for k, v in entry["values"].items():
            if k in rows.columns and not (rows[k] == v).all():
                problems.append(f"point {name}: column {k} is not {v} on every row")
        if not rows.empty and (rows.passed != entry["passed"]).any():
            problems.append(f"point {name}: passed differs between table and summary")
        if not entry.get("error"):
            problems += [f"point {name}: {p}" for p in validate_run(out / entry["dir"])]
    return problems


def validate_sweep(out: Path) -> list[str]:
    """Problems found in a sweep directory's result files and in each point's run directory."""
    problems = [f"missing {n}" for n in (SWEEP_RESULTS, SWEEP_CSV, SWEEP_SUMMARY, REPORT_MD) if not (out / n).is_file()]
    if problems:
        return problems
    df = pd.read_parquet(out / SWEEP_RESULTS)
    problems += _sweep_table_problems(df)
    if len(pd.read_csv(out / SWEEP_CSV)) != len(df):
        problems.append(f"{SWEEP_CSV} and {SWEEP_RESULTS} differ in rows")
    summary = json.loads((out / SWEEP_SUMMARY).read_text())
    problems += [f"{SWEEP_SUMMARY} lacks {k}" for k in SWEEP_SUMMARY_KEYS if k not in summary]
    unknown = [k for k in summary.get("varied", {}) if k not in SWEEP_VARIABLES]
    problems += [f"{SWEEP_SUMMARY} varies unknown option {k}" for k in unknown]
    if problems:
        return problems
    return problems + _point_problems(df, summary, out) + _report_problems(out)


def main(argv: list[str]) -> int:
    status = 0
    for arg in argv:
        for problem in validate(Path(arg)):
            print(f"{arg}: {problem}")
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
