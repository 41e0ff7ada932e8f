"""Result files: results.parquet/.csv (one tidy row per strategy, stage, day,
repeat) and summary.json, as DESIGN.md's results contract states."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from bench.equality import Verdict
from bench.scenario import Scenario

TOTAL_KEYS = (
    "wall_s",
    "cpu_s",
    "rows_read",
    "bytes_read",
    "files_read",
    "rows_written",
    "bytes_written",
    "files_written",
    "commits",
)
RATIO_KEYS = ("wall_s", "cpu_s", "bytes_read", "rows_read")
PHASE_KEYS = ("capture_s", "icdc_s", "plan_s", "probe_s", "transform_s", "write_s", "commit_s")
SCENARIO_KEYS = (
    "preset",
    "events_per_day",
    "late_fraction",
    "lookback_days",
    "beyond_window_share",
    "max_lateness_days",
    "seed",
    "engine",
)
STRATEGY_STAGES = ("lookback", "ips")


def machine_info() -> dict[str, Any]:
    """The machine, library versions and commit a result was measured on."""

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_bytes": mem,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "libraries": {p: version(p) for p in ("pyiceberg", "duckdb", "pyarrow", "pandas", "numpy", "pyspark")},
        "git_commit": commit,
    }


def results_frame(rows: list[dict[str, Any]], scenario: Scenario) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for k in SCENARIO_KEYS:
        df[k] = getattr(scenario, k)
    return df


def warm(df: pd.DataFrame) -> pd.DataFrame:
    """With repeats, the first (cold: fresh caches, first imports) is kept apart from the warm ones."""
    return df[df.repeat > 0] if df.repeat.nunique() > 1 else df


def _totals(measured: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Per strategy: the median over repeats of each repeat's sum over measured days."""
    out = {}
    for strategy in STRATEGY_STAGES:
        part = measured[measured.strategy == strategy]
        if part.empty:
            continue
        per_repeat = part.groupby("repeat")[list(TOTAL_KEYS)].sum()
        out[strategy] = {k: _num(statistics.median(per_repeat[k])) for k in TOTAL_KEYS}
        out[strategy]["wall_s_min"] = float(per_repeat["wall_s"].min())
        out[strategy]["wall_s_max"] = float(per_repeat["wall_s"].max())
        out[strategy]["peak_rss_bytes"] = int(part.peak_rss_bytes.max())
    return out


def _num(v: Any) -> float | int:
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _stages(measured: pd.DataFrame) -> list[dict[str, Any]]:
    stages = []
    keys = list(TOTAL_KEYS) + list(PHASE_KEYS) + ["partitions_written"]
    for (strategy, stage), part in measured[measured.strategy.isin(STRATEGY_STAGES)].groupby(
        ["strategy", "stage"], sort=False
    ):
        per_repeat = part.groupby("repeat")[keys].sum()
        entry: dict[str, Any] = {
            "strategy": strategy,
            "stage": stage,
            "pattern": str(part.pattern.iloc[0]),
        }
        entry.update({k: _num(statistics.median(per_repeat[k])) for k in keys})
        entry["wall_s_min"] = float(per_repeat["wall_s"].min())
        entry["wall_s_max"] = float(per_repeat["wall_s"].max())
        entry["peak_rss_bytes"] = int(part.peak_rss_bytes.max())
        stages.append(entry)
    by = {(s["strategy"], s["stage"]): s for s in stages}
    for s in stages:
        base = by.get(("lookback", s["stage"]))
        if s["strategy"] == "ips" and base:
            s["ratio_over_lookback"] = {k: _ratio(s[k], base[k]) for k in RATIO_KEYS}
    return stages


def summarize(
    df: pd.DataFrame, scenario: Scenario, verdicts: dict[str, Verdict], extra: dict[str, Any]
) -> dict[str, Any]:
    measured = warm(df[~df.warmup])
    totals = _totals(measured)
    ratios = (
        {k: _ratio(totals["ips"][k], totals["lookback"][k]) for k in RATIO_KEYS}
        if "ips" in totals and "lookback" in totals
        else {}
    )
    return {
        "scenario": scenario.as_dict(),
        "engine": scenario.engine,
        "measured_days": int(measured.day.nunique()),
        "totals": totals,
        "ratio_ips_over_lookback": ratios,
        "stages": _stages(measured),
        "correctness": {s: v.as_dict(s == "lookback") for s, v in verdicts.items()},
        "repeats": {
            "count": int(df.repeat.nunique()),
            "warm_repeats_in_totals": int(measured.repeat.nunique()),
            "cold": _totals(df[~df.warmup & (df.repeat == 0)]) if df.repeat.nunique() > 1 else None,
        },
        **extra,
    }


def passed(verdicts: dict[str, Verdict]) -> bool:
    """Exit 0 only when IPS equals the oracle and every lookback mismatch is explained."""
    ok = True
    if "ips" in verdicts:
        ok &= verdicts["ips"].equal_to_oracle
    if "lookback" in verdicts:
        ok &= verdicts["lookback"].unexplained_mismatched_rows == 0
    return ok


def write(out: Path, df: pd.DataFrame, summary: dict[str, Any]) -> None:
    df.to_parquet(out / "results.parquet", index=False)
    df.to_csv(out / "results.csv", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")


def read(out: Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    return pd.read_parquet(out / "results.parquet"), json.loads((out / "summary.json").read_text())
