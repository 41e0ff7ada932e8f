"""The oracle: the same stage logic applied to all input, every stage in lineage order."""

from __future__ import annotations

from collections.abc import Sequence

from pyiceberg.catalog import Catalog
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.table import Table

from pipelines.engine import DuckDBEngine, Inputs, PartitionedInput
from pipelines.iceberg_io import FileSet, partition_dates, plan
from pipelines.pipeline import PIPELINE, SOURCES, Stage

PREFIX = "oracle_"


def relation(name: str) -> str:
    """The engine relation holding the oracle's version of a source table or stage."""
    return PREFIX + name.replace(".", "_")


def compute(engine: DuckDBEngine, catalog: Catalog, *, pipeline: Sequence[Stage] = PIPELINE) -> dict[str, str]:
    """Recompute every stage of ``pipeline`` from all source rows into engine temp tables.

    Every source table is bound whole as its oracle relation. A stage reading
    only source tables runs a few dates at a time (its logic is local to a
    date, so its window never holds all events at once); the others read their
    inputs' oracle relations whole.

    Returns:
        The relation holding the oracle's result for each stage.
    """
    # Each source planned once: bound whole, and kept to bind a few dates at a time.
    sources: dict[str, tuple[Table, FileSet]] = {}
    for source in SOURCES:
        table = catalog.load_table(source.name)
        sources[source.name] = (table, plan(table, AlwaysTrue()))
        engine.bind_input(relation(source.name), table, sources[source.name][1])
    out: dict[str, str] = {}
    for stage in pipeline:
        if all(i.is_source for i in stage.inputs):
            # Every piece binds all the dates any input holds.
            dates = sorted({d for i in stage.inputs for d in partition_dates(sources[i.name][0])})
            parts = tuple(
                PartitionedInput(
                    f"{relation(i.name)}_piece", sources[i.name][0], i.date_column, dates, sources[i.name][1]
                )
                for i in stage.inputs
            )
            sql = stage.statement(**{i.relation: p.relation for i, p in zip(stage.inputs, parts, strict=True)})
            engine.materialize_by_dates(relation(stage.name), sql, Inputs(parts))
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
