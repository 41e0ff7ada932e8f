"""One scenario, run (with repeats) into a result directory: result files and report."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench import results
from bench.contract import SCENARIO_FILE
from bench.equality import Verdict
from bench.machine import machine_info
from bench.runner import simulate
from bench.scenario import Scenario
from datagen.ingest import EventsFile
from reports.render import render


def run_scenario(
    scenario: Scenario, events: EventsFile | None, out: Path, warehouse_root: Path, progress: bool = True
) -> tuple[dict[str, Any], Path, bool]:
    """Simulate ``scenario`` ``repeats`` times, write the result files and the report into ``out``.

    Returns:
        The summary, the report's path, and whether the run passed (IPS equal
        to the oracle, every lookback mismatch explained) in every repeat.
    """
    frames = []
    verdicts: dict[str, Verdict] = {}
    daily: list[dict[str, Any]] = []
    freshness: dict[str, Any] | None = None
    peak = 0
    engine_start: list[float] = []
    t0 = time.perf_counter()
    for r in range(scenario.repeats):
        wh = warehouse_root if scenario.repeats == 1 else warehouse_root / f"repeat-{r}"
        wh.mkdir(parents=True, exist_ok=True)
        (wh / SCENARIO_FILE).write_text(json.dumps(scenario.as_dict(), indent=2))
        run = simulate(scenario, wh, events, progress=progress)
        frame = results.results_frame(run.rows, scenario)
        frame["repeat"] = r
        frames.append(frame)
        # A run passes only if every repeat does: keep the worst verdicts.
        if not verdicts or not results.passed(run.verdicts):
            verdicts = run.verdicts
        daily = daily or run.daily_checks
        freshness = freshness or run.freshness
        peak = max(peak, run.peak_rss_bytes)
        engine_start.append(run.engine_start_s)
    df = pd.concat(frames, ignore_index=True)
    summary = results.summarize(
        df,
        scenario,
        verdicts,
        {
            "machine": machine_info(),
            "elapsed_s": time.perf_counter() - t0,
            "peak_rss_bytes": peak,
            # Engine start-up (a Spark session takes seconds) is kept out of every stage.
            "engine_start_s": engine_start,
            "warehouse": str(warehouse_root.resolve()),
            "daily_checks": daily,
            # Of the first repeat: seconds from each event's arrival until each table includes it.
            "freshness": freshness,
            # A user's events file, described by what it holds (the generator's settings do not apply).
            "events_file": events.describe() if events is not None else None,
        },
    )
    results.write(out, df, summary)
    return summary, render(out), results.passed(verdicts)
