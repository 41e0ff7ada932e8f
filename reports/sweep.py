"""A sweep's report.md + PNG plots from ``sweep_results.parquet`` and ``sweep_summary.json`` only.

Each plot answers one question and is drawn only when the sweep varied the
value it needs (with at least two values). When several options were varied,
a plot against one of them draws one line per combination of the others.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pandas as pd

from bench.contract import STRATEGIES, SWEEP_RESULTS, SWEEP_SUMMARY, TOTAL_STAGE, pct, pipeline_stages
from reports.crossover import crossings, describe, use_log_scale
from reports.engines import engines_lines, multi_valued
from reports.floor import times
from reports.freshness import duration
from reports.render import machine_lines
from reports.style import LINESTYLES, STRATEGY_COLORS, count, mib, plural, stage_colors

# What each varied option means on an axis.
AXIS_LABELS = {
    "late_fraction": "late fraction (share of events arriving ≥ 1 day late)",
    "lookback_days": "lookback window X (days)",
    "events_per_day": "events per day",
    "beyond_window_share": "share of late events beyond the window",
    "max_lateness_days": "max lateness (days late data reaches back)",
    "duplicate_fraction": "duplicate fraction",
    "malformed_fraction": "malformed fraction",
    "days": "processing days",
    "warmup_days": "warm-up days",
    "seed": "seed",
    "batch_minutes": "arrival batch length (minutes)",
}
COST_QUESTIONS = {
    "lookback_days": "Does cost grow with the lookback window? (the lookback should, IPS should not)",
    "events_per_day": "How does cost grow with scale?",
    "max_lateness_days": "How does cost grow with how far back late data reaches?",
    "batch_minutes": "How does cost grow as batches get shorter (IPS runs after every batch)?",
}
FRESHNESS_QUESTION = "Which schedule? Freshness (p95) against cost per simulated day"
ACCURACY_VARIABLES = ("lookback_days", "beyond_window_share")
# Values that name a case rather than measure an amount: evenly spaced on the axis, one tick each.
CATEGORICAL_VARIABLES = ("seed",)


def _fmt_value(name: str) -> Callable[[float], str]:
    if name in ("late_fraction", "beyond_window_share", "duplicate_fraction", "malformed_fraction"):
        return lambda x: f"{x:.3g} ({100 * x:.3g} %)"
    return lambda x: f"{x:.4g}"


def _ips_patterns(df: pd.DataFrame) -> dict[str, str]:
    """Each stage's IPS pattern, from the rows of points that ran (a failed point's rows have none)."""
    ips = df[(df.strategy == "ips") & df.pattern.notna()]
    return dict(zip(ips.stage, ips.pattern, strict=True))


def _stage_labels(df: pd.DataFrame) -> dict[str, str]:
    """Pipeline stages in the rows' order, each labelled with its IPS pattern, then the total."""
    patterns = _ips_patterns(df)
    labels = {s: f"{s} ({patterns[s]})" if s in patterns else s for s in pipeline_stages(df.stage)}
    return {**labels, TOTAL_STAGE: "total"}


