"""Result files: results.parquet/.csv (one tidy row per strategy, stage, day,
repeat) and summary.json, as DESIGN.md's results contract states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import pandas as pd

from bench.contract import (
    PHASE_KEYS,
    RATIO_KEYS,
    RESULTS_CSV,
    RESULTS_PARQUET,
    SCENARIO_KEYS,
    STRATEGIES,
    SUMMARY_JSON,
    TOTAL_KEYS,
    VerdictRecord,
    aggregate_repeats,
    ratio,
    warm,
)
from bench.contract import passed as verdicts_pass
from bench.equality import Verdict
from bench.scenario import Scenario


def results_frame(rows: list[dict[str, Any]], scenario: Scenario) -> pd.DataFrame:
    df = pd.DataFrame(rows)
    for k in SCENARIO_KEYS:
        df[k] = getattr(scenario, k)
    return df


def _totals(measured: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per strategy: the median over repeats of each repeat's sum over measured days."""
    return {
        strategy: aggregate_repeats(part, TOTAL_KEYS)
        for strategy in STRATEGIES
        if not (part := measured[measured.strategy == strategy]).empty
    }


def _stages(measured: pd.DataFrame) -> list[dict[str, Any]]:
    keys = (*TOTAL_KEYS, *PHASE_KEYS, "partitions_written")
    stages = [
        {"strategy": strategy, "stage": stage, "pattern": str(part.pattern.iloc[0]), **aggregate_repeats(part, keys)}
        for (strategy, stage), part in measured[measured.strategy.isin(STRATEGIES)].groupby(
            ["strategy", "stage"], sort=False
        )
    ]
    by = {(s["strategy"], s["stage"]): s for s in stages}
    for s in stages:
        base = by.get(("lookback", s["stage"]))
        if s["strategy"] == "ips" and base:
            s["ratio_over_lookback"] = {k: ratio(s[k], base[k]) for k in RATIO_KEYS}
    return stages


def correctness(verdicts: dict[str, Verdict]) -> dict[str, VerdictRecord]:
    """The verdicts as summary.json records them; only the lookback's carry explanations."""
    return {s: cast(VerdictRecord, v.as_dict(s == "lookback")) for s, v in verdicts.items()}


def summarize(
    df: pd.DataFrame, scenario: Scenario, verdicts: dict[str, Verdict], extra: dict[str, Any]
) -> dict[str, Any]:
    measured = warm(df[~df.warmup])
    totals = _totals(measured)
    ratios = (
        {k: ratio(totals["ips"][k], totals["lookback"][k]) for k in RATIO_KEYS}
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
        "correctness": correctness(verdicts),
        "repeats": {
            "count": int(df.repeat.nunique()),
            "warm_repeats_in_totals": int(measured.repeat.nunique()),
            "cold": _totals(df[~df.warmup & (df.repeat == 0)]) if df.repeat.nunique() > 1 else None,
        },
        **extra,
    }


def passed(verdicts: dict[str, Verdict]) -> bool:
    """Exit 0 only when IPS equals the oracle and every lookback mismatch is explained."""
    return verdicts_pass(correctness(verdicts))


def write(out: Path, df: pd.DataFrame, summary: dict[str, Any]) -> None:
    df.to_parquet(out / RESULTS_PARQUET, index=False)
    df.to_csv(out / RESULTS_CSV, index=False)
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2, default=str) + "\n")
