"""The results contract of DESIGN.md as code: file names, the tidy row, verdicts, keys and their arithmetic.

Everything that writes, checks, renders or compares result files reads its
names from here. This module imports nothing else of the project, so
``reports/`` can read result files without loading an engine or a catalog.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Literal, TypedDict

import pandas as pd

# Exit status of every command (DESIGN.md, "Exit status").
EXIT_OK, EXIT_MISMATCH, EXIT_BAD_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
# 128 + the signal's number, as a shell reports a process it stopped.
EXIT_INTERRUPTED, EXIT_TERMINATED = 130, 143

# A run directory.
RESULTS_PARQUET = "results.parquet"
RESULTS_CSV = "results.csv"
SUMMARY_JSON = "summary.json"
REPORT_MD = "report.md"
# Every warehouse records the scenario that filled it.
SCENARIO_FILE = "scenario.json"
# A sweep directory: its table, its summary, and one run directory per point under POINTS_DIR.
SWEEP_RESULTS = "sweep_results.parquet"
SWEEP_CSV = "sweep_results.csv"
SWEEP_SUMMARY = "sweep_summary.json"
POINTS_DIR = "points"

Strategy = Literal["lookback", "ips"]
STRATEGIES: tuple[Strategy, ...] = ("lookback", "ips")
# Rows that belong to neither strategy: the shared input and upkeep both pay for.
RowStrategy = Literal["lookback", "ips", "source", "shared"]
# The IPS patterns of the stages a result file can hold (the pipeline declares which stage uses which).
Pattern = Literal["merge", "filter", "range", "forward"]
PATTERNS: tuple[Pattern, ...] = ("merge", "filter", "range", "forward")
# The pattern column also names what a non-IPS row did.
RowPattern = Literal["merge", "filter", "range", "forward", "lookback", "compaction", "expiry", "delete", "all", ""]
# The sweep table's stage for a strategy's sum over its stages.
TOTAL_STAGE = "total"
# Rows that time upkeep rather than a pipeline stage: the arrival itself, a privacy delete, maintenance.
UPKEEP_STAGES = ("ingest", "privacy_delete", "compaction", "expiry")

PHASES = ("capture", "icdc", "plan", "probe", "transform", "write", "commit")
PHASE_KEYS = tuple(f"{p}_s" for p in PHASES)
COUNTERS = ("rows_read", "bytes_read", "files_read", "rows_written", "bytes_written", "files_written", "commits")
TOTAL_KEYS = ("wall_s", "cpu_s", *COUNTERS)
# The work an IPS pattern cannot avoid for a (stage, day)'s changes (its floor): recorded by the
# pattern on its row and copied to the lookback's row of the same stage and day.
FLOOR_FIGURES = ("rows_read", "bytes_read", "rows_written", "bytes_written")
FLOOR_KEYS = tuple(f"floor_{k}" for k in FLOOR_FIGURES)
# A stage run's work split at the lookback's window: on partitions inside it (``window_``, the
# lookback's X days up to the processing date, and later dates) and on older ones (``older_``).
# Rows and bytes by the partitions they lie in; time by each side's share of rows read and written.
SPLIT_FIGURES = ("wall_s", "cpu_s", *FLOOR_FIGURES)
WINDOW_KEYS = tuple(f"window_{k}" for k in SPLIT_FIGURES)
OLDER_KEYS = tuple(f"older_{k}" for k in SPLIT_FIGURES)
# What the clock leaves out of wall_s and cpu_s: bookkeeping for the floor and the split, the memory sampler.
UNTIMED_KEYS = ("aside_wall_s", "aside_cpu_s", "sampler_cpu_s")
RATIO_KEYS = ("wall_s", "cpu_s", "bytes_read", "rows_read")
# Figures whose spread over repeats is reported beside their median.
SPREAD_KEYS = ("wall_s", "cpu_s")
# The scenario fields every result row echoes.
SCENARIO_KEYS = (
    "preset",
    "events_per_day",
    "late_fraction",
    "lookback_days",
    "beyond_window_share",
    "max_lateness_days",
    "seed",
    "engine",
    "batch_minutes",
)
# A row's identity; ``batch`` (the global arrival batch index; the day at one batch a day) tells
# apart the runs of a day at a shorter cadence.
ROW_KEYS = ("strategy", "stage", "day", "batch", "repeat")


class ResultRow(TypedDict):
    """One tidy row of ``results.parquet``: one stage of one strategy on one processing day of one repeat."""

    day: int
    batch: int
    processing_date: str
    warmup: bool
    repeat: int
    strategy: RowStrategy
    stage: str
    pattern: RowPattern
    wall_s: float
    cpu_s: float
    rows_read: int
    bytes_read: int
    files_read: int
    rows_written: int
    bytes_written: int
    files_written: int
    commits: int
    partitions_written: int
    peak_rss_bytes: int
    capture_s: float
    icdc_s: float
    plan_s: float
    probe_s: float
    transform_s: float
    write_s: float
    commit_s: float
    partitions: int
    captured_files: int
    captured_rows: int
    rewritten_partitions: int
    non_append_snapshots: int
    floor_rows_read: int
    floor_bytes_read: int
    floor_rows_written: int
    floor_bytes_written: int
    window_wall_s: float
    window_cpu_s: float
    window_rows_read: int
    window_bytes_read: int
    window_rows_written: int
    window_bytes_written: int
    older_wall_s: float
    older_cpu_s: float
    older_rows_read: int
    older_bytes_read: int
    older_rows_written: int
    older_bytes_written: int
    aside_wall_s: float
    aside_cpu_s: float
    sampler_cpu_s: float
    preset: str
    events_per_day: int
    late_fraction: float
    lookback_days: int
    beyond_window_share: float
    max_lateness_days: int
    seed: int
    engine: str
    batch_minutes: int


RESULT_COLUMNS = tuple(ResultRow.__annotations__)


class VerdictRecord(TypedDict, total=False):
    """A strategy's verdict in ``summary.json``'s ``correctness``; the lookback's carries its explanations."""

    equal_to_oracle: bool
    mismatched_rows: int
    unexplained_mismatched_rows: int
    late_events_beyond_window: int | None
    deleted_events_beyond_window: int | None
    per_stage: dict[str, dict[str, int]]


