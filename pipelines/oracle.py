"""The oracle: the same stage logic applied to all source data."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines import logic
from pipelines.catalog import SOURCE_TABLE, STAGES
from pipelines.engine import DuckDBEngine, date_pieces, in_dates
from pipelines.iceberg_io import FileSet, partition_dates, plan, plan_dates

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
    stage1 = logic.stage_sql("playback_daily", f"{PREFIX}events_piece")
    engine.bind_files(f"{PREFIX}events_piece", FileSet(), schema)
    engine.materialize(f"{PREFIX}playback_daily", f"SELECT * FROM ({stage1}) AS o WHERE FALSE")
    for some in date_pieces(partition_dates(source), everything.rows, engine.CHUNK_ROWS):
        engine.bind_files(f"{PREFIX}events_piece", plan_dates(source, some), schema, in_dates(EVENT_DATE, some))
        engine.execute(f"INSERT INTO {PREFIX}playback_daily {stage1}")
    engine.bind_files(f"{PREFIX}events", everything, schema)
    out = {"playback_daily": f"{PREFIX}playback_daily"}
    for stage in STAGES[1:]:
        engine.materialize(f"{PREFIX}{stage}", logic.stage_sql(stage, f"{PREFIX}playback_daily"))
        out[stage] = f"{PREFIX}{stage}"
    return out
