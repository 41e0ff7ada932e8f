"""The local Iceberg catalog, and its tables created from the pipeline declaration.

One pyiceberg ``SqlCatalog`` on sqlite at ``<warehouse>/catalog.db`` named
``ipsbench``: embedded, no server, and readable by Spark's JDBC catalog under
the same name.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pyiceberg.catalog.sql import SqlCatalog
from sqlalchemy.engine import URL

from pipelines import pyiceberg_compat
from pipelines.pipeline import PIPELINE, SOURCES, Stage, validate

CATALOG_NAME = "ipsbench"


class CatalogMissing(Exception):
    """The warehouse holds no ipsbench catalog."""


# Every table's Parquet dictionary pages are capped at 64 KiB (Iceberg's default
# is 2 MiB). event_id is unique per row, so a dictionary for it never pays: the
# writer builds one up to the cap, then falls back to plain encoding. With 2 MiB
# that attempt cost a quarter to a third of each Parquet write. Low-cardinality
# columns (country, device, and title_id up to about 8,000 titles) still fit in
# 64 KiB and keep their dictionaries; account_id (25,000 accounts in `small`)
# falls back to plain encoding too.
TABLE_PROPERTIES = {"write.parquet.dict-size-bytes": str(64 * 1024)}


def catalog_path(warehouse: Path) -> Path:
    return warehouse / "catalog.db"


def open_catalog(warehouse: Path, create: bool = False, catalog_uri: str | None = None) -> SqlCatalog:
    """Open (or, with ``create``, create) the warehouse's catalog.

    Args:
        catalog_uri: SQLAlchemy URL of the catalog database, e.g.
            ``postgresql+psycopg2://ipsbench@db:5432/ipsbench`` (``pip install '.[postgres]'``)
            so that a cluster's machines share one catalog. Default: the environment
            variable ``IPSBENCH_CATALOG_URI``, else sqlite at ``<warehouse>/catalog.db``.
            The data files live under ``warehouse`` either way.
    """
    import os  # here, not at the top: this function is the only reader of the environment

    pyiceberg_compat.install()
    warehouse = warehouse.resolve()
    uri = catalog_uri or os.environ.get("IPSBENCH_CATALOG_URI") or None
    if uri is None:
        db = catalog_path(warehouse)
        if not create and not db.exists():
            raise CatalogMissing(f"no ipsbench catalog at {db}")
        # URL.create escapes the path: written into "sqlite:///..." by hand, a '?' or '#'
        # in it would start the URL's query or fragment and sqlite would open another file.
        uri = URL.create("sqlite", database=str(db)).render_as_string()
    warehouse.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(
        CATALOG_NAME,
        uri=uri,
        # A plain absolute path, not a file:// URI: pyiceberg splits a URI at '#' and '?'
        # (the rest of the path was lost and files landed outside the warehouse), and
        # Path.as_uri() percent-encodes '=', ',' and spaces, which pyiceberg then writes
        # literally into directory names. A path without a scheme is kept as it is.
        warehouse=str(warehouse),
    )


def create_tables(
    catalog: SqlCatalog,
    strategies: tuple[str, ...],
    ips_merge_mode: str,
    *,
    pipeline: Sequence[Stage] = PIPELINE,
) -> None:
    """Create the source tables and each strategy's target table of every stage of ``pipeline``.

    Args:
        ips_merge_mode: ``write.merge.mode`` of the IPS targets (the modes and the
            default: ``bench.scenario``). Both engines honour
            ``merge-on-read`` (position-delete files plus the new rows instead of
            rewritten files): Spark's MERGE, and the DuckDB engine's merge by key
            (``pipelines.row_level``).
        pipeline: the stages whose targets to create (checked by ``validate``).
    """
    stages = validate(pipeline)
    catalog.create_namespace_if_not_exists("source")
    for source in SOURCES:
        catalog.create_table_if_not_exists(
            source.name, source.schema, partition_spec=source.spec, properties=TABLE_PROPERTIES
        )
    for ns in strategies:
        catalog.create_namespace_if_not_exists(ns)
        properties = {**TABLE_PROPERTIES, **({"write.merge.mode": ips_merge_mode} if ns == "ips" else {})}
        for stage in stages:
            catalog.create_table_if_not_exists(
                stage.table(ns), stage.schema, partition_spec=stage.spec, properties=properties
            )
