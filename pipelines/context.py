"""What every stage job is given: catalog, engine, recorder and fault hook."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from pyiceberg.catalog.sql import SqlCatalog

from pipelines.engine import Engine
from pipelines.recorder import FaultHook, NullRecorder, Recorder, no_fault


@dataclass
class StageContext:
    """Everything a stage job touches besides its own inputs.

    Attributes:
        catalog: the warehouse's Iceberg catalog.
        engine: where the stage SQL runs.
        recorder: receives phases and read/write figures (the runner's clock).
        fault: called at each boundary a crash can hit; tests make it raise.
        processing_date: the date of the schedule's run, when there is one: the
            filter pattern recomputes its partition (new data) whole.
    """

    catalog: SqlCatalog
    engine: Engine
    recorder: Recorder = field(default_factory=NullRecorder)
    fault: FaultHook = no_fault
    processing_date: date | None = None
