"""Result files: results.parquet/.csv (one tidy row per strategy, stage, day,
repeat) and summary.json, as DESIGN.md's results contract states."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from bench.contract import (
    FLOOR_FIGURES,
    FLOOR_KEYS,
    OLDER_KEYS,
    PHASE_KEYS,
    RATIO_KEYS,
    RESULTS_CSV,
    RESULTS_PARQUET,
    SCENARIO_KEYS,
    STRATEGIES,
    SUMMARY_JSON,
    TOTAL_KEYS,
    UNTIMED_KEYS,
    WINDOW_KEYS,
    VerdictRecord,
    aggregate_repeats,
    floor_figures,
    pipeline_stages,
    ratio,
    split_figures,
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
    keys = (*TOTAL_KEYS, *PHASE_KEYS, "partitions_written", *FLOOR_KEYS, *WINDOW_KEYS, *OLDER_KEYS, *UNTIMED_KEYS)
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


def _stage_rows(measured: pd.DataFrame) -> pd.DataFrame:
    return measured[measured.strategy.isin(STRATEGIES) & measured.stage.isin(pipeline_stages(measured.stage))]


def _sums(rows: pd.DataFrame, keys: tuple[str, ...]) -> dict[str, Any]:
    """Each of ``keys`` summed over days (and stages), median over repeats; empty rows give None."""
    if rows.empty or any(k not in rows.columns for k in keys):
        return dict.fromkeys(keys)
    figure = aggregate_repeats(rows, keys)
    return {k: figure[k] for k in keys}


def floors(measured: pd.DataFrame) -> list[dict[str, Any]]:
    """Per IPS stage: its floor beside what IPS and the lookback read and wrote (``floor_figures``)."""
    rows = _stage_rows(measured)
    out = []
    for stage in pipeline_stages(rows.stage):
        ips = rows[(rows.strategy == "ips") & (rows.stage == stage)]
        if ips.empty:
            continue
        lookback = rows[(rows.strategy == "lookback") & (rows.stage == stage)]
        floor = _sums(ips, FLOOR_KEYS)
        below = int((ips.rows_read < ips.floor_rows_read).sum()) if "floor_rows_read" in ips.columns else None
        out.append(
            {
                "stage": stage,
                "pattern": str(ips.pattern.iloc[0]),
                **floor_figures(
                    {k: floor[f"floor_{k}"] for k in FLOOR_FIGURES},
                    _sums(ips, FLOOR_FIGURES),
                    _sums(lookback, FLOOR_FIGURES) if not lookback.empty else None,
                ),
                "ips_days_below_floor": below,
            }
        )
    return out


def split(measured: pd.DataFrame, verdicts: dict[str, VerdictRecord], lookback_days: int) -> dict[str, Any]:
    """IPS's work inside the lookback's window beside the lookback's, and its work on older partitions."""
    rows = _stage_rows(measured)
    wrong = verdicts.get("lookback", {}).get("per_stage")
    per_stage = []
    for stage in pipeline_stages(rows.stage):
        ips = rows[(rows.strategy == "ips") & (rows.stage == stage)]
        lookback = rows[(rows.strategy == "lookback") & (rows.stage == stage)]
        if ips.empty or lookback.empty:
            continue
        figures = split_figures(
            _sums(ips, WINDOW_KEYS), _sums(ips, OLDER_KEYS), _sums(lookback, WINDOW_KEYS), _sums(ips, ("wall_s",))
        )
        figures["lookback_wrong_rows"] = wrong[stage]["mismatched_rows"] if wrong and stage in wrong else None
        per_stage.append({"stage": stage, "pattern": str(ips.pattern.iloc[0]), **figures})
    ips, lookback = rows[rows.strategy == "ips"], rows[rows.strategy == "lookback"]
    if ips.empty or lookback.empty:
        return {}
    whole = split_figures(
        _sums(ips, WINDOW_KEYS), _sums(ips, OLDER_KEYS), _sums(lookback, WINDOW_KEYS), _sums(ips, ("wall_s",))
    )
    counts = [s["lookback_wrong_rows"] for s in per_stage]
    whole["lookback_wrong_rows"] = sum(counts) if counts and None not in counts else None
    return {
        "window_days": lookback_days,
        "time_split": "an engine call handles both sides at once: its wall and CPU are split by the share of "
        "rows read and written on each side",
        **whole,
        "per_stage": per_stage,
    }


_COST = ("wall_s", "cpu_s", "rows_read", "bytes_read", "rows_written", "bytes_written")


def _cost(rows: pd.DataFrame) -> dict[str, float]:
    return {k: float(rows[k].sum()) if k in rows else 0.0 for k in _COST}


