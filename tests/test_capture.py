"""IpCapture reads metadata only; its ICDC table references exactly the added files."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import date

import fsspec
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.io.fsspec import FsspecFileIO
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table.snapshots import Operation

from bench.scenario import DEFAULT_MERGE_MODE
from datagen.ingest import ingest_batch
from pipelines import pyiceberg_compat
from pipelines.catalog import CATALOG_NAME, create_tables
from pipelines.ips.capture import WatermarkLost, changed_files, ip_capture
from pipelines.ips.state import ip_commit, watermark
from pipelines.maintenance import compact, expire_history
from pipelines.pipeline import SOURCE_TABLE
from tests.events import Event, at, batch


def ev(i: int, event_day: int, arrival_day: int, account: int = 1) -> Event:
    return Event(f"ev-{i}", account, 7, "US", "tv", at(event_day, 12), 600, at(arrival_day, 20))


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path any pyiceberg FileIO opens for reading."""
    paths: list[str] = []
    original = PyArrowFileIO.new_input

    def recording(self: PyArrowFileIO, location: str):
        paths.append(location)
        return original(self, location)

    monkeypatch.setattr(PyArrowFileIO, "new_input", recording)
    return paths


def test_capture_opens_no_data_file_and_copies_none(catalog, opened) -> None:
    ingest_batch(catalog, batch([ev(1, 0, 0), ev(2, 0, 0)]))
    source = catalog.load_table(SOURCE_TABLE)
    first = source.metadata.current_snapshot_id
    ip_commit(catalog, SOURCE_TABLE, "wf", first)
    ingest_batch(catalog, batch([ev(3, 1, 1), ev(4, -3, 1), ev(5, -1, 1)]))
    source = catalog.load_table(SOURCE_TABLE)
    added = {
        e.data_file.file_path
        for m in source.current_snapshot().manifests(source.io)
        for e in m.fetch_manifest_entry(source.io)
        if e.snapshot_id == source.metadata.current_snapshot_id
    }
    opened.clear()
    cap = ip_capture(catalog, "wf", source, watermark(source, "wf"), "event_ts")
    assert opened, "the walk must read manifests"
    assert not [p for p in opened if p.endswith(".parquet")], opened
    assert {f.file_path for f in cap.files} == added
    assert cap.change_dates == [date(2026, 2, 26), date(2026, 2, 28), date(2026, 3, 2)]
    assert cap.ranges() == [
        (date(2026, 2, 26), date(2026, 2, 26)),
        (date(2026, 2, 28), date(2026, 2, 28)),
        (date(2026, 3, 2), date(2026, 3, 2)),
    ]
    icdc = catalog.load_table(cap.icdc_table)
    icdc_files = {t.file.file_path for t in icdc.scan().plan_files()}
    assert icdc_files == added  # the source's own files: nothing copied
    assert sorted(icdc.scan().to_arrow().column("event_id").to_pylist()) == ["ev-3", "ev-4", "ev-5"]


def test_nothing_new_is_a_no_op(catalog) -> None:
    ingest_batch(catalog, batch([ev(1, 0, 0)]))
    source = catalog.load_table(SOURCE_TABLE)
    ip_commit(catalog, SOURCE_TABLE, "wf", source.metadata.current_snapshot_id)
    source = catalog.load_table(SOURCE_TABLE)
    cap = ip_capture(catalog, "wf", source, watermark(source, "wf"), "event_ts")
    assert cap.empty and cap.icdc_table is None and cap.to_snapshot_id == watermark(source, "wf")


def test_capture_spans_several_snapshots(catalog) -> None:
    ingest_batch(catalog, batch([ev(1, 0, 0)]))
    source = catalog.load_table(SOURCE_TABLE)
    mark = source.metadata.current_snapshot_id
    for d in (1, 2, 3):
        ingest_batch(catalog, batch([ev(10 + d, d, d)]))
    source = catalog.load_table(SOURCE_TABLE)
    walk = changed_files(source, mark)
    assert len(walk.snapshots) == 3 and len(walk.appended) == 3 and not walk.non_append


def test_delete_snapshot_marks_its_partitions_rewritten(catalog) -> None:
    ingest_batch(catalog, batch([ev(1, 0, 0), ev(2, 0, 0, account=2), ev(3, 1, 1)]))
    source = catalog.load_table(SOURCE_TABLE)
    ip_commit(catalog, SOURCE_TABLE, "wf", source.metadata.current_snapshot_id)
    source = catalog.load_table(SOURCE_TABLE)
    source.delete("account_id = 2")
    source = catalog.load_table(SOURCE_TABLE)
    cap = ip_capture(catalog, "wf", source, watermark(source, "wf"), "event_ts")
    op = source.current_snapshot().summary.operation.value
    assert op in ("delete", "overwrite")
    assert cap.non_append == [(source.metadata.current_snapshot_id, op)]
    assert cap.rewritten_dates == [date(2026, 3, 1)] and cap.files == []


