"""Managed backfill: preview, write-audit-publish, IPS propagation, the lookback's per-stage backfills.

Each test builds a small step-wise warehouse in-process (``init``, then ``ingest`` and
``process`` of both strategies per day), with no event arriving beyond the lookback's
window: whatever the lookback gets wrong afterwards comes from the restatement alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from bench.backfill import reached
from bench.cli import main
from bench.runner import check
from bench.scenario import SCENARIO_FILE, Scenario
from datagen.repopulate import repopulate
from pipelines.backfill import BRANCH, ancestors, dependents, make_plan, restate
from pipelines.catalog import open_catalog
from pipelines.context import StageContext
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import overwrite_partitions
from pipelines.pipeline import PIPELINE
from pipelines.recorder import NullRecorder
from reports.restatement import section as restatement_section

DAYS = 6
LOOKBACK = 3
FIRST = PIPELINE[0]


def build(wh: Path) -> Scenario:
    """A warehouse processed for DAYS days by both strategies, equal to the oracle."""
    assert (
        main(
            [
                "init",
                "--warehouse",
                str(wh),
                "--preset",
                "tiny",
                "--days",
                str(DAYS),
                "--events-per-day",
                "400",
                "--lookback-days",
                str(LOOKBACK),
                "--lateness-window-days",
                str(LOOKBACK),
                "--beyond-window-share",
                "0",
                "--maintenance-every-days",
                "0",
            ]
        )
        == 0
    )
    for day in range(DAYS):
        assert main(["ingest", "--warehouse", str(wh), "--day", str(day)]) == 0
        for strategy in ("ips", "lookback"):
            assert main(["process", "--warehouse", str(wh), "--strategy", strategy, "--day", str(day)]) == 0
    return Scenario.from_dict(json.loads((wh / SCENARIO_FILE).read_text()))


@contextmanager
def opened(wh: Path) -> Iterator[SqlCatalog]:
    catalog = open_catalog(wh)
    try:
        yield catalog
    finally:
        catalog.engine.dispose()


def mismatches(wh: Path, scenario: Scenario) -> dict[str, dict[str, int]]:
    """Mismatched rows per strategy and stage."""
    with opened(wh) as catalog:
        verdicts = check(catalog, scenario)
    return {s: {k: v["mismatched_rows"] for k, v in verdict.per_stage.items()} for s, verdict in verdicts.items()}


def snapshots(wh: Path) -> dict[str, int | None]:
    with opened(wh) as catalog:
        return {
            f"{ns}.{s.name}": catalog.load_table(f"{ns}.{s.name}").metadata.current_snapshot_id
            for ns in ("ips", "lookback")
            for s in PIPELINE
        }


def backfill(wh: Path, strategy: str, stage: str, first: date, last: date, *more: str) -> int:
    return main(
        [
            "backfill",
            "--warehouse",
            str(wh),
            "--strategy",
            strategy,
            "--stage",
            stage,
            "--from",
            first.isoformat(),
            "--to",
            last.isoformat(),
            *more,
        ]
    )


def process(wh: Path, strategy: str) -> None:
    assert main(["process", "--warehouse", str(wh), "--strategy", strategy, "--day", str(DAYS - 1)]) == 0


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Scenario]:
    """Built once; kept aside as files to be restored at its own path (Iceberg metadata holds absolute paths)."""
    root = tmp_path_factory.mktemp("backfill")
    wh = root / "wh"
    scenario = build(wh)
    kept = root / "kept"
    shutil.copytree(wh, kept)
    return wh, kept, scenario


@pytest.fixture
def warehouse(built: tuple[Path, Path, Scenario]) -> tuple[Path, Scenario]:
    """The built warehouse as it was before any test changed it."""
    wh, kept, scenario = built
    shutil.rmtree(wh)
    shutil.copytree(kept, wh)
    return wh, scenario


def test_lineage_comes_from_the_registry() -> None:
    """Downstream and upstream of a stage are read from the pipeline's declaration, in lineage order."""
    for s in PIPELINE:
        down = dependents(s.name)
        assert [d.name for d in down] == [d.name for d in PIPELINE if d in down]  # lineage order
        for d in down:
            assert s in ancestors(d.name)
            assert any(i.name == s.name or i.name in {x.name for x in down} for i in d.inputs)
        assert ancestors(s.name)[-1] == s
        up = {a.name for a in ancestors(s.name)}
        assert all(i.name in up for a in ancestors(s.name) for i in a.inputs if not i.is_source)
    readers = {s.name for s in PIPELINE if any(i.name == FIRST.name for i in s.inputs)}
    assert readers <= {d.name for d in dependents(FIRST.name)}


def outside_window(scenario: Scenario) -> tuple[date, date]:
    """The first two processing dates: outside the lookback's window on the last day."""
    return scenario.start_date, scenario.start_date + timedelta(days=1)


