"""The pipeline as data: every stage declared once.

A stage's facts -- its SQL, the inputs it reads (and the field whose change
ranges matter in each), its output table's schema, partition field and key,
its IPS pattern, and which rows a late event it never saw can make wrong --
live in one ``Stage`` below. Lookback, IPS, the oracle, the equality check
and its explanations all read this declaration; adding a stage is adding one
``Stage`` (and its SQL in ``logic``).

``PIPELINE`` is the built-in pipeline. Everything that walks a pipeline
(table creation, lookback, IPS workflows, the oracle, the equality check, the
runner) takes the one it runs as a value, ``PIPELINE`` by default, so a
pipeline with other stages runs through the same code.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import DayTransform, IdentityTransform
from pyiceberg.types import DateType, IntegerType, LongType, NestedField, StringType, TimestamptzType

from pipelines import logic

Strategy = Literal["lookback", "ips"]
Pattern = Literal["merge", "filter", "range", "forward"]
STRATEGIES: tuple[Strategy, ...] = ("lookback", "ips")

SOURCE_TABLE = "source.playback"
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

IMPRESSIONS_TABLE = "source.impressions"
IMPRESSIONS_SCHEMA = Schema(
    NestedField(1, "event_id", StringType(), required=True),
    NestedField(2, "account_id", LongType(), required=True),
    NestedField(3, "title_id", LongType(), required=True),
    NestedField(4, "country", StringType(), required=True),
    NestedField(5, "event_ts", TimestamptzType(), required=True),
    NestedField(6, "ingest_ts", TimestamptzType(), required=True),
)


@dataclass(frozen=True)
class Source:
    """A table arrival batches are appended to.

    Attributes:
        name: ``namespace.table``.
        schema: its columns; every source has ``event_id``, ``account_id``,
            ``title_id``, ``country``, ``event_ts`` and ``ingest_ts``.
        valid: which rows the stages count (the others are malformed).
        kept_copy_order: of an event's copies, the one the stages keep comes first.
    """

    name: str
    schema: Schema
    valid: str
    kept_copy_order: tuple[str, ...]

    @property
    def spec(self) -> PartitionSpec:
        field = self.schema.find_field("event_ts")
        return PartitionSpec(
            PartitionField(source_id=field.field_id, field_id=1000, transform=DayTransform(), name="event_ts_day")
        )


SOURCES: tuple[Source, ...] = (
    Source(SOURCE_TABLE, SOURCE_SCHEMA, logic.VALID, logic.KEPT_COPY_ORDER),
    # Every impression counts; its copies share their payload (a re-send), so any order keeps the same one.
    Source(IMPRESSIONS_TABLE, IMPRESSIONS_SCHEMA, "TRUE", ("ingest_ts", "country", "account_id", "title_id")),
)

# The event date a row of each kind of input carries: a source row's from its
# timestamp (in UTC), a stage's output as its partition column.
_DATE_OF_FIELD = {"event_ts": logic.EVENT_DATE, "event_date": "event_date"}


@dataclass(frozen=True)
class Input:
    """One input of a stage.

    Attributes:
        name: a source table (``namespace.table``) or an upstream stage's name,
            read from the same strategy's namespace.
        relation: the name the stage SQL reads it by (``{relation}`` in the SQL).
        range_field: the field whose change ranges IPS derives from file bounds.
    """

    name: str
    relation: str
    range_field: str

    def table(self, strategy: str) -> str:
        """The Iceberg table ``strategy`` reads this input from."""
        return self.name if "." in self.name else f"{strategy}.{self.name}"

    @property
    def date_column(self) -> str:
        """A SQL expression for a row's event date (partition pruning and date predicates)."""
        return _DATE_OF_FIELD[self.range_field]

    @property
    def is_source(self) -> bool:
        return "." in self.name


@dataclass(frozen=True)
class Carry:
    """A value a stage carries forward from its own earlier rows (a running total).

    Attributes:
        relation: the name the stage SQL reads it by.
        sql: how it is derived from the stage's own rows before a date
            (``{before}`` in the SQL).
        by: the column it is carried per.
    """

    relation: str
    sql: str
    by: str


