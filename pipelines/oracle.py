"""The oracle: the same stage logic applied to all source data."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines import logic
from pipelines.catalog import SOURCE_TABLE, STAGES
from pipelines.engine import DuckDBEngine, partitioned_input
from pipelines.iceberg_io import FileSet, partition_dates, plan

PREFIX = "oracle_"
EVENT_DATE = "CAST(event_ts AS DATE)"


def compute(engine: DuckDBEngine, catalog: Catalog) -> dict[str, str]:
    """Recompute every stage from all source rows into engine temp tables.

    Returns:
        The relation holding the oracle's result for each stage.
    """
    source = catalog.load_table(SOURCE_TABLE)
    schema = schema_to_pyarrow(source.schema(), include_field_ids=False)
    everything = plan(source, AlwaysTrue())
    # Stage 1 a few dates at a time (its logic is local to a date): its window
    # then never holds all events at once.
    piece = f"{PREFIX}events_piece"
    engine.bind_files(piece, FileSet(), schema)
    engine.materialize_by_dates(
        f"{PREFIX}playback_daily",
        logic.stage_sql("playback_daily", piece),
        partition_dates(source),
        partitioned_input(engine, piece, source, EVENT_DATE, everything.rows),
    )
    engine.bind_files(f"{PREFIX}events", everything, schema)
    out = {"playback_daily": f"{PREFIX}playback_daily"}
    for stage in STAGES[1:]:
        engine.materialize(f"{PREFIX}{stage}", logic.stage_sql(stage, f"{PREFIX}playback_daily"))
        out[stage] = f"{PREFIX}{stage}"
    return out
