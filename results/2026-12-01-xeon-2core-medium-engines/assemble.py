"""Gather finished ``ipsbench run`` directories into one sweep directory, then render its report.

``ipsbench sweep`` varies scenario figures only and runs DuckDB only, so the engine x write-mode grid
was run as four ``ipsbench run``s into ``OUT/points/engine=E,merge_mode=M/`` (each with its exit code
in ``exit_code``); this script writes the sweep table and summary those points would have given
(``bench.sweep.point_rows``, ``write_sweep``: the sweep's own code), so ``ipsbench report OUT``
re-renders it from result files only.

    .venv/bin/python results/2026-12-01-xeon-2core-medium-engines/assemble.py runs/engines-medium
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from bench.contract import POINTS_DIR, RESULTS_PARQUET, SUMMARY_JSON
from bench.scenario import Scenario
from bench.sweep import Point, point_rows, write_sweep
from reports.sweep import render_sweep

VARIED = {"engine": ["duckdb", "spark"], "merge_mode": ["copy-on-write", "merge-on-read"]}


def main(out: Path) -> int:
    rows: list[dict] = []
    entries: list[dict] = []
    scenarios: list[Scenario] = []
    index = 0
    for engine in VARIED["engine"]:
        for mode in VARIED["merge_mode"]:
            values = {"engine": engine, "merge_mode": mode}
            name = ",".join(f"{k}={v}" for k, v in values.items())
            point_dir = out / POINTS_DIR / name
            if not (point_dir / SUMMARY_JSON).is_file():
                print(f"{name}: no {SUMMARY_JSON}, left out", file=sys.stderr)
                continue
            summary = json.loads((point_dir / SUMMARY_JSON).read_text())
            scenario = Scenario.from_dict(summary["scenario"])
            assert (scenario.engine, scenario.merge_mode) == (engine, mode), name
            code = int((point_dir / "exit_code").read_text())
            passed = code == 0
            point = Point(index, values, scenario)
            rows += point_rows(point, pd.read_parquet(point_dir / RESULTS_PARQUET), summary, passed)
            entries.append(
                {
                    "point": name,
                    "dir": f"{POINTS_DIR}/{name}",
                    "values": values,
                    "passed": passed,
                    "exit_code": code,
                    "ratio_ips_over_lookback": summary.get("ratio_ips_over_lookback", {}),
                    "correctness": summary.get("correctness", {}),
                    "peak_rss_bytes": summary.get("peak_rss_bytes"),
                    "elapsed_s": summary.get("elapsed_s"),
                    "engine_start_s": summary.get("engine_start_s"),
                }
            )
            scenarios.append(scenario)
            index += 1
    fixed = scenarios[0].as_dict()
    for name in VARIED:
        fixed.pop(name)
    for sc in scenarios[1:]:
        other = {k: v for k, v in sc.as_dict().items() if k not in VARIED}
        assert other == fixed, f"points differ beyond {list(VARIED)}"
    first = json.loads((out / POINTS_DIR / entries[0]["point"] / SUMMARY_JSON).read_text())
    sweep = {
        "varied": VARIED,
        "scenario": fixed,
        "engine": scenarios[0].engine,
        "machine": first["machine"],
        "complete": len(entries) == 4,
        "passed": all(e["passed"] for e in entries),
        "points": entries,
        "elapsed_s": sum(e["elapsed_s"] or 0 for e in entries),
        "assembled_from_runs": True,
    }
    write_sweep(out, rows, sweep)
    print(f"report: {render_sweep(out)}")
    return 0 if sweep["passed"] and sweep["complete"] else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