# The shared warehouse takes about 45 s to build: make test only.
@pytest.mark.slow
def test_preview_dry_run_and_bad_input_write_nothing(
    warehouse: tuple[Path, Scenario], capsys: pytest.CaptureFixture[str]
) -> None:
    wh, scenario = warehouse
    first, last = outside_window(scenario)
    before = snapshots(wh)
    assert backfill(wh, "ips", FIRST.name, first, last, "--dry-run") == 0
    out = capsys.readouterr().out
    assert f"restates ips.{FIRST.name}: 2 partition(s) {first}..{last}" in out
    for s in dependents(FIRST.name):
        assert f"{s.name} ({s.pattern} pattern) recomputes ips.{s.name}" in out
    assert backfill(wh, "lookback", FIRST.name, first, last, "--dry-run") == 0
    out = capsys.readouterr().out
    # The lookback's preview lists the user's next backfills, one per dependent stage, in lineage order.
    listed = [line.split("--stage ")[1].split()[0] for line in out.splitlines() if "ipsbench backfill" in line]
    assert listed == [s.name for s in dependents(FIRST.name)]
    bad = [
        ("ips", "no_such_stage", first, last),
        ("ips", FIRST.name, last, first),
        ("ips", FIRST.name, first - timedelta(days=400), first - timedelta(days=300)),
        ("nope", FIRST.name, first, last),
    ]
    for strategy, stage, a, b in bad:
        assert backfill(wh, strategy, stage, a, b) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ipsbench: error:") and "\n" not in err
    assert main(["backfill", "--warehouse", str(wh), "--stage", FIRST.name, "--from", "soon", "--to", "2026"]) == 2
    nowhere = str(wh.parent / "nowhere")
    assert (
        main(["backfill", "--warehouse", nowhere, "--stage", FIRST.name, "--from", "2026-01-01", "--to", "2026-01-02"])
        == 2
    )
    assert snapshots(wh) == before


def corrupt(catalog: SqlCatalog, table_name: str, dates: list[date]) -> None:
    """A bad write: the partitions ``dates`` rewritten with view_seconds doubled (one OVERWRITE)."""
    table = catalog.load_table(table_name)
    where = " OR ".join(f"event_date = '{d.isoformat()}'" for d in dates)
    rows = table.scan(row_filter=where).to_arrow()
    i = rows.schema.get_field_index("view_seconds")
    rows = rows.set_column(
        i, rows.schema.field(i), pc.multiply(rows.column(i), pa.scalar(2, rows.schema.field(i).type))
    )
    overwrite_partitions(table, [rows.sort_by("event_date")], dates, NullRecorder())


@pytest.mark.slow
def test_ips_backfill_propagates_by_itself(warehouse: tuple[Path, Scenario]) -> None:
    wh, scenario = warehouse
    first, last = outside_window(scenario)
    with opened(wh) as catalog:
        corrupt(catalog, FIRST.table("ips"), [first, last])
    process(wh, "ips")  # the bad write is an OVERWRITE too: IPS carries it downstream
    wrong = mismatches(wh, scenario)["ips"]
    assert all(wrong[s.name] for s in (FIRST, *dependents(FIRST.name)) if s.name != "title_take_rate")
    assert backfill(wh, "ips", FIRST.name, first, last) == 0
    assert mismatches(wh, scenario)["ips"][FIRST.name] == 0
    process(wh, "ips")  # no user step beyond the backfill
    assert not any(mismatches(wh, scenario)["ips"].values())


@pytest.mark.slow
def test_repopulation_ips_by_itself_lookback_one_backfill_per_stage(warehouse: tuple[Path, Scenario]) -> None:
    wh, scenario = warehouse
    first, last = outside_window(scenario)
    with opened(wh) as catalog:
        done = repopulate(catalog, first, last)
    assert done.corrected_rows > 0
    process(wh, "ips")
    process(wh, "lookback")
    after = mismatches(wh, scenario)
    assert not any(after["ips"].values())  # IPS: no user step at all
    assert after["lookback"][FIRST.name] > 0  # the lookback's window does not reach the repopulated dates
    with opened(wh) as catalog:
        plan = make_plan(catalog, FIRST.name, "lookback", first, last)
    order = [plan.restate.stage, *(r.stage for r in plan.downstream)]
    assert len(order) == plan.user_steps == 1 + len(dependents(FIRST.name))
    for step, s in enumerate(order, start=1):
        assert backfill(wh, "lookback", s.name, first, last) == 0
        wrong = mismatches(wh, scenario)["lookback"]
        # Equal exactly when every stage has been backfilled: not a step earlier.
        assert (not any(wrong.values())) == (step == len(order)), (step, wrong)


