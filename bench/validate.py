"""A validator for result files: the contract of DESIGN.md, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from bench.results import RATIO_KEYS, SCENARIO_KEYS, TOTAL_KEYS

ROW_KEYS = ("strategy", "stage", "day", "repeat")
NUMERIC = (*TOTAL_KEYS, "files_read")


def validate(out: Path) -> list[str]:
    """Problems found in ``out``'s result files (empty when they follow the contract)."""
    problems: list[str] = []
    for name in ("results.parquet", "results.csv", "summary.json", "report.md"):
        if not (out / name).is_file():
            problems.append(f"missing {name}")
    if problems:
        return problems
    df = pd.read_parquet(out / "results.parquet")
    for col in (*ROW_KEYS, *NUMERIC, *SCENARIO_KEYS, "pattern", "warmup"):
        if col not in df.columns:
            problems.append(f"results lack column {col}")
    if problems:
        return problems
    for col in NUMERIC:
        if not pd.api.types.is_numeric_dtype(df[col]):
            problems.append(f"column {col} is not numeric")
        elif (df[col] < 0).any():
            problems.append(f"column {col} has negative values")
    if df.duplicated(list(ROW_KEYS)).any():
        problems.append("more than one row per (strategy, stage, day, repeat)")
    if len(pd.read_csv(out / "results.csv")) != len(df):
        problems.append("results.csv and results.parquet differ in rows")
    summary = json.loads((out / "summary.json").read_text())
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
    return problems