@dataclass(frozen=True)
class Stage:
    """One stage of the pipeline, declared once.

    Attributes:
        name: the stage and its target table's name in each strategy's namespace.
        sql: its logic (``logic``), reading each input by its ``relation``.
        inputs: what it reads.
        schema: its target table's schema.
        key: the columns identifying a target row.
        pattern: the IPS usage pattern that maintains it.
        affected_by: the columns of an unseen event (one the lookback's window
            missed) that identify the target rows it makes wrong.
        partition_field: the target's identity partition column.
        probe_key: a narrow column a MERGE probes first (a 64-bit hash of a
            one-column key); a match on it is confirmed on ``key``.
        carry: what a row on one date takes from the stage's earlier dates
            (None: every row depends on its own date's input only).
    """

    name: str
    sql: str
    inputs: tuple[Input, ...]
    schema: Schema
    key: tuple[str, ...]
    pattern: Pattern
    affected_by: tuple[str, ...]
    partition_field: str = "event_date"
    probe_key: str | None = None
    carry: Carry | None = None

    def __post_init__(self) -> None:
        if len(self.inputs) > 1 and self.pattern != "range":
            raise ValueError(f"stage {self.name}: a stage with several inputs is maintained by the range pattern")

    @property
    def date_local(self) -> bool:
        """Whether a partition depends on its own date's input only (it may then be evaluated a few dates at a time)."""
        return self.carry is None

    @property
    def input(self) -> Input:
        """The stage's one input (the patterns built so far read a single input)."""
        if len(self.inputs) != 1:
            raise ValueError(f"stage {self.name} reads {len(self.inputs)} inputs; its pattern expects one")
        return self.inputs[0]

    def statement(self, **relations: str) -> str:
        """Its SQL, each input read from the relation named in ``relations`` (default: its own name)."""
        names = [i.relation for i in self.inputs] + ([self.carry.relation] if self.carry else [])
        return self.sql.format(**{name: relations.get(name, name) for name in names})

    def table(self, strategy: str) -> str:
        return f"{strategy}.{self.name}"

    @property
    def spec(self) -> PartitionSpec:
        field = self.schema.find_field(self.partition_field)
        return PartitionSpec(
            PartitionField(
                source_id=field.field_id, field_id=1000, transform=IdentityTransform(), name=self.partition_field
            )
        )


PIPELINE: tuple[Stage, ...] = (
    Stage(
        name="playback_daily",
        sql=logic.PLAYBACK_DAILY,
        inputs=(Input(SOURCE_TABLE, "events", "event_ts"),),
        schema=Schema(
            NestedField(1, "event_id", StringType(), required=True),
            NestedField(2, "event_key", LongType(), required=True),
            NestedField(3, "event_date", DateType(), required=True),
            NestedField(4, "event_ts", TimestamptzType(), required=True),
            NestedField(5, "account_id", LongType(), required=True),
            NestedField(6, "title_id", LongType(), required=True),
            NestedField(7, "country", StringType(), required=True),
            NestedField(8, "device", StringType(), required=True),
            NestedField(9, "view_seconds", IntegerType(), required=True),
        ),
        key=("event_id",),
        probe_key="event_key",
        pattern="merge",
        affected_by=("event_id",),
    ),
    Stage(
        name="playback_daily_agg",
        sql=logic.PLAYBACK_DAILY_AGG,
        inputs=(Input("playback_daily", "daily", "event_date"),),
        schema=Schema(
            NestedField(1, "event_date", DateType(), required=True),
            NestedField(2, "account_id", LongType(), required=True),
            NestedField(3, "total_view_seconds", LongType(), required=True),
            NestedField(4, "plays", LongType(), required=True),
            NestedField(5, "distinct_titles", LongType(), required=True),
        ),
        key=("event_date", "account_id"),
        pattern="filter",
        affected_by=("event_date", "account_id"),
    ),
    Stage(
        name="title_daily_rank",
        sql=logic.TITLE_DAILY_RANK,
        inputs=(Input("playback_daily", "daily", "event_date"),),
        schema=Schema(
            NestedField(1, "event_date", DateType(), required=True),
            NestedField(2, "country", StringType(), required=True),
            NestedField(3, "title_rank", IntegerType(), required=True),
            NestedField(4, "title_id", LongType(), required=True),
            NestedField(5, "view_seconds", LongType(), required=True),
            NestedField(6, "viewers", LongType(), required=True),
        ),
        key=("event_date", "country", "title_rank"),
        pattern="range",
        # A rank row's key does not carry the title: an unseen play can move any rank of its country and date.
        affected_by=("event_date", "country"),
    ),
    Stage(
        name="title_take_rate",
        sql=logic.TITLE_TAKE_RATE,
        inputs=(
            Input("playback_daily", "daily", "event_date"),
            Input(IMPRESSIONS_TABLE, "impressions", "event_ts"),
        ),
        schema=Schema(
            NestedField(1, "event_date", DateType(), required=True),
            NestedField(2, "title_id", LongType(), required=True),
            NestedField(3, "impressions", LongType(), required=True),
            NestedField(4, "plays", LongType(), required=True),
        ),
        key=("event_date", "title_id"),
        pattern="range",
        affected_by=("event_date", "title_id"),
    ),
    Stage(
        name="account_cumulative",
        sql=logic.ACCOUNT_CUMULATIVE,
        inputs=(Input("playback_daily", "daily", "event_date"),),
        schema=Schema(
            NestedField(1, "event_date", DateType(), required=True),
            NestedField(2, "account_id", LongType(), required=True),
            NestedField(3, "day_view_seconds", LongType(), required=True),
            NestedField(4, "cumulative_view_seconds", LongType(), required=True),
        ),
        key=("event_date", "account_id"),
        pattern="forward",
        # An unseen play changes its account's row on its date and every later one.
        affected_by=("account_id",),
        carry=Carry("base", logic.CUMULATIVE_BASE, "account_id"),
    ),
)

