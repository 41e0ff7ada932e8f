"""report.md + PNG plots from ``results.parquet`` and ``summary.json`` only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from bench.contract import (
    PHASE_KEYS,
    REPORT_MD,
    RESULTS_PARQUET,
    SPREAD_KEYS,
    STRATEGIES,
    SUMMARY_JSON,
    aggregate_repeats,
    pct,
    pipeline_stages,
    warm,
)
from reports import floor, freshness, growth, netflix, restatement
from reports.style import STRATEGY_COLORS, mib, plural


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _repeats(df: pd.DataFrame) -> int:
    return int(df["repeat"].nunique()) if "repeat" in df.columns else 1


def plot_cost_per_day(df: pd.DataFrame, out: Path) -> str:
    """Wall time per processing day, per strategy and stage."""
    data = warm(df[df.strategy.isin(STRATEGIES)])
    stages = pipeline_stages(data.stage)
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 4), sharex=True, squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        # A day's runs (one per arrival batch at a sub-daily cadence) summed per repeat first.
        per_repeat = data[data.stage == stage].groupby(["strategy", "day", "repeat"]).wall_s.sum()
        by_day = per_repeat.groupby(["strategy", "day"])
        median, low, high = (by_day.median().unstack(0), by_day.min().unstack(0), by_day.max().unstack(0))
        for strategy in median.columns:
            color = STRATEGY_COLORS[strategy]
            ax.plot(median.index, median[strategy], label=strategy, marker=".", color=color)
            if _repeats(df) > 1:
                ax.fill_between(median.index, low[strategy], high[strategy], color=color, alpha=0.2)
        spread = f", band: min–max over {data['repeat'].nunique()} warm repeats" if _repeats(df) > 1 else ""
        ax.set_title(f"{stage}: wall time per day (s, lower is better{spread})", fontsize=9)
        ax.set_xlabel("processing day")
        ax.set_ylabel("wall s")
        last_warmup = df[df.warmup].day.max() if df.warmup.any() else None
        if last_warmup is not None:
            ax.axvspan(-0.5, last_warmup + 0.5, color="grey", alpha=0.15, label="warm-up")
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "cost_per_day.png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def plot_stage_totals(summary: dict[str, Any], out: Path) -> str:
    """Measured-days wall time per stage, lookback vs IPS, with the pattern used."""
    by = {(s["strategy"], s["stage"]): s for s in summary["stages"]}
    stages = pipeline_stages(s["stage"] for s in summary["stages"])
    fig, ax = plt.subplots(figsize=(max(8.0, 2.7 * len(stages)), 4))
    width = 0.38
    for i, strategy in enumerate(STRATEGIES):
        vals = [by.get((strategy, st), {}).get("wall_s", 0) for st in stages]
        xs = [x + (i - 0.5) * width for x in range(len(stages))]
        ax.bar(xs, vals, width, label=strategy, color=STRATEGY_COLORS[strategy])
    labels = []
    for st in stages:
        p = by.get(("ips", st), {}).get("pattern", "")
        labels.append(f"{st}\n(IPS: {p})" if p else st)
    ax.set_xticks(range(len(stages)), labels, fontsize=8)
    ax.set_ylabel("wall s over measured days")
    ax.set_title("Total wall time per stage (s, lower is better)")
    ax.legend()
    fig.tight_layout()
    name = "stage_totals.png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def _spread_lines(df: pd.DataFrame) -> list[str]:
    """Per strategy and stage: median and min–max over warm repeats of measured-day sums, and the cold repeat."""
    measured = df[~df.warmup.astype(bool) & df.strategy.isin(STRATEGIES)]
    warm_rows = warm(measured)
    cold = measured[~measured.index.isin(warm_rows.index)]
    lines = [
        f"## Spread over {_repeats(df)} repeats",
        "",
        "Each repeat is a whole run on a fresh warehouse; figures are sums over its measured days. The first "
        f"repeat runs cold (fresh caches, first imports) and is kept apart; medians are over the "
        f"{plural(warm_rows['repeat'].nunique(), 'warm one')}.",
        "",
        "| strategy | stage | wall s: warm median (min–max) | cpu s: warm median (min–max) | "
        "wall s: cold | cpu s: cold |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for strategy in STRATEGIES:
        rows = warm_rows[warm_rows.strategy == strategy]
        if rows.empty:
            continue
        stages = [str(st) for st in rows.stage.unique()]
        for stage in [*stages, "total"]:
            part = rows if stage == "total" else rows[rows.stage == stage]
            figure = aggregate_repeats(part, SPREAD_KEYS)
            cells = [f"{figure[k]:.2f} ({figure[f'{k}_min']:.2f}–{figure[f'{k}_max']:.2f})" for k in SPREAD_KEYS]
            first = cold[(cold.strategy == strategy) & ((cold.stage == stage) | (stage == "total"))]
            cells += [f"{first[k].sum():.2f}" if not first.empty else "–" for k in SPREAD_KEYS]
            lines.append(f"| {strategy} | {stage} | {' | '.join(cells)} |")
    return [*lines, ""]


def _memory_lines(summary: dict[str, Any]) -> list[str]:
    """Peak RSS: per strategy when the summary has it, else the run's process."""
    per_strategy = {
        s: t["peak_rss_bytes"] for s, t in summary.get("totals", {}).items() if t.get("peak_rss_bytes") is not None
    }
    peak = summary.get("peak_rss_bytes")
    if isinstance(peak, dict):
        per_strategy = {**peak, **per_strategy}
        peak = None
    if not per_strategy and peak is None:
        return []
    lines = ["## Peak memory", ""]
    if per_strategy:
        lines += ["| strategy | peak RSS MiB (lower is better) |", "|---|---:|"]
        lines += [f"| {s} | {v / 2**20:,.0f} |" for s, v in per_strategy.items()]
        lines += [
            "",
            "Sampled while each strategy's stages ran. It is the process's resident memory, so it also holds "
            "what earlier stages left allocated: the two figures are not independent.",
            "",
        ]
    if peak is not None:
        lines += [
            f"Peak RSS of the run's process: {peak / 2**20:,.0f} MiB (both strategies and the oracle ran in it, "
            "so this is their joint high-water mark).",
            "",
        ]
    return lines