def _facets(df: pd.DataFrame, var: str, varied: dict[str, list[Any]]) -> Iterator[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of the other varied options; one unlabelled facet if none."""
    others = [k for k in multi_valued(varied) if k != var]
    if not others:
        yield "", df
        return
    for values, part in df.groupby(others, sort=True):
        values = values if isinstance(values, tuple) else (values,)
        yield ", ".join(f"{k}={v}" for k, v in zip(others, values, strict=True)), part


def _label(base: str, facet: str) -> str:
    return f"{base} ({facet})" if facet else base


def _legend_right(ax: Any) -> None:
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)


def _save(fig: Any, out: Path, name: str, layout: bool = True) -> str:
    if layout:
        fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return name


def x_positions(var: str, xs: list[Any]) -> dict[Any, float]:
    """Where each value of ``var`` sits on the x axis: the value itself, or its rank when categorical."""
    if var in CATEGORICAL_VARIABLES:
        return {x: float(i) for i, x in enumerate(sorted(xs))}
    return {x: float(x) for x in xs}


def _axis(ax: Any, var: str, xs: list[Any]) -> None:
    ax.set_xlabel(AXIS_LABELS.get(var, var))
    if var in CATEGORICAL_VARIABLES:
        ax.set_xticks(range(len(xs)), [str(x) for x in sorted(xs)])
    elif use_log_scale(xs):
        ax.set_xscale("log")


def _ips_stages(df: pd.DataFrame) -> list[str]:
    stages = set(df[df.strategy == "ips"].stage)
    return [s for s in _stage_labels(df) if s in stages]


def plot_ratio_vs_late_fraction(df: pd.DataFrame, varied: dict[str, list[Any]], out: Path) -> str:
    """IPS/lookback wall per pattern vs late fraction, the ratio = 1 line and each crossing marked."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    ips = df[df.strategy == "ips"]
    xs = sorted(ips.late_fraction.unique().tolist())
    log_x = use_log_scale(xs)
    labels = _stage_labels(df)
    colors = stage_colors(labels)
    for i, (facet, part) in enumerate(_facets(ips, "late_fraction", varied)):
        for stage in _ips_stages(part):
            s = part[part.stage == stage].sort_values("late_fraction")
            x, y = s.late_fraction.tolist(), s.ips_over_lookback_wall_s.astype(float).tolist()
            ax.plot(
                x,
                y,
                marker="o",
                color=colors[stage],
                linestyle=LINESTYLES[i % len(LINESTYLES)],
                label=_label(labels[stage], facet),
            )
            for c in crossings(x, y, log_x):
                ax.plot([c.x], [1.0], marker="X", markersize=11, color=colors[stage], linestyle="none")
                ax.annotate(f"{c.x:.3g}", (c.x, 1.0), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.text(xs[0], 1.0, " ratio = 1: same cost", va="top", fontsize=8, color="grey")
    _axis(ax, "late_fraction", xs)
    ax.set_ylabel("IPS / lookback wall time")
    ax.set_title("IPS / lookback wall time vs late fraction (ratio, lower is better; x marks a crossover)", fontsize=10)
    _legend_right(ax)
    return _save(fig, out, "ratio_vs_late_fraction.png")


def plot_cost_vs(df: pd.DataFrame, var: str, varied: dict[str, list[Any]], out: Path) -> str:
    """Wall time over measured days per strategy vs ``var``: one panel for the total and one per stage."""
    stage_labels = _stage_labels(df)
    stages = [s for s in stage_labels if s in set(df.stage)]
    fig, axes = plt.subplots(1, len(stages), figsize=(4.2 * len(stages), 4), squeeze=False)
    xs = sorted(df[var].unique().tolist())
    at = x_positions(var, xs)
    for ax, stage in zip(axes[0], stages, strict=True):
        for i, (facet, part) in enumerate(_facets(df[df.stage == stage], var, varied)):
            for strategy, s in part.groupby("strategy", sort=False):
                s = s.sort_values(var)
                ax.plot(
                    s[var].map(at),
                    s.wall_s.astype(float),
                    marker="o",
                    color=STRATEGY_COLORS[str(strategy)],
                    linestyle=LINESTYLES[i % len(LINESTYLES)],
                    label=_label(str(strategy), facet),
                )
        _axis(ax, var, xs)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("wall s over measured days")
        ax.set_title(f"{stage_labels[stage]}: wall time (s, lower is better)", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=7, loc="lower center", ncol=min(len(labels), 4))
    fig.suptitle(COST_QUESTIONS.get(var, f"How does cost change with {var}?"), fontsize=10)
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(labels) / 4), 1, 1))
    return _save(fig, out, f"cost_vs_{var}.png", layout=False)