STAGES: tuple[str, ...] = tuple(s.name for s in PIPELINE)


def validate(pipeline: Sequence[Stage]) -> tuple[Stage, ...]:
    """``pipeline`` as a tuple, once its shape is checked.

    Every stage name is unique, and every input is a source table or a stage
    declared earlier (lineage order: a stage runs after what it reads).

    Raises:
        ValueError: naming the stage and what is wrong with it.
    """
    sources = {s.name for s in SOURCES}
    seen: set[str] = set()
    for s in pipeline:
        if s.name in seen:
            raise ValueError(f"stage {s.name} is declared twice")
        for i in s.inputs:
            if i.name not in (sources if i.is_source else seen):
                raise ValueError(
                    f"stage {s.name} reads {i.name}: neither a source table nor a stage declared before it"
                )
        seen.add(s.name)
    return tuple(pipeline)


validate(PIPELINE)


def stage(name: str, pipeline: Sequence[Stage] = PIPELINE) -> Stage:
    """The declaration of stage ``name`` in ``pipeline``."""
    for s in pipeline:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name} in the pipeline ({', '.join(s.name for s in pipeline)})")


def sources_of(name: str, pipeline: Sequence[Stage] = PIPELINE) -> tuple[str, ...]:
    """The source tables whose rows reach stage ``name``, directly or through earlier stages."""
    out: list[str] = []
    for i in stage(name, pipeline).inputs:
        for s in (i.name,) if i.is_source else sources_of(i.name, pipeline):
            if s not in out:
                out.append(s)
    return tuple(out)


def with_sql(name: str, sql: str, pipeline: Sequence[Stage] = PIPELINE) -> tuple[Stage, ...]:
    """``pipeline`` with stage ``name`` running ``sql``: a new version of its logic."""
    stage(name, pipeline)
    return validate(tuple(dataclasses.replace(s, sql=sql) if s.name == name else s for s in pipeline))


def view_cap_change(first: date, new_cap: int, pipeline: Sequence[Stage] = PIPELINE) -> tuple[Stage, ...]:
    """``pipeline`` with the view-time cap ``new_cap`` on event dates from ``first`` on (the old one before).

    The version in force is a function of each row's event date, so lookback, IPS
    and the oracle all compute every date with its own version.
    """
    (capped,) = [s for s in pipeline if s.sql == logic.PLAYBACK_DAILY]
    return with_sql(capped.name, logic.playback_daily(logic.cap_from(first.isoformat(), new_cap)), pipeline)


def upstream(name: str, pipeline: Sequence[Stage] = PIPELINE) -> tuple[Stage, ...]:
    """The stages before ``name`` in lineage order (what must run first)."""
    stages = tuple(pipeline)
    return stages[: stages.index(stage(name, stages))]