def restatement(df: pd.DataFrame, scenario: Scenario, verdicts: dict[str, VerdictRecord]) -> dict[str, Any] | None:
    """A repopulation or logic change per strategy (first repeat): cost of the day it lands on and of
    the user's backfills, that day's excess over a median other measured day, user steps, and
    correctness after."""
    if scenario.repopulate_day is not None:
        kind, day, days = (
            "repopulation",
            scenario.repopulate_day,
            [scenario.repopulate_from_day, scenario.repopulate_to_day],
        )
    elif scenario.logic_change_day is not None:
        kind, day, days = (
            "logic change",
            scenario.logic_change_day,
            [scenario.logic_change_from_day, scenario.logic_change_day],
        )
    else:
        return None
    rows = df[df.repeat == df.repeat.min()] if "repeat" in df else df
    source = rows[(rows.strategy == "source") & (rows.stage == "repopulate")]
    out: dict[str, Any] = {
        "kind": kind,
        "new_view_seconds_cap": scenario.new_view_seconds_cap if kind == "logic change" else None,
        "repopulate_day": day,
        "repopulated_days": days,
        "lookback_backfill": scenario.lookback_backfill,
        "lookback_window_days": scenario.lookback_days,
        "source_rewrite": _cost(source),
        "per_strategy": {},
    }
    for strategy in STRATEGIES:
        mine = rows[rows.strategy == strategy]
        if mine.empty:
            continue
        backfills = mine[mine.stage == "backfill"]
        stages = mine[mine.stage.isin(pipeline_stages(mine.stage)) & (mine.stage != "backfill")]
        on_day = _cost(stages[stages.day == day])
        others = stages[(stages.day != day) & ~stages.warmup]
        per_day = others.groupby("day")[list(_COST)].sum() if not others.empty else None
        median = {k: float(per_day[k].median()) for k in _COST} if per_day is not None else None
        triggered = {k: on_day[k] - median[k] for k in _COST} if median is not None else None
        verdict = verdicts.get(strategy, {})
        per_stage = verdict.get("per_stage", {})
        explained = sum(int(v.get("repopulation_explained_rows", 0)) for v in per_stage.values())
        steps = len(backfills)
        equal = bool(verdict.get("equal_to_oracle"))
        unexplained = int(verdict.get("unexplained_mismatched_rows", 0 if equal else 1))
        # The repopulation is carried when nothing is wrong but what late data beyond the window explains.
        carried = equal or (unexplained == 0 and explained == 0)
        if carried:
            correct = f"day {day}, " + ("at its own run" if steps == 0 else f"after {steps} user backfill(s)")
        else:
            correct = "never: the window had left the restated dates"
        total = {k: on_day[k] + _cost(backfills)[k] for k in _COST}
        out["per_strategy"][strategy] = {
            "user_steps": steps,
            "day_cost": on_day,
            "median_day_cost": median,
            "day_excess_over_median": triggered,
            "backfill_cost": _cost(backfills),
            "day_plus_backfills": total,
            "equal_to_oracle_after": equal,
            "mismatched_rows_after": int(verdict.get("mismatched_rows", 0)),
            "repopulation_explained_rows": explained,
            "repopulation_carried": carried,
            "correct_from": correct,
        }
    return out


def _fit(x: pd.Series, y: pd.Series) -> tuple[float, float] | None:
    """Least-squares ``y = a + b x``: (a, b); None without two distinct x values."""
    if x.nunique() < 2:
        return None
    slope, intercept = np.polyfit(x.astype(float), y.astype(float), 1)
    return float(intercept), float(slope)


def cadence(df: pd.DataFrame, scenario: Scenario) -> dict[str, Any]:
    """What the schedule costs (first repeat, measured days): per strategy its runs and cost per simulated
    day; for IPS the fixed cost of a run (the intercept of run CPU time against rows captured) and its
    capture time against the source's history length (snapshots retained when it ran)."""
    rows = df[~df.warmup & (df.repeat == df.repeat.min())] if "repeat" in df else df[~df.warmup]
    days = max(int(rows.day.nunique()), 1)
    stages = _stage_rows(rows)
    out: dict[str, Any] = {"batch_minutes": scenario.batch_minutes, "measured_days": days, "per_strategy": {}}
    for strategy in STRATEGIES:
        mine = stages[stages.strategy == strategy]
        if mine.empty:
            continue
        runs = mine.groupby("batch")[["wall_s", "cpu_s", "capture_s", "captured_rows"]].sum()
        figures: dict[str, Any] = {
            "runs_per_day": len(runs) / days,
            "wall_s_per_day": float(runs.wall_s.sum()) / days,
            "cpu_s_per_day": float(runs.cpu_s.sum()) / days,
            "run_wall_s_median": float(runs.wall_s.median()),
            "run_cpu_s_median": float(runs.cpu_s.median()),
        }
        if strategy == "ips":
            first = mine[mine.stage == mine.stage.iloc[0]].set_index("batch").captured_rows
            fit = _fit(first, runs.cpu_s)
            figures["run_fixed_cpu_s"] = fit[0] if fit else None
            figures["run_cpu_s_per_1k_captured_rows"] = 1_000 * fit[1] if fit else None
            history = rows[rows.stage == "ingest"].set_index("batch").get("source_snapshots")
            if history is not None:
                joined = runs.join(history, how="inner")
                fit = _fit(joined.source_snapshots, joined.capture_s)
                figures["capture_s_vs_history"] = {
                    "snapshots_min": int(joined.source_snapshots.min()),
                    "snapshots_max": int(joined.source_snapshots.max()),
                    "capture_s_median": float(joined.capture_s.median()),
                    "capture_ms_per_100_snapshots": 1e5 * fit[1] if fit else None,
                }
        out["per_strategy"][strategy] = figures
    return out


def correctness(verdicts: dict[str, Verdict]) -> dict[str, VerdictRecord]:
    """The verdicts as summary.json records them; only the lookback's carry explanations."""
    return {s: cast(VerdictRecord, v.as_dict(s == "lookback")) for s, v in verdicts.items()}


def summarize(
    df: pd.DataFrame, scenario: Scenario, verdicts: dict[str, Verdict], extra: dict[str, Any]
) -> dict[str, Any]:
    measured = warm(df[~df.warmup])
    totals = _totals(measured)
    verdict_records = correctness(verdicts)
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
        "floor": floors(measured),
        "split": split(measured, verdict_records, scenario.lookback_days),
        "untimed": {
            strategy: _sums(part, UNTIMED_KEYS)
            for strategy in STRATEGIES
            if not (part := measured[measured.strategy == strategy]).empty
        },
        "correctness": verdict_records,
        "restatement": restatement(df, scenario, verdict_records),
        "cadence": cadence(df, scenario),
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
