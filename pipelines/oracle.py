"""The oracle: the same stage logic applied to all input, every stage in lineage order."""

from __future__ import annotations

from dataclasses import replace

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow

from pipelines.engine import DuckDBEngine, Inputs, PartitionedInput
from pipelines.iceberg_io import partition_dates, plan
from pipelines.pipeline import PIPELINE, SOURCES, Input

PREFIX = "oracle_"


def relation(name: str) -> str:
    """The engine relation holding the oracle's version of a source table or stage."""
    return PREFIX + name.replace(".", "_")


def _whole(engine: DuckDBEngine, catalog: Catalog, source_input: Input) -> PartitionedInput:
    """All of a source table, as the stage reads it (bindable a few dates at a time)."""
    table = catalog.load_table(source_input.name)
    return PartitionedInput(
        f"{relation(source_input.name)}_piece",
        table,
        source_input.date_column,
        partition_dates(table),
        plan(table, AlwaysTrue()),
    )


def compute(engine: DuckDBEngine, catalog: Catalog) -> dict[str, str]:
    """Recompute every stage from all source rows into engine temp tables.

    Every source table is bound whole as its oracle relation. A stage reading
    only source tables runs a few dates at a time (its logic is local to a
    date, so its window never holds all events at once); the others read their
    inputs' oracle relations whole.

    Returns:
        The relation holding the oracle's result for each stage.
    """
    for source in SOURCES:
        table = catalog.load_table(source.name)
        engine.bind_input(relation(source.name), table, plan(table, AlwaysTrue()))
    out: dict[str, str] = {}
    for stage in PIPELINE:
        if all(i.is_source for i in stage.inputs):
            pieces = Inputs(tuple(_whole(engine, catalog, i) for i in stage.inputs))
            sql = stage.statement(**{i.relation: p.relation for i, p in zip(stage.inputs, pieces.parts, strict=True)})
            # Every piece binds all the dates any input holds.
            dates = sorted({d for p in pieces.parts for d in p.dates})
            pieces = Inputs(tuple(replace(p, dates=dates) for p in pieces.parts))
            engine.materialize_by_dates(relation(stage.name), sql, pieces)
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
