"""The local Iceberg catalog and the definitions of every table.

One pyiceberg ``SqlCatalog`` on sqlite at ``<warehouse>/catalog.db`` named
``ipsbench``: embedded, no server, and readable by Spark's JDBC catalog under
the same name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import (
    DateType,
    IntegerType,
    LongType,
    NestedField,
    StringType,
    TimestamptzType,
)

CATALOG_NAME = "ipsbench"
SOURCE_TABLE = "source.playback"
STAGES = ("playback_daily", "playback_daily_agg", "title_daily_rank")
STRATEGY_NAMESPACES = ("lookback", "ips")


class CatalogMissing(Exception):
    """The warehouse holds no ipsbench catalog."""


SOURCE_SCHEMA = Schema(
    NestedField(1, "event_id", StringType(), required=True),
    NestedField(2, "account_id", LongType(), required=True),
    NestedField(3, "title_id", LongType(), required=False),
    NestedField(4, "country", StringType(), required=True),
    NestedField(5, "device", StringType(), required=True),
    NestedField(6, "event_ts", TimestamptzType(), required=True),
    NestedField(7, "view_seconds", IntegerType(), required=False),
    NestedField(8, "ingest_ts", TimestamptzType(), required=True),
)
SOURCE_SPEC = PartitionSpec(PartitionField(source_id=6, field_id=1000, transform=DayTransform(), name="event_ts_day"))

PLAYBACK_DAILY_SCHEMA = Schema(
    NestedField(1, "event_id", StringType(), required=True),
    NestedField(2, "event_date", DateType(), required=True),
    NestedField(3, "event_ts", TimestamptzType(), required=True),
    NestedField(4, "account_id", LongType(), required=True),
    NestedField(5, "title_id", LongType(), required=True),
    NestedField(6, "country", StringType(), required=True),
    NestedField(7, "device", StringType(), required=True),
    NestedField(8, "view_seconds", IntegerType(), required=True),
)

AGG_SCHEMA = Schema(
    NestedField(1, "event_date", DateType(), required=True),
    NestedField(2, "account_id", LongType(), required=True),
    NestedField(3, "total_view_seconds", LongType(), required=True),
    NestedField(4, "plays", LongType(), required=True),
    NestedField(5, "distinct_titles", LongType(), required=True),
)

RANK_SCHEMA = Schema(
    NestedField(1, "event_date", DateType(), required=True),
    NestedField(2, "country", StringType(), required=True),
    NestedField(3, "title_rank", IntegerType(), required=True),
    NestedField(4, "title_id", LongType(), required=True),
    NestedField(5, "view_seconds", LongType(), required=True),
    NestedField(6, "viewers", LongType(), required=True),
)


@dataclass(frozen=True)
class TableDef:
    """A target table: its schema, key and partitioning by ``event_date``."""

    stage: str
    schema: Schema
    key: tuple[str, ...]

    @property
    def spec(self) -> PartitionSpec:
        field = self.schema.find_field("event_date")
        return PartitionSpec(
            PartitionField(source_id=field.field_id, field_id=1000, transform=IdentityTransform(), name="event_date")
        )


TARGETS: dict[str, TableDef] = {
    "playback_daily": TableDef("playback_daily", PLAYBACK_DAILY_SCHEMA, ("event_id",)),
    "playback_daily_agg": TableDef("playback_daily_agg", AGG_SCHEMA, ("event_date", "account_id")),
    "title_daily_rank": TableDef("title_daily_rank", RANK_SCHEMA, ("event_date", "country", "title_rank")),
}


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


def open_catalog(warehouse: Path, create: bool = False) -> SqlCatalog:
    """Open (or, with ``create``, create) the warehouse's catalog."""
    warehouse = warehouse.resolve()
    db = catalog_path(warehouse)
    if not create and not db.exists():
        raise CatalogMissing(f"no ipsbench catalog at {db}")
    warehouse.mkdir(parents=True, exist_ok=True)
    return SqlCatalog(
        CATALOG_NAME,
        uri=f"sqlite:///{db}",
        # Not Path.as_uri(): it percent-encodes '=', ',' and spaces, and pyiceberg
        # would then write the data files under a differently named directory.
        warehouse=f"file://{warehouse}",
    )


def create_tables(catalog: SqlCatalog, strategies: tuple[str, ...], ips_merge_mode: str = "copy-on-write") -> None:
    """Create the source table and each strategy's three target tables.

    Args:
        ips_merge_mode: ``write.merge.mode`` of the IPS targets. Spark honours
            ``merge-on-read`` (delete files instead of rewritten files); pyiceberg
            always writes copy-on-write.
    """
    catalog.create_namespace_if_not_exists("source")
    catalog.create_table_if_not_exists(
        SOURCE_TABLE, SOURCE_SCHEMA, partition_spec=SOURCE_SPEC, properties=TABLE_PROPERTIES
    )
    for ns in strategies:
        catalog.create_namespace_if_not_exists(ns)
        properties = {**TABLE_PROPERTIES, **({"write.merge.mode": ips_merge_mode} if ns == "ips" else {})}
        for t in TARGETS.values():
            catalog.create_table_if_not_exists(
                f"{ns}.{t.stage}", t.schema, partition_spec=t.spec, properties=properties
            )