def machine_lines(summary: dict[str, Any]) -> list[str]:
    """The machine and commit a result was measured on, as a report paragraph."""
    m = summary.get("machine", {})
    if not m:
        return []
    return [
        f"Machine: {m.get('cpu')}, {m.get('cores')} cores, "
        f"{(m.get('memory_bytes') or 0) / 2**30:.0f} GiB; commit `{(m.get('git_commit') or '?')[:10]}`.",
        "",
    ]


def _header_lines(summary: dict[str, Any], repeats: int) -> list[str]:
    sc = summary["scenario"]
    lines = [
        "# ipsbench report",
        "",
        f"Scenario `{sc['preset']}`: {plural(summary['measured_days'], 'measured day')} "
        f"(+{plural(sc['warmup_days'], 'warm-up day')}), {sc['events_per_day']:,} events/day, "
        f"{100 * sc['late_fraction']:.1f} % late ({100 * sc['beyond_window_share']:.1f} % of them beyond the "
        f"{sc['lookback_days']}-day window, up to {sc['max_lateness_days']} days late), engine {summary['engine']}, "
        f"seed {sc['seed']}" + (f", {repeats} repeats (figures are medians over them)." if repeats > 1 else "."),
        "",
    ]
    lines += machine_lines(summary)
    return lines