def test_compaction_is_a_replace_that_capture_passes_over(catalog) -> None:
    for d in range(3):
        ingest_batch(catalog, batch([ev(10 + d, 0, d), ev(20 + d, d, d)]))
    source = catalog.load_table(SOURCE_TABLE)
    ip_commit(catalog, SOURCE_TABLE, "wf", source.metadata.current_snapshot_id)
    before = sorted(catalog.load_table(SOURCE_TABLE).scan().to_arrow().column("event_id").to_pylist())
    removed, written = compact(catalog.load_table(SOURCE_TABLE), min_files=3)
    source = catalog.load_table(SOURCE_TABLE)
    # Day 0's partition: its own batch's file (2 events) stays, the 2 late files are merged.
    assert (removed, written) == (2, 1)
    assert source.current_snapshot().summary.operation == Operation.OVERWRITE
    assert source.current_snapshot().summary["ipsbench.compaction"] == "rows-preserved"
    assert sorted(source.scan().to_arrow().column("event_id").to_pylist()) == before
    cap = ip_capture(catalog, "wf", source, watermark(source, "wf"), "event_ts")
    assert cap.empty and cap.non_append == [(source.metadata.current_snapshot_id, "replace")]


def test_compaction_keeps_a_partitions_main_file_and_merges_the_late_ones(catalog) -> None:
    # Day 0's own batch (6 events), then three late batches of one event each.
    ingest_batch(catalog, batch([ev(i, 0, 0) for i in range(6)]))
    for d in range(1, 4):
        ingest_batch(catalog, batch([ev(100 + d, 0, d)]))
    source = catalog.load_table(SOURCE_TABLE)
    main = max(source.scan().plan_files(), key=lambda t: t.file.record_count).file.file_path
    before = sorted(source.scan().to_arrow().column("event_id").to_pylist())
    assert compact(source, min_files=5) == (0, 0)  # 4 files: not fragmented enough
    assert compact(catalog.load_table(SOURCE_TABLE), min_files=4) == (3, 1)
    source = catalog.load_table(SOURCE_TABLE)
    after = {t.file.file_path: t.file.record_count for t in source.scan().plan_files()}
    assert after.pop(main) == 6 and list(after.values()) == [3]
    assert sorted(source.scan().to_arrow().column("event_id").to_pylist()) == before
    # Two files left, the main one and the merged one: nothing more to merge.
    assert compact(source, min_files=2) == (0, 0)


class MemoryFileIO(FsspecFileIO):
    """pyiceberg's fsspec FileIO with fsspec's in-process ``memory://`` filesystem, which pyarrow cannot open."""

    def __init__(self, properties: dict[str, str]) -> None:
        super().__init__(properties)
        self._scheme_to_fs["memory"] = lambda _properties: fsspec.filesystem("memory")


@pytest.fixture
def memory_catalog(tmp_path) -> Iterator[SqlCatalog]:
    """A catalog whose tables live in memory, reached only through their FileIO."""
    root = f"memory://ipsbench-{uuid.uuid4().hex}"
    # Not open_catalog (a local warehouse): the compat changes it installs are installed here.
    pyiceberg_compat.install()
    catalog = SqlCatalog(
        CATALOG_NAME,
        uri=f"sqlite:///{tmp_path / 'catalog.db'}",
        warehouse=root,
        **{"py-io-impl": f"{__name__}.MemoryFileIO"},
    )
    create_tables(catalog, (), DEFAULT_MERGE_MODE)
    yield catalog
    catalog.engine.dispose()
    fsspec.filesystem("memory").rm(root, recursive=True)


def test_compaction_reads_and_writes_through_the_tables_file_io(memory_catalog) -> None:
    for d in range(3):
        ingest_batch(memory_catalog, batch([ev(30 + d, 0, d)]))
    source = memory_catalog.load_table(SOURCE_TABLE)
    assert isinstance(source.io, MemoryFileIO)
    before = sorted(source.scan().to_arrow().column("event_id").to_pylist())
    assert compact(source, min_files=3, keep_main_file=False) == (3, 1)
    source = memory_catalog.load_table(SOURCE_TABLE)
    [merged] = [t.file.file_path for t in source.scan().plan_files()]
    assert merged.startswith("memory://")
    assert source.current_snapshot().summary.operation == Operation.OVERWRITE
    assert sorted(source.scan().to_arrow().column("event_id").to_pylist()) == before


def test_expiry_keeps_the_watermark_and_capture_working(catalog) -> None:
    for d in range(4):
        ingest_batch(catalog, batch([ev(d, d, d)]))
    source = catalog.load_table(SOURCE_TABLE)
    snaps = [s.snapshot_id for s in source.metadata.snapshots]
    ip_commit(catalog, SOURCE_TABLE, "wf", snaps[2])
    ingest_batch(catalog, batch([ev(9, 4, 4)]))
    removed = expire_history(catalog.load_table(SOURCE_TABLE))
    source = catalog.load_table(SOURCE_TABLE)
    assert removed == 2
    assert {s.snapshot_id for s in source.metadata.snapshots} >= {snaps[2], snaps[3]}
    cap = ip_capture(catalog, "wf", source, watermark(source, "wf"), "event_ts")
    assert sorted(r for r in catalog.load_table(cap.icdc_table).scan().to_arrow().column("event_id").to_pylist()) == [
        "ev-3",
        "ev-9",
    ]


def test_lost_watermark_is_reported(catalog) -> None:
    ingest_batch(catalog, batch([ev(1, 0, 0)]))
    ingest_batch(catalog, batch([ev(2, 1, 1)]))
    source = catalog.load_table(SOURCE_TABLE)
    with pytest.raises(WatermarkLost, match="not an ancestor"):
        changed_files(source, 12345)
