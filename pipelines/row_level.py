"""Merge-on-read writes: Iceberg v2 position-delete files and row-delta commits.

A merge by key on a ``write.merge.mode = merge-on-read`` table writes, in one
snapshot, position-delete files naming the rows it replaces and data files
holding the new rows, instead of rewriting the files it touches.

Position-delete files follow the Iceberg v2 spec: Parquet with the columns
``file_path`` (string, reserved field id 2147483546) and ``pos`` (long,
2147483545, the 0-based row position in that data file), rows sorted by
``file_path`` then ``pos``; one file per partition, in the partition of the
data files it names (and in their folder), with metrics (value counts and
bounds of both columns: readers skip a delete file whose ``file_path`` bounds
exclude a data file). The commit (``pipelines.pyiceberg_compat.row_delta``)
puts them in a DELETE manifest; their sequence number is the commit's, so
they apply to the named files (older) and never to the data files of the same
commit (new paths).
"""

from __future__ import annotations

import posixpath
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.conversions import to_bytes
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Operation
from pyiceberg.types import LongType, StringType

from pipelines.pyiceberg_compat.row_delta import RowDelta

FILE_PATH_ID = 2147483546
POS_ID = 2147483545
DELETE_SCHEMA = pa.schema(
    [
        pa.field("file_path", pa.string(), nullable=False, metadata={b"PARQUET:field_id": str(FILE_PATH_ID).encode()}),
        pa.field("pos", pa.int64(), nullable=False, metadata={b"PARQUET:field_id": str(POS_ID).encode()}),
    ]
)
# Summary property of a merge by key written merge-on-read: every row its delete files
# remove is replaced by a row of the same key in the data files it adds (see capture).
ROW_DELTA_PROPERTY = "ipsbench.row-delta"
MERGE_BY_KEY = "merge-by-key"
MERGE_ON_READ = "merge-on-read"


def merge_on_read(table: Table) -> bool:
    """Whether merges into ``table`` write position deletes (``write.merge.mode``)."""
    return table.properties.get("write.merge.mode") == MERGE_ON_READ


def write_position_deletes(
    table: Table, deleted: pa.Table, live: Sequence[DataFile], write_uuid: uuid.UUID
) -> list[DataFile]:
    """Write the rows ``deleted`` (``file_path``, ``pos``) of the data files ``live`` as position-delete files.

    One file per partition of the named data files, sorted by path then position.

    Raises:
        ValueError: a row names a file that is not in ``live``.
    """
    if deleted.num_rows == 0:
        return []
    by_path = {f.file_path: f for f in live}
    deleted = deleted.select(["file_path", "pos"]).cast(DELETE_SCHEMA)
    unknown = set(pc.unique(deleted.column("file_path")).to_pylist()) - by_path.keys()
    if unknown:
        raise ValueError(f"position deletes name files that are not live: {sorted(unknown)[:3]}")
    groups: dict[Any, list[str]] = defaultdict(list)
    for path in pc.unique(deleted.column("file_path")).to_pylist():
        f = by_path[path]
        groups[(getattr(f, "_spec_id", table.metadata.default_spec_id), f.partition)].append(path)
    out: list[DataFile] = []
    for n, ((spec_id, partition), paths) in enumerate(groups.items()):
        rows = deleted.filter(pc.is_in(deleted.column("file_path"), pa.array(paths))).sort_by(
            [("file_path", "ascending"), ("pos", "ascending")]
        )
        location = posixpath.join(posixpath.dirname(paths[0]), f"{write_uuid}-{n:05d}-deletes.parquet")
        with table.io.new_output(location).create(overwrite=False) as stream:
            pq.write_table(rows, stream)
        size = len(table.io.new_input(location))
        first, last = rows.slice(0, 1).to_pylist()[0], rows.slice(rows.num_rows - 1, 1).to_pylist()[0]
        counts = {FILE_PATH_ID: rows.num_rows, POS_ID: rows.num_rows}
        positions = rows.column("pos")
        delete_file = DataFile.from_args(
            content=DataFileContent.POSITION_DELETES,
            file_path=location,
            file_format=FileFormat.PARQUET,
            partition=partition,
            record_count=rows.num_rows,
            file_size_in_bytes=size,
            column_sizes={},
            value_counts=counts,
            null_value_counts={FILE_PATH_ID: 0, POS_ID: 0},
            nan_value_counts={},
            lower_bounds={
                FILE_PATH_ID: to_bytes(StringType(), first["file_path"]),
                POS_ID: to_bytes(LongType(), pc.min(positions).as_py()),
            },
            upper_bounds={
                FILE_PATH_ID: to_bytes(StringType(), last["file_path"]),
                POS_ID: to_bytes(LongType(), pc.max(positions).as_py()),
            },
            key_metadata=None,
            split_offsets=None,
            equality_ids=None,
            sort_order_id=None,
        )
        delete_file.spec_id = spec_id
        out.append(delete_file)
    return out


def commit_row_delta(
    table: Table,
    add: Sequence[DataFile],
    remove: Sequence[DataFile] = (),
    commit_uuid: uuid.UUID | None = None,
    snapshot_properties: dict[str, str] | None = None,
) -> None:
    """One snapshot adding ``add`` (data and position-delete files) and removing ``remove`` (data and delete files).

    Its operation is OVERWRITE, or DELETE when it adds no data file (as Iceberg's RowDelta).
    """
    operation = (
        Operation.OVERWRITE if any(f.content == DataFileContent.DATA for f in add) or remove else Operation.DELETE
    )
    with table.transaction() as tx:
        delta = RowDelta(tx, commit_uuid, dict(snapshot_properties or {}), operation)
        for f in add:
            delta.add_file(f)
        for f in remove:
            delta.remove_file(f)
        delta.commit()


def read_live(table: Table, data_files: Sequence[DataFile], deletes: Sequence[DataFile], schema: pa.Schema) -> pa.Table:
    """The rows of ``data_files`` that none of the position-delete files ``deletes`` removes.

    Each file is read once: the delete files' positions first, then each data
    file with the positions naming it dropped.
    """

    def read(path: str, columns: list[str] | None = None) -> pa.Table:
        with table.io.new_input(path).open() as stream:
            if columns is None:
                return pq.read_table(stream, schema=schema)
            return pq.read_table(stream, columns=columns)

    named = pa.concat_tables([read(d.file_path, ["file_path", "pos"]) for d in deletes]) if deletes else None
    parts = []
    for f in data_files:
        rows = read(f.file_path)
        if named is not None:
            gone = named.filter(pc.equal(named.column("file_path"), f.file_path)).column("pos").to_numpy()
            if len(gone):
                keep = np.ones(rows.num_rows, dtype=bool)
                keep[gone] = False
                rows = rows.filter(pa.array(keep))
        parts.append(rows)
    return pa.concat_tables(parts) if parts else schema.empty_table()
