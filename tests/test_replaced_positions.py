"""The rows a merge-on-read merge replaces: the DuckDB engine's answer against a row-by-row one.

Files are listed out of name order (DuckDB's ``file_index`` must be the position in the list,
not in a sorted one), some paths carry a ``file:`` scheme or a glob character, and earlier
position deletes remove rows that must not be named again.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.engine import DuckDBEngine, in_dates
from pipelines.iceberg_io import FileSet

DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]
KEYS = ("event_date", "account_id")


@pytest.mark.parametrize("seed", range(4))
def test_replaced_positions_name_exactly_the_live_rows_whose_key_the_source_holds(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    names = ["c.parquet", "a.parquet", "b[1].parquet", "0.parquet"]
    rng.shuffle(names)
    paths: list[str] = []
    contents: dict[str, list[tuple[date, int]]] = {}
    for i, name in enumerate(names):
        rows = [(rng.choice(DAYS), rng.randrange(40)) for _ in range(rng.randrange(0, 60))]
        local = str(tmp_path / name)
        pq.write_table(
            pa.table(
                {"event_date": [d for d, _ in rows], "account_id": [a for _, a in rows]},
                schema=pa.schema([("event_date", pa.date32()), ("account_id", pa.int64())]),
            ),
            local,
        )
        path = f"file://{local}" if i % 2 else local
        paths.append(path)
        contents[path] = rows
    deleted = {(p, pos) for p in paths for pos in range(len(contents[p])) if rng.random() < 0.3}
    delete_file = str(tmp_path / "deletes.parquet")
    pq.write_table(
        pa.table(
            {
                "file_path": [
                    f"file:{p.removeprefix('file://')}" if rng.random() < 0.5 else p for p, _ in sorted(deleted)
                ],
                "pos": pa.array([pos for _, pos in sorted(deleted)], pa.int64()),
            }
        ),
        delete_file,
    )
    source_keys = {(rng.choice(DAYS), rng.randrange(40)) for _ in range(30)}
    wanted_days = DAYS[:2]
    files = FileSet(paths=tuple(paths), delete_paths=(delete_file,) if deleted else ())
    engine = DuckDBEngine()
    try:
        engine.bind_arrow(
            "source",
            pa.table({"event_date": [d for d, _ in source_keys], "account_id": [a for _, a in source_keys]}),
        )
        got = engine.replaced_positions(files, "source", KEYS, in_dates("event_date", wanted_days))
    finally:
        engine.close()
    expected = sorted(
        (p, pos)
        for p in paths
        for pos, key in enumerate(contents[p])
        if key in source_keys and key[0] in wanted_days and (p, pos) not in deleted
    )
    assert sorted(zip(got.column("file_path").to_pylist(), got.column("pos").to_pylist(), strict=True)) == expected
    assert got.schema.names == ["file_path", "pos"]