# The scenario options a sweep can vary, with how one value is read.
SWEEP_VARIABLES: dict[str, type[int] | type[float] | type[str]] = {
    "late_fraction": float,
    "lookback_days": int,
    "events_per_day": int,
    "beyond_window_share": float,
    "max_lateness_days": int,
    "duplicate_fraction": float,
    "malformed_fraction": float,
    "days": int,
    "warmup_days": int,
    "seed": int,
    "maintenance_every_days": int,
    "privacy_delete_every_days": int,
    "batch_minutes": int,
    # Physical choices, offered to both strategies alike: IPS's targets' write mode, the engine.
    "merge_mode": str,
    "engine": str,
}
SWEEP_FIGURES = (*TOTAL_KEYS, "partitions_written", *PHASE_KEYS)
SWEEP_SPREAD_COLUMNS = tuple(f"{k}_{end}" for k in SPREAD_KEYS for end in ("min", "max"))
SWEEP_RATIO_COLUMNS = tuple(f"ips_over_lookback_{k}" for k in RATIO_KEYS)
# IPS rows: the in-window ratio and the older partitions' share (summary.json's split), the distance from the floor.
SWEEP_SPLIT_COLUMNS = ("in_window_ips_over_lookback_wall_s", "older_share_of_ips_wall", "ips_over_floor_rows_read")
SWEEP_SCENARIO_COLUMNS = tuple(dict.fromkeys(("preset", "engine", "repeats", "measured_days", *SWEEP_VARIABLES)))
SWEEP_CORRECTNESS_COLUMNS = (
    "equal_to_oracle",
    "mismatched_rows",
    "unexplained_mismatched_rows",
    "late_events_beyond_window",
    "passed",
)
# Freshness of a point (summary.json's): per stage row that table's, on the total row the last stage's.
SWEEP_FRESHNESS_COLUMNS = ("freshness_p50_s", "freshness_p95_s", "freshness_never")
SWEEP_KEY_COLUMNS = ("point", "strategy", "stage")
# The sweep table: one row per point x strategy x stage, plus a TOTAL_STAGE row per strategy.
SWEEP_COLUMNS = (
    "point",
    "point_index",
    *SWEEP_SCENARIO_COLUMNS,
    "strategy",
    "stage",
    "pattern",
    *SWEEP_FIGURES,
    *SWEEP_SPREAD_COLUMNS,
    *SWEEP_RATIO_COLUMNS,
    *SWEEP_SPLIT_COLUMNS,
    *SWEEP_CORRECTNESS_COLUMNS,
    *SWEEP_FRESHNESS_COLUMNS,
    "peak_rss_bytes",
    "error",
)


