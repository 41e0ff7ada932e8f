"""An IPS workflow run: IpCapture → pattern job → IpCommit.

A crash anywhere before the watermark moves leaves it where it was, so the
next run captures the same changes again; every pattern is idempotent, hence
exactly-once results.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipelines.context import StageContext
from pipelines.iceberg_io import partition_dates
from pipelines.ips.capture import Capture, ip_capture
from pipelines.ips.patterns import NAMESPACE, PATTERNS
from pipelines.ips.state import StateLog, ip_commit, watermark
from pipelines.pipeline import PIPELINE, Pattern, Stage

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
    def input_table(self) -> str:
        return self.stage.input.table(NAMESPACE)

    @property
    def range_field(self) -> str:
        return self.stage.input.range_field


WORKFLOWS: dict[str, Workflow] = {s.name: Workflow(s) for s in PIPELINE}


def run_stage(ctx: StageContext, stage: str) -> Capture:
    """Run the IPS workflow of ``stage`` once; returns what it captured."""
    wf = WORKFLOWS[stage]
    log = StateLog(ctx.catalog)
    ctx.recorder.note(pattern=wf.pattern)
    with ctx.recorder.phase("capture"):
        source = ctx.catalog.load_table(wf.input_table)
        mark = watermark(source, wf.name)
        log.reconcile(wf.name, mark)
    cap = ip_capture(ctx.catalog, wf.name, source, mark, wf.range_field, ctx.recorder)
    with ctx.recorder.phase("capture"):
        run_id = log.record_capture(cap) if cap.to_snapshot_id != mark else None
    ctx.recorder.note(
        captured_files=len(cap.files),
        captured_rows=cap.rows,
        captured_snapshots=len(cap.snapshots),
        partitions=len(cap.all_dates),
        rewritten_partitions=len(cap.rewritten_dates),
        non_append_snapshots=len(cap.non_append),
    )
    if run_id is None or cap.to_snapshot_id is None:
        return cap  # nothing new: a no-op
    if cap.first_run:
        # A backfill replaces the target whole: also the partitions the input no longer has.
        target = ctx.catalog.load_table(wf.stage.table(NAMESPACE))
        cap.rewritten_dates = sorted(set(cap.rewritten_dates) | set(partition_dates(target)))
    ctx.fault("after_capture")
    if not cap.empty:
        PATTERNS[wf.pattern](ctx, wf.stage, cap)
    ctx.fault("after_write")
    with ctx.recorder.phase("commit"):
        retries = ip_commit(ctx.catalog, wf.input_table, wf.name, cap.to_snapshot_id)
        ctx.fault("during_commit")
        log.mark_committed(run_id, retries)
    return cap
