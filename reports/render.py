"""report.md + PNG plots from ``results.parquet`` and ``summary.json`` only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from bench import results
from reports import netflix

STAGE_ORDER = ("playback_daily", "playback_daily_agg", "title_daily_rank")
SPREAD_KEYS = ("wall_s", "cpu_s")


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _mib(v: float | None) -> str:
    return "–" if v is None else f"{v / 2**20:,.0f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def _repeats(df: pd.DataFrame) -> int:
    return int(df["repeat"].nunique()) if "repeat" in df.columns else 1


def plot_cost_per_day(df: pd.DataFrame, out: Path) -> str:
    """Wall time per processing day, per strategy and stage."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharex=True)
    data = results.warm(df[df.strategy.isin(["lookback", "ips"])])
    for ax, stage in zip(axes, STAGE_ORDER, strict=True):
        by_day = data[data.stage == stage].groupby(["strategy", "day"]).wall_s
        median, low, high = (by_day.median().unstack(0), by_day.min().unstack(0), by_day.max().unstack(0))
        for strategy in median.columns:
            line = ax.plot(median.index, median[strategy], label=strategy, marker=".")[0]
            if _repeats(df) > 1:
                ax.fill_between(median.index, low[strategy], high[strategy], color=line.get_color(), alpha=0.2)
        spread = f", band: min–max over {data['repeat'].nunique()} warm repeats" if _repeats(df) > 1 else ""
        ax.set_title(f"{stage}: wall time per day (s, lower is better{spread})", fontsize=9)
        ax.set_xlabel("processing day")
        ax.set_ylabel("wall s")
        warm = df[df.warmup].day.max() if df.warmup.any() else None
        if warm is not None:
            ax.axvspan(-0.5, warm + 0.5, color="grey", alpha=0.15, label="warm-up")
        ax.legend(fontsize=8)
    fig.tight_layout()
    name = "cost_per_day.png"
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def plot_stage_totals(summary: dict[str, Any], out: Path) -> str:
    """Measured-days wall time per stage, lookback vs IPS, with the pattern used."""
    stages = {(s["strategy"], s["stage"]): s for s in summary["stages"]}
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    for i, strategy in enumerate(("lookback", "ips")):
        vals = [stages.get((strategy, st), {}).get("wall_s", 0) for st in STAGE_ORDER]
        ax.bar([x + (i - 0.5) * width for x in range(3)], vals, width, label=strategy)
    labels = []
    for st in STAGE_ORDER:
        p = stages.get(("ips", st), {}).get("pattern", "")
        labels.append(f"{st}\n(IPS: {p})" if p else st)
    ax.set_xticks(range(3), labels, fontsize=8)
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
    measured = df[~df.warmup.astype(bool) & df.strategy.isin(["lookback", "ips"])]
    warm = results.warm(measured)
    cold = measured[~measured.index.isin(warm.index)]
    lines = [
        f"## Spread over {_repeats(df)} repeats",
        "",
        "Each repeat is a whole run on a fresh warehouse; figures are sums over its measured days. The first "
        f"repeat runs cold (fresh caches, first imports) and is kept apart; medians are over the "
        f"{warm['repeat'].nunique()} warm one(s).",
        "",
        "| strategy | stage | wall s: warm median (min–max) | cpu s: warm median (min–max) | "
        "wall s: cold | cpu s: cold |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for strategy in ("lookback", "ips"):
        rows = warm[warm.strategy == strategy]
        if rows.empty:
            continue
        stages = [str(st) for st in rows.stage.unique()]
        for stage in [*stages, "total"]:
            part = rows if stage == "total" else rows[rows.stage == stage]
            per_repeat = part.groupby("repeat")[list(SPREAD_KEYS)].sum()
            cells = [
                f"{per_repeat[k].median():.2f} ({per_repeat[k].min():.2f}–{per_repeat[k].max():.2f})"
                for k in SPREAD_KEYS
            ]
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
        f"Scenario `{sc['preset']}`: {summary['measured_days']} measured days "
        f"(+{sc['warmup_days']} warm-up), {sc['events_per_day']:,} events/day, "
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
            f"**IPS / lookback**: wall {_pct(r['wall_s'])}, CPU {_pct(r['cpu_s'])}, "
            f"bytes read {_pct(r['bytes_read'])}, rows read {_pct(r['rows_read'])}.",
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
            + " | ".join(_fmt(s.get(k), 2) for k in results.PHASE_KEYS)
            + f" | {_mib(s.get('peak_rss_bytes'))} | {_pct(ratio)} |"
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
    df, summary = results.read(out)
    repeats = _repeats(df)
    plots = [plot_stage_totals(summary, out), plot_cost_per_day(df, out)]
    lines = _header_lines(summary, repeats) + _totals_lines(summary) + _stage_lines(summary, repeats)
    if repeats > 1:
        lines += _spread_lines(df)
    lines += _memory_lines(summary) + _correctness_lines(summary) + netflix.section(summary)
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