def passed(correctness: dict[str, VerdictRecord]) -> bool:
    """Exit 0 only when IPS equals the oracle and every lookback mismatch is explained."""
    ok = True
    if "ips" in correctness:
        ok &= bool(correctness["ips"]["equal_to_oracle"])
    if "lookback" in correctness:
        ok &= correctness["lookback"]["unexplained_mismatched_rows"] == 0
    return ok


def pipeline_stages(stages: Iterable[str]) -> list[str]:
    """The pipeline's stages among result rows' stage names, in the order the rows first name them."""
    return [s for s in dict.fromkeys(stages) if s not in UPKEEP_STAGES and s != TOTAL_STAGE]


def warm(df: pd.DataFrame) -> pd.DataFrame:
    """With repeats, the first (cold: fresh caches, first imports) is kept apart from the warm ones."""
    return df[df.repeat > 0] if df.repeat.nunique() > 1 else df


def aggregate_repeats(rows: pd.DataFrame, keys: Sequence[str]) -> dict[str, Any]:
    """The figure of ``rows`` (one group: a strategy, or a strategy's stage) over repeats.

    Each repeat's rows are summed (over days, and stages when the group has
    several); the figure is the median of those sums over the repeats given
    (pass ``warm(...)`` rows to leave the cold one out), with the min and max
    of each ``SPREAD_KEYS`` figure and the group's peak RSS.
    """
    per_repeat = rows.groupby("repeat")[list(keys)].sum()
    out: dict[str, Any] = {k: _num(statistics.median(per_repeat[k].tolist())) for k in keys}
    for k in SPREAD_KEYS:
        if k in per_repeat.columns:
            out[f"{k}_min"] = float(per_repeat[k].min())
            out[f"{k}_max"] = float(per_repeat[k].max())
    if "peak_rss_bytes" in rows.columns:
        out["peak_rss_bytes"] = int(rows.peak_rss_bytes.max())
    return out


def _num(v: Any) -> float | int:
    """A median as JSON would want it: a whole count stays an int."""
    f = float(v)
    return int(f) if f.is_integer() and abs(f) < 2**53 else f


def floor_figures(
    floor: dict[str, Any], ips: dict[str, Any], lookback: dict[str, Any] | None
) -> dict[str, dict[str, Any] | None]:
    """A stage's floor (``FLOOR_FIGURES``) beside what each strategy read and wrote, and each over the floor."""
    out: dict[str, dict[str, Any] | None] = {"floor": floor, "ips": ips, "lookback": lookback}
    for strategy, figures in (("ips", ips), ("lookback", lookback)):
        out[f"{strategy}_over_floor"] = (
            {k: ratio(figures.get(k), floor.get(k)) for k in FLOOR_FIGURES} if figures is not None else None
        )
    return out


def split_figures(
    ips_window: dict[str, Any], ips_older: dict[str, Any], lookback_window: dict[str, Any], ips_total: dict[str, Any]
) -> dict[str, Any]:
    """IPS's work in the lookback's window over the lookback's (its saving), and on older partitions (the price
    of correctness) with its share of IPS's wall time. Arguments are ``window_*``/``older_*`` sums."""
    window = {k: ips_window.get(f"window_{k}") for k in SPLIT_FIGURES}
    older = {k: ips_older.get(f"older_{k}") for k in SPLIT_FIGURES}
    base = {k: lookback_window.get(f"window_{k}") for k in SPLIT_FIGURES}
    return {
        "in_window": {
            "ips": window,
            "lookback": base,
            "ratio_ips_over_lookback": {k: ratio(window[k], base[k]) for k in SPLIT_FIGURES},
        },
        "older": {"ips": older, "share_of_ips_wall": ratio(older["wall_s"], ips_total.get("wall_s"))},
    }


def ratio(new: float | None, base: float | None) -> float | None:
    """``new / base``, or None when there is no base to divide by."""
    return new / base if new is not None and base else None


def pct(v: float | None, digits: int = 1) -> str:
    """A ratio as a percentage for a report; a dash when there is none (None or NaN)."""
    if v is None or v != v:
        return "–"
    return f"{100 * v:.{digits}f} %"
