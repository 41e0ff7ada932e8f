"""The oracle: the same stage logic applied to all source data."""

from __future__ import annotations

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines import logic
from pipelines.catalog import SOURCE_TABLE, STAGES
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import plan

PREFIX = "oracle_"


def compute(engine: DuckDBEngine, catalog: Catalog) -> dict[str, str]:
    """Recompute every stage from all source rows into engine temp tables.

    Returns:
        The relation holding the oracle's result for each stage.
    """
    source = catalog.load_table(SOURCE_TABLE)
    engine.bind_files(
        f"{PREFIX}events", plan(source, AlwaysTrue()), schema_to_pyarrow(source.schema(), include_field_ids=False)
    )
    inputs = {"playback_daily": f"{PREFIX}events"}
    for stage in STAGES[1:]:
        inputs[stage] = f"{PREFIX}playback_daily"
    out = {}
    for stage in STAGES:
        engine.materialize(f"{PREFIX}{stage}", logic.stage_sql(stage, inputs[stage]))
        out[stage] = f"{PREFIX}{stage}"
    return out