def _totals_lines(summary: dict[str, Any]) -> list[str]:
    totals = summary["totals"]
    if not totals:
        return []
    lines = [
        "## Totals over measured days",
        "",
        "| strategy | wall s | cpu s | rows read | bytes read | rows written | bytes written | files written |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s, t in totals.items():
        lines.append(
            f"| {s} | {_fmt(t['wall_s'], 2)} | {_fmt(t['cpu_s'], 2)} | {_fmt(t['rows_read'])} | "
            f"{_fmt(t['bytes_read'])} | {_fmt(t['rows_written'])} | {_fmt(t['bytes_written'])} | "
            f"{_fmt(t['files_written'])} |"
        )
    r = summary["ratio_ips_over_lookback"]
    if r:
        lines += [
            "",
            f"**IPS / lookback**: wall {pct(r['wall_s'])}, CPU {pct(r['cpu_s'])}, "
            f"bytes read {pct(r['bytes_read'])}, rows read {pct(r['rows_read'])}.",
        ]
    return [*lines, ""]


def _stage_lines(summary: dict[str, Any], repeats: int) -> list[str]:
    spread = " (min–max over warm repeats)" if repeats > 1 else ""
    lines = [
        "## Per stage",
        "",
        f"| strategy | stage | pattern | wall s{spread} | rows read | partitions written | "
        "capture s | ICDC build s | plan s | probe s | transform s | write s | commit s | peak RSS MiB | "
        "IPS/lookback wall |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summary["stages"]:
        ratio = s.get("ratio_over_lookback", {}).get("wall_s")
        wall = _fmt(s["wall_s"], 2)
        if repeats > 1:
            wall += f" ({_fmt(s.get('wall_s_min'), 2)}–{_fmt(s.get('wall_s_max'), 2)})"
        lines.append(
            f"| {s['strategy']} | {s['stage']} | {s['pattern']} | {wall} | {_fmt(s['rows_read'])} | "
            f"{_fmt(s.get('partitions_written'))} | "
            + " | ".join(_fmt(s.get(k), 2) for k in PHASE_KEYS)
            + f" | {mib(s.get('peak_rss_bytes'))} | {pct(ratio)} |"
        )
    return [*lines, ""]


def _correctness_lines(summary: dict[str, Any]) -> list[str]:
    verdicts = summary["correctness"]
    deletes = any(v.get("deleted_events_beyond_window") for v in verdicts.values())
    lines = [
        "## Correctness (compared with the oracle, row by row)",
        "",
        "| strategy | equal to oracle | mismatched rows | unexplained | late events beyond window |"
        + (" deleted events beyond window |" if deletes else ""),
        "|---|---|---:|---:|---:|" + ("---:|" if deletes else ""),
    ]
    for s, v in verdicts.items():
        lines.append(
            f"| {s} | {v['equal_to_oracle']} | {_fmt(v['mismatched_rows'])} | "
            f"{_fmt(v.get('unexplained_mismatched_rows', v['mismatched_rows']))} | "
            f"{_fmt(v.get('late_events_beyond_window'))} |"
            + (f" {_fmt(v.get('deleted_events_beyond_window'))} |" if deletes else "")
        )
    why = "Lookback mismatches are rows whose keys hold events that arrived after their date had left the window"
    if deletes:
        why += ", or events deleted upstream after their date had left it"
    return [*lines, "", f"{why}: its known inaccuracy, measured. Unexplained mismatches would be a bug.", ""]


def render(out: Path) -> Path:
    """Write ``report.md`` and its plots into ``out`` from its result files."""
    df = pd.read_parquet(out / RESULTS_PARQUET)
    summary = json.loads((out / SUMMARY_JSON).read_text())
    repeats = _repeats(df)
    plots = [plot_stage_totals(summary, out), plot_cost_per_day(df, out)]
    lines = _header_lines(summary, repeats) + floor.headline(summary) + _totals_lines(summary)
    lines += floor.split_section(summary) + floor.floor_section(summary) + _stage_lines(summary, repeats)
    if repeats > 1:
        lines += _spread_lines(df)
    lines += _memory_lines(summary) + _correctness_lines(summary) + restatement.section(summary)
    lines += freshness.section(summary) + growth.section(summary) + netflix.section(summary)
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / REPORT_MD
    path.write_text("\n".join(lines))
    return path