def _cadence_lines(df: pd.DataFrame) -> list[str]:
    """Per batch length and strategy: cost per simulated day and the last stage's freshness; where IPS's
    daily cost passes the lookback's."""
    total = df[df.stage == TOTAL_STAGE].sort_values(["batch_minutes", "strategy"], ascending=[False, True])
    lines = [
        "## Cadence: cost per simulated day and freshness",
        "",
        "Cost: a strategy's stages and its own upkeep per simulated day; freshness: of the last stage, "
        "all events after the warm-up.",
        "",
        "| batch minutes | strategy | CPU s / day | wall s / day | last stage freshness p50 | p95 | never |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for _, r in total.iterrows():
        days = float(r.measured_days)
        lines.append(
            f"| {r.batch_minutes} | {r.strategy} | {r.cpu_s / days:.2f} | {r.wall_s / days:.2f} | "
            f"{duration(r.freshness_p50_s)} | {duration(r.freshness_p95_s)} | {count(r.freshness_never)} |"
        )
    cpu = {(r.strategy, r.batch_minutes): r.cpu_s / float(r.measured_days) for _, r in total.iterrows()}
    daily = cpu.get(("lookback", 1_440))
    if daily is not None:
        dearer = sorted(m for (s, m), v in cpu.items() if s == "ips" and v > daily)
        where = ", ".join(f"{m}" for m in dearer) + " minutes" if dearer else "none of the lengths measured"
        lines += ["", f"IPS's CPU time per simulated day exceeds the daily lookback's ({daily:.2f} s) at: {where}."]
    return [*lines, ""]


def plot_freshness_vs_cost(df: pd.DataFrame, out: Path) -> str:
    """The frontier a schedule is picked from: each point's CPU s per simulated day against the p95
    freshness of the last stage, one curve per strategy, each point labelled with its batch length."""
    total = df[(df.stage == TOTAL_STAGE) & df.freshness_p95_s.notna()]
    fig, ax = plt.subplots(figsize=(8, 5))
    for strategy, part in total.groupby("strategy", sort=False):
        part = part.sort_values("batch_minutes")
        hours = part.freshness_p95_s.astype(float) / 3_600
        per_day = part.cpu_s.astype(float) / part.measured_days.astype(float)
        color = STRATEGY_COLORS[str(strategy)]
        ax.plot(hours, per_day, marker="o", color=color, label=str(strategy))
        if hours.max() > 1.05 * hours.min():
            for x, y, minutes in zip(hours, per_day, part.batch_minutes, strict=True):
                ax.annotate(
                    f"{minutes} min", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=7, color=color
                )
        else:
            # Runs once a day whatever the batch length: its points sit together.
            note = f"{strategy}: batches of {', '.join(str(m) for m in part.batch_minutes)} min"
            ax.annotate(
                note,
                (hours.iloc[0], per_day.min()),
                textcoords="offset points",
                xytext=(-10, -3),
                fontsize=7,
                color=color,
                ha="right",
            )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("freshness p95 of the last stage (hours from arrival, log scale; left is fresher)")
    ax.set_ylabel("CPU s per simulated day (log scale)")
    ax.set_title(FRESHNESS_QUESTION, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, out, "freshness_vs_cost.png")


def plot_accuracy_vs(df: pd.DataFrame, var: str, varied: dict[str, list[Any]], out: Path) -> str:
    """Rows wrong (all tables) and late events missed by the lookback vs ``var``, beside IPS's rows wrong."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    totals = df[df.stage == TOTAL_STAGE]
    xs = sorted(totals[var].unique().tolist())
    at = x_positions(var, xs)
    for i, (facet, part) in enumerate(_facets(totals, var, varied)):
        style = LINESTYLES[i % len(LINESTYLES)]
        lookback = part[part.strategy == "lookback"].sort_values(var)
        ips = part[part.strategy == "ips"].sort_values(var)
        if not lookback.empty:
            ax.plot(
                lookback[var].map(at),
                lookback.mismatched_rows.astype(float),
                marker="o",
                linestyle=style,
                color=STRATEGY_COLORS["lookback"],
                label=_label("lookback: rows wrong", facet),
            )
            ax.plot(
                lookback[var].map(at),
                lookback.late_events_beyond_window.astype(float),
                marker="s",
                linestyle=style,
                color="tab:cyan",
                label=_label("late events beyond the window (the lookback never sees them)", facet),
            )
        if not ips.empty:
            ax.plot(
                ips[var].map(at),
                ips.mismatched_rows.astype(float),
                marker="^",
                linestyle=style,
                color=STRATEGY_COLORS["ips"],
                label=_label("IPS: rows wrong", facet),
            )
    _axis(ax, var, xs)
    ax.set_ylabel("count over all tables")
    ax.set_title(f"Rows wrong vs {AXIS_LABELS.get(var, var)} (count, lower is better)", fontsize=10)
    _legend_right(ax)
    return _save(fig, out, f"accuracy_vs_{var}.png")


def _bar_label(point: str, varied: dict[str, list[Any]]) -> str:
    """A point's varied values, one ``name=value`` a line (those varied with two or more values)."""
    values = dict(part.split("=", 1) for part in point.split(",") if "=" in part)
    return "\n".join(f"{k}={values[k]}" for k in multi_valued(varied) if k in values) or point


def plot_patterns(df: pd.DataFrame, varied: dict[str, list[Any]], out: Path) -> str:
    """IPS/lookback wall per pattern at every point: which pattern saves most."""
    ips = df[(df.strategy == "ips") & df.ips_over_lookback_wall_s.notna()]
    points = list(dict.fromkeys(ips.sort_values("point_index").point))
    labels = [_bar_label(p, varied) for p in points]
    stages = _ips_stages(ips)
    stage_labels = _stage_labels(df)
    colors = stage_colors(stage_labels)
    fig, ax = plt.subplots(figsize=(max(8.0, 3.2 + 0.9 * len(points) * len(stages) / 3), 4.5))
    width = 0.8 / max(len(stages), 1)
    for j, stage in enumerate(stages):
        s = ips[ips.stage == stage].set_index("point")
        ratios = [float(s.ips_over_lookback_wall_s.get(p, float("nan"))) for p in points]
        ax.bar(
            [i + (j - (len(stages) - 1) / 2) * width for i in range(len(points))],
            ratios,
            width,
            color=colors[stage],
            label=stage_labels[stage],
        )
    ax.axhline(1.0, color="grey", linewidth=1)
    ax.set_xticks(range(len(points)), labels, fontsize=7)
    ax.set_ylabel("IPS / lookback wall time")
    ax.set_title("IPS / lookback wall time per pattern at each point (ratio, lower is better)", fontsize=10)
    _legend_right(ax)
    return _save(fig, out, "ratio_per_pattern.png")


def _crossover_lines(df: pd.DataFrame, varied: dict[str, list[Any]]) -> list[str]:
    ips = df[df.strategy == "ips"]
    log_x = use_log_scale(sorted(ips.late_fraction.unique().tolist()))
    lines = [
        "## Where incremental stops paying off",
        "",
        "The late fraction at which each pattern's IPS/lookback wall-time ratio reaches 1, interpolated "
        f"linearly between measured points{' in log(late fraction)' if log_x else ''}:",
        "",
        "| | pattern | crossover late fraction |",
        "|---|---|---|",
    ]
    labels = _stage_labels(df)
    for facet, part in _facets(ips, "late_fraction", varied):
        for stage in _ips_stages(part):
            s = part[part.stage == stage].sort_values("late_fraction")
            text = describe(
                s.late_fraction.tolist(),
                s.ips_over_lookback_wall_s.astype(float).tolist(),
                log_x,
                _fmt_value("late_fraction"),
            )
            lines.append(f"| {facet or 'all points'} | {labels[stage]} | {text} |")
    return [*lines, ""]


def _points_table(df: pd.DataFrame, summary: dict[str, Any]) -> list[str]:
    stages = pipeline_stages(df.stage)
    patterns = _ips_patterns(df)
    lines = [
        "## Points",
        "",
        f"| point | IPS/lookback wall: total · {' · '.join(patterns.get(s, s) for s in stages)} | "
        "in window: IPS/lookback wall | older share of IPS wall | IPS rows read × floor | IPS equal to oracle | "
        "lookback rows wrong (unexplained) | late events beyond window | peak RSS MiB: lookback · IPS | "
        "passed | report |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---|---|",
    ]
    for entry in summary["points"]:
        rows = df[df.point == entry["point"]]
        ips = rows[rows.strategy == "ips"].set_index("stage")
        lb = rows[(rows.strategy == "lookback") & (rows.stage == TOTAL_STAGE)]

        def ratio(stage: str, ips: pd.DataFrame = ips) -> str:
            return pct(ips.ips_over_lookback_wall_s.get(stage)) if stage in ips.index else "–"

        ratios = " · ".join(ratio(s) for s in (TOTAL_STAGE, *stages))
        whole = ips.loc[TOTAL_STAGE] if TOTAL_STAGE in ips.index else None
        split = (
            ("–", "–", "–")
            if whole is None
            else (
                pct(whole.get("in_window_ips_over_lookback_wall_s")),
                pct(whole.get("older_share_of_ips_wall")),
                times(whole.get("ips_over_floor_rows_read")),
            )
        )
        ips_ok = "–" if TOTAL_STAGE not in ips.index else str(ips.equal_to_oracle.get(TOTAL_STAGE))
        wrong = (
            "–"
            if lb.empty
            else f"{count(lb.mismatched_rows.iloc[0])} ({count(lb.unexplained_mismatched_rows.iloc[0])})"
        )
        missed = "–" if lb.empty else count(lb.late_events_beyond_window.iloc[0])
        totals = rows[rows.stage == TOTAL_STAGE].set_index("strategy").peak_rss_bytes
        peak_text = " · ".join(mib(totals.get(s)) for s in STRATEGIES)
        passed = "yes" if entry["passed"] else f"**no**{': ' + entry['error'] if entry.get('error') else ''}"
        link = f"[report]({entry['dir']}/report.md)" if not entry.get("error") else "–"
        lines.append(
            f"| `{entry['point']}` | {ratios} | {' | '.join(split)} | {ips_ok} "
            f"| {wrong} | {missed} | {peak_text} | {passed} | {link} |"
        )
    lines += [
        "",
        "In window: IPS's work on partitions inside the lookback's window against the lookback's; older share: "
        "what IPS spent correcting older partitions (the price of correctness); × floor: rows IPS read over the "
        "rows its patterns cannot avoid reading (each point's report details both). "
        "Figures are sums over the measured (non-warm-up) days, medians over warm repeats (with repeats, the "
        "first, cold one is left out as in each point's summary). Peak RSS is the process's resident memory "
        "sampled while the strategy's stages ran; the sweep runs its points in one process, so it includes "
        "memory that earlier points left allocated.",
        "",
    ]
    return lines


def render_sweep(out: Path) -> Path:
    """Write ``report.md`` and its plots into the sweep directory ``out`` from its result files."""
    df = pd.read_parquet(out / SWEEP_RESULTS)
    summary = json.loads((out / SWEEP_SUMMARY).read_text())
    varied: dict[str, list[Any]] = summary["varied"]
    measured = df[df.error.isna()]
    both = {"ips", "lookback"} <= set(measured.strategy) and bool(measured.ips_over_lookback_wall_s.notna().any())
    # Only options with two or more values among the points that ran give something to plot against.
    # Options with no numeric axis (the engine, the write mode) are compared in the per-stage tables instead.
    multi = [k for k in multi_valued(varied) if k in AXIS_LABELS and k in measured and measured[k].nunique() > 1]
    n_passed = sum(p["passed"] for p in summary["points"])
    sc = summary["scenario"]
    lines = [
        "# ipsbench sweep report",
        "",
        "Varied: " + "; ".join(f"`{k}` ∈ {{{', '.join(str(v) for v in vals)}}}" for k, vals in varied.items()),
        f"→ {plural(len(summary['points']), 'point')}. Fixed: preset `{sc.get('preset')}`, "
        + ", ".join(f"{k} {sc[k]}" for k in AXIS_LABELS if k in sc)
        + ("" if "engine" in varied else f", engine {summary.get('engine')}")
        + ("" if "merge_mode" in varied or "merge_mode" not in sc else f", write mode {sc['merge_mode']}")
        + f", repeats {sc.get('repeats')}.",
        "",
    ]
    lines += machine_lines(summary)
    complete = "" if summary.get("complete") else " The sweep did not finish: only the points listed ran."
    lines += [
        f"**{n_passed} of {len(summary['points'])} points passed** (IPS equal to the oracle, every "
        f"lookback mismatch explained by late events beyond the window).{complete}",
        "",
    ]
    lines += _points_table(df, summary)
    lines += engines_lines(df, summary)
    plots: list[tuple[str, str]] = []
    if both and "late_fraction" in multi:
        lines += _crossover_lines(measured, varied)
        plots.append(
            (
                "Where does IPS stop beating the lookback as late data grows?",
                plot_ratio_vs_late_fraction(measured, varied, out),
            )
        )
    if both:
        plots.append(("Which pattern saves most?", plot_patterns(measured, varied, out)))
    for var in multi:
        if var != "late_fraction":
            plots.append(
                (COST_QUESTIONS.get(var, f"How does cost change with {var}?"), plot_cost_vs(measured, var, varied, out))
            )
        if var in ACCURACY_VARIABLES:
            plots.append(
                (
                    f"How wrong is the lookback as {AXIS_LABELS[var]} changes, beside IPS?",
                    plot_accuracy_vs(measured, var, varied, out),
                )
            )
    if "batch_minutes" in multi and measured.freshness_p95_s.notna().any():
        lines += _cadence_lines(measured)
        plots.append((FRESHNESS_QUESTION, plot_freshness_vs_cost(measured, out)))
    if plots:
        lines += ["## Plots", ""]
        for question, name in plots:
            lines += [f"### {question}", "", f"![{name}]({name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path