@pytest.mark.slow
def test_failed_audit_leaves_main_unchanged(
    warehouse: tuple[Path, Scenario], capsys: pytest.CaptureFixture[str]
) -> None:
    wh, scenario = warehouse
    first, last = outside_window(scenario)
    with opened(wh) as catalog:
        repopulate(catalog, first, last)
    # Out of lineage order: the second stage restated from a first stage not yet restated
    # differs from the oracle, so the audit refuses to publish it.
    second = dependents(FIRST.name)[0]
    before = snapshots(wh)
    assert backfill(wh, "lookback", second.name, first, last) == 1
    assert "audit failed" in capsys.readouterr().out
    assert snapshots(wh) == before
    with opened(wh) as catalog:
        assert BRANCH not in catalog.load_table(second.table("lookback")).metadata.refs
    # In lineage order the same restatement passes and is published.
    assert backfill(wh, "lookback", FIRST.name, first, last) == 0
    assert backfill(wh, "lookback", second.name, first, last) == 0
    after = snapshots(wh)
    assert after[second.table("lookback")] != before[second.table("lookback")]
    assert mismatches(wh, scenario)["lookback"][second.name] == 0


class Killed(Exception):
    """Stands for a kill at a fault point."""


@pytest.mark.slow
def test_killed_backfill_resumes(warehouse: tuple[Path, Scenario]) -> None:
    wh, scenario = warehouse
    first, last = outside_window(scenario)
    with opened(wh) as catalog:
        repopulate(catalog, first, last)
        plan = make_plan(catalog, FIRST.name, "lookback", first, last)
        table = plan.restate.table
        before = catalog.load_table(table).metadata.current_snapshot_id
        assert before is not None

        def kill(point: str) -> None:
            if point == "before_publish":
                raise Killed(point)

        engine = DuckDBEngine()
        try:
            with pytest.raises(Killed):
                restate(StageContext(catalog, engine, fault=kill), plan.restate)
        finally:
            engine.close()
        assert catalog.load_table(table).metadata.current_snapshot_id == before
        # A kill -9 runs no cleanup: it leaves the branch behind, which the next attempt drops.
        t = catalog.load_table(table)
        with t.manage_snapshots() as ms:
            ms.create_branch(before, BRANCH)
    assert backfill(wh, "lookback", FIRST.name, first, last) == 0
    with opened(wh) as catalog:
        t = catalog.load_table(table)
        assert t.metadata.current_snapshot_id != before and BRANCH not in t.metadata.refs
    assert mismatches(wh, scenario)["lookback"][FIRST.name] == 0


