"""The oracle: the same stage logic applied to all input, every stage in lineage order."""

from __future__ import annotations

from dataclasses import replace

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines.engine import DuckDBEngine, PartitionedInput
from pipelines.iceberg_io import partition_dates, plan
from pipelines.pipeline import PIPELINE, Input

PREFIX = "oracle_"


def relation(name: str) -> str:
    """The engine relation holding the oracle's version of a source table or stage."""
    return PREFIX + name.replace(".", "_")


def _bind_source(engine: DuckDBEngine, catalog: Catalog, source_input: Input) -> PartitionedInput:
    """Bind all of a source table as its oracle relation; returns it as date pieces too."""
    table = catalog.load_table(source_input.name)
    everything = plan(table, AlwaysTrue())
    engine.bind_input(relation(source_input.name), table, everything)
    dates = partition_dates(table)
    return PartitionedInput(relation(source_input.name), table, source_input.date_column, dates, everything)


def compute(engine: DuckDBEngine, catalog: Catalog) -> dict[str, str]:
    """Recompute every stage from all source rows into engine temp tables.

    A stage reading a source table runs a few dates at a time (its logic is
    local to a date, so its window never holds all events at once); a stage
    reading other stages reads their oracle relations whole.

    Returns:
        The relation holding the oracle's result for each stage.
    """
    out: dict[str, str] = {}
    for stage in PIPELINE:
        if all(i.is_source for i in stage.inputs):
            (source_input,) = stage.inputs
            whole = _bind_source(engine, catalog, source_input)
            piece = replace(whole, relation=f"{whole.relation}_piece")
            sql = stage.statement(**{source_input.relation: piece.relation})
            engine.materialize_by_dates(relation(stage.name), sql, piece)
        else:
            relations = {i.relation: relation(i.name) for i in stage.inputs}
            if stage.carry is not None:
                # All dates at once: nothing carried in from before the first.
                engine.bind_arrow(f"{relation(stage.name)}_before", schema_to_pyarrow(stage.schema).empty_table())
                base = f"{relation(stage.name)}_base"
                engine.bind_sql(base, stage.carry.sql.format(before=f"{relation(stage.name)}_before"))
                relations[stage.carry.relation] = base
            engine.materialize(relation(stage.name), stage.statement(**relations))
        out[stage.name] = relation(stage.name)
    return out
