"""An IPS workflow run: IpCapture → pattern job → IpCommit.

A crash anywhere before the watermark moves leaves it where it was, so the
next run captures the same changes again; every pattern is idempotent, hence
exactly-once results.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.context import StageContext
from pipelines.iceberg_io import partition_dates
from pipelines.ips.capture import Capture, ip_capture
from pipelines.ips.patterns import NAMESPACE, PATTERNS
from pipelines.ips.state import StateLog, ip_commit, watermark
from pipelines.pipeline import PIPELINE, Input, Pattern, Stage, stage, validate
from pipelines.recompute import recompute

STRATEGY = NAMESPACE


@dataclass(frozen=True)
class Workflow:
    """One IPS workflow, derived from its stage's declaration: what it captures from and how it writes."""

    stage: Stage

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def pattern(self) -> Pattern:
        return self.stage.pattern

    @property
    def input_tables(self) -> tuple[str, ...]:
        """Every table it captures from, each with a watermark of its own."""
        return tuple(i.table(NAMESPACE) for i in self.stage.inputs)

    @property
    def input_table(self) -> str:
        """Its first declared input (the one a single-input workflow has)."""
        return self.input_tables[0]


def workflows(pipeline: Sequence[Stage] = PIPELINE) -> dict[str, Workflow]:
    """The IPS workflow of every stage of ``pipeline``, by stage name, in lineage order."""
    return {s.name: Workflow(s) for s in validate(pipeline)}


# The built-in pipeline's workflows (what ``ipsbench state`` lists).
WORKFLOWS: dict[str, Workflow] = workflows()


def _capture(ctx: StageContext, wf: Workflow, stage_input: Input, log: StateLog) -> tuple[Capture, int | None]:
    """IpCapture of one input since the workflow's watermark on it; logs it unless nothing is new."""
    table_name = stage_input.table(NAMESPACE)
    with ctx.recorder.phase("capture"):
        source = ctx.catalog.load_table(table_name)
        mark = watermark(source, wf.name)
        log.reconcile(wf.name, table_name, mark)
    # Several inputs: one ICDC table each.
    icdc = wf.name if len(wf.stage.inputs) == 1 else f"{wf.name}__{stage_input.relation}"
    cap = ip_capture(ctx.catalog, wf.name, source, mark, stage_input.range_field, ctx.recorder, icdc)
    with ctx.recorder.phase("capture"):
        run_id = log.record_capture(cap) if cap.to_snapshot_id != mark else None
    return cap, run_id


def run_stage(ctx: StageContext, stage_name: str, *, pipeline: Sequence[Stage] = PIPELINE) -> Capture:
    """Run the IPS workflow of stage ``stage_name`` of ``pipeline`` once; returns what it captured (of its first input).

    A workflow with several inputs captures each and recomputes the union of
    their changed dates (the range pattern); each input's watermark moves on
    its own, so a crash between two commits makes the next run recompute the
    other input's dates again: idempotent.
    """
    wf = Workflow(stage(stage_name, pipeline))
    log = StateLog(ctx.catalog)
    ctx.recorder.note(pattern=wf.pattern)
    captured = [_capture(ctx, wf, i, log) for i in wf.stage.inputs]
    caps = [cap for cap, _ in captured]
    ctx.recorder.note(
        captured_files=sum(len(c.files) for c in caps),
        captured_rows=sum(c.rows for c in caps),
        captured_snapshots=sum(len(c.snapshots) for c in caps),
        partitions=len({d for c in caps for d in c.all_dates}),
        rewritten_partitions=len({d for c in caps for d in c.rewritten_dates}),
        non_append_snapshots=sum(len(c.non_append) for c in caps),
    )
    pending = [(cap, run_id) for cap, run_id in captured if run_id is not None and cap.to_snapshot_id is not None]
    if not pending:
        return caps[0]  # nothing new: a no-op
    for cap in caps:
        if cap.first_run:
            # A backfill replaces the target whole: also the partitions the input no longer has.
            target = ctx.catalog.load_table(wf.stage.table(NAMESPACE))
            cap.rewritten_dates = sorted(set(cap.rewritten_dates) | set(partition_dates(target)))
    ctx.fault("after_capture")
    if len(caps) == 1:
        if not caps[0].empty:
            PATTERNS[wf.pattern](ctx, wf.stage, caps[0])
    else:
        changed = sorted({d for c in caps for d in c.all_dates})
        if changed:
            recompute(ctx, wf.stage, NAMESPACE, changed)
    ctx.fault("after_write")
    with ctx.recorder.phase("commit"):
        for cap, run_id in pending:
            assert cap.to_snapshot_id is not None and run_id is not None
            retries = ip_commit(ctx.catalog, cap.input_table, wf.name, cap.to_snapshot_id)
            ctx.fault("during_commit")
            log.mark_committed(run_id, retries)
    return caps[0]