@pytest.mark.parametrize(
    "options",
    [
        ["--repopulate-day", "16"],  # tiny runs 16 days: 0..15
        ["--repopulate-day", "5", "--repopulate-from-day", "3", "--repopulate-to-day", "2"],
        ["--repopulate-day", "5", "--repopulate-from-day", "1", "--repopulate-to-day", "6"],
        ["--repopulate-day", "5", "--lookback-backfill", "sometimes"],
    ],
)
def test_bad_repopulation_options_exit_2(
    tmp_path: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    wh = tmp_path / "wh"
    assert main(["init", "--warehouse", str(wh), "--preset", "tiny", *options]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not wh.exists()


def restatement_of(out: Path) -> dict[str, Any]:
    summary = json.loads((out / "summary.json").read_text())
    restated: dict[str, Any] = summary["restatement"]
    return restated


@pytest.mark.slow
def test_run_with_repopulation(tmp_path: Path) -> None:
    """A run: IPS carries the repopulation by itself; the lookback's window does not, its user's backfills do."""
    # A two-day window: on day 4 it holds dates 3..4, so the repopulated dates 0..1 lie
    # beyond it, two days after them instead of five (tiny's own window).
    common = ["--preset", "tiny", "--days", "5", "--warmup-days", "1", "--lookback-days", "2", "--quiet"]
    repop = ["--repopulate-day", "4", "--repopulate-from-day", "0", "--repopulate-to-day", "1"]
    assert main(["run", "--out", str(tmp_path / "none"), *common, *repop]) == 0
    assert main(["run", "--out", str(tmp_path / "manual"), *common, *repop, "--lookback-backfill", "manual"]) == 0
    none, manual = restatement_of(tmp_path / "none"), restatement_of(tmp_path / "manual")
    for r in (none, manual):
        ips = r["per_strategy"]["ips"]
        assert ips["user_steps"] == 0 and ips["equal_to_oracle_after"] and ips["repopulation_carried"]
        assert ips["day_excess_over_median"]["rows_written"] > 0  # what the rewrite triggered downstream
        assert r["source_rewrite"]["rows_written"] > 0
    left = none["per_strategy"]["lookback"]
    assert left["user_steps"] == 0 and left["repopulation_explained_rows"] > 0 and not left["repopulation_carried"]
    fixed = manual["per_strategy"]["lookback"]
    assert fixed["user_steps"] == len(reached()) and fixed["repopulation_carried"]
    assert fixed["repopulation_explained_rows"] == 0 and fixed["backfill_cost"]["rows_written"] > 0


def test_report_section_shows_each_strategy_steps_and_costs() -> None:
    cost = {"wall_s": 1.5, "cpu_s": 0.5, "rows_read": 10.0, "bytes_read": 2e6}
    cost |= {"rows_written": 5.0, "bytes_written": 1e6}
    strategies = {
        name: {
            "user_steps": steps,
            "day_cost": cost,
            "day_excess_over_median": cost,
            "backfill_cost": cost,
            "correct_from": f"marker-{name}",
            "mismatched_rows_after": steps,
            "repopulation_explained_rows": 0,
        }
        for name, steps in (("lookback", len(reached())), ("ips", 0))
    }
    summary = {
        "restatement": {
            "repopulate_day": 6,
            "repopulated_days": [0, 1],
            "lookback_window_days": 5,
            "lookback_backfill": "manual",
            "source_rewrite": cost,
            "per_strategy": strategies,
        }
    }
    lines = restatement_section(summary)
    for name, s in strategies.items():
        (row,) = [line for line in lines if line.startswith(f"| {name} |")]
        assert f"| {s['user_steps']} |" in row and f"marker-{name}" in row and "2.00 MB read" in row
    assert restatement_section({}) == []


def change_logic(wh: Path, scenario: Scenario) -> Scenario:
    """The warehouse's scenario with stage 1's view-time cap lowered from its first day on, in force on its last."""
    changed = Scenario.from_dict({**scenario.as_dict(), "logic_change_day": DAYS - 1, "logic_change_from_day": 0})
    (wh / SCENARIO_FILE).write_text(json.dumps(changed.validate().as_dict()))
    return changed


def verdicts(wh: Path, scenario: Scenario) -> dict[str, Any]:
    """``ipsbench check``'s verdicts (with the logic in force and the restatement's explanations)."""
    from bench.backfill import check as restated_check
    from bench.backfill import pipeline_on

    with opened(wh) as catalog:
        final = pipeline_on(scenario, scenario.start_date, DAYS - 1)
        found, _ = restated_check(catalog, scenario, scenario.start_date, pipeline=final)
    return {s: v.as_dict(s == "lookback") for s, v in found.items()}


@pytest.mark.slow
def test_logic_change_ips_one_restatement_lookback_one_per_stage(warehouse: tuple[Path, Scenario]) -> None:
    wh, scenario = warehouse
    scenario = change_logic(wh, scenario)
    first, last = scenario.start_date, scenario.start_date + timedelta(days=DAYS - 1)
    before = verdicts(wh, scenario)
    assert before["ips"]["per_stage"][FIRST.name]["mismatched_rows"] > 0  # the new cap bites on this data
    # IPS: the restatement is the one user step; its next run carries it down to the last stage.
    assert backfill(wh, "ips", FIRST.name, first, last) == 0
    process(wh, "ips")
    process(wh, "lookback")
    after = verdicts(wh, scenario)
    assert after["ips"]["equal_to_oracle"]
    # The lookback's window took the new logic; the dates it had left are explained by the change, not fixed.
    assert after["lookback"]["unexplained_mismatched_rows"] == 0 and after["lookback"]["mismatched_rows"] > 0
    with opened(wh) as catalog:
        plan = make_plan(catalog, FIRST.name, "lookback", first, last)
    for s in [plan.restate.stage, *(r.stage for r in plan.downstream)]:
        assert backfill(wh, "lookback", s.name, first, last) == 0
    assert verdicts(wh, scenario)["lookback"]["mismatched_rows"] == 0


@pytest.mark.slow
def test_run_with_logic_change(tmp_path: Path) -> None:
    """A run: IPS restates history under the new logic with one backfill; the lookback's user needs one per stage."""
    out = tmp_path / "run"
    # As in the repopulation run: the change on day 4 reaches back to dates 0..2, beyond a two-day window.
    change = ["--logic-change-day", "4", "--logic-change-from-day", "0", "--lookback-backfill", "manual"]
    days = ["--days", "5", "--warmup-days", "1", "--lookback-days", "2"]
    assert main(["run", "--out", str(out), "--preset", "tiny", *days, "--quiet", *change]) == 0
    r = restatement_of(out)
    assert r["kind"] == "logic change"
    ips, lb = r["per_strategy"]["ips"], r["per_strategy"]["lookback"]
    assert ips["user_steps"] == 1 and ips["equal_to_oracle_after"] and ips["repopulation_carried"]
    assert lb["user_steps"] == 1 + len(dependents(FIRST.name)) and lb["repopulation_carried"]
    assert lb["repopulation_explained_rows"] == 0
