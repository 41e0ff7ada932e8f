"""pipelines.pyiceberg_compat: the version check, each change's patched behaviour, and for each
change a ``test_upstream_*`` that shows pyiceberg still behaves as the change assumes (it fails
once upstream fixes the behaviour: the change may then go). Also the project's partition writer
checked against pyiceberg's own writer and the tables' Parquet settings.

No conftest hook installs the changes: every catalog here comes from ``open_catalog``, which
installs them; tests that reach pyiceberg without a catalog call ``pyiceberg_compat.install()``.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.conversions import to_bytes
from pyiceberg.expressions import In, Reference
from pyiceberg.expressions.literals import DateLiteral
from pyiceberg.expressions.visitors import _ManifestEvalVisitor, manifest_evaluator
from pyiceberg.io.pyarrow import PyArrowFileIO, _dataframe_to_data_files
from pyiceberg.manifest import ManifestFile, PartitionFieldSummary
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table import Transaction
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import DateType, NestedField

from bench.metrics import StageRecorder
from bench.runner import simulate
from bench.scenario import from_preset
from datagen.ingest import ingest_batch
from pipelines import pyiceberg_compat, row_level
from pipelines.catalog import open_catalog
from pipelines.engine import DuckDBEngine
from pipelines.iceberg_io import conform, data_files, live_data_files, live_files, overwrite_partitions, partition_files
from pipelines.pipeline import SOURCE_TABLE, SOURCES, STAGES
from pipelines.pyiceberg_compat import manifest_cache, manifest_eval_lock, transaction_metadata
from tests.events import Event, at, batch

REPO = Path(__file__).resolve().parent.parent
ALL_CHANGES = ["manifest_eval_lock", "manifest_cache", "transaction_metadata"]

# The event_date partitioning of the target tables, spelled out so these tests need no table.
DATE_SCHEMA = Schema(NestedField(1, "event_date", DateType(), required=True))
DATE_SPEC = PartitionSpec(PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="event_date"))


# --- installation ---------------------------------------------------------------------------


def test_importing_pipelines_changes_nothing_in_pyiceberg_until_install() -> None:
    """In a fresh interpreter the pipeline modules import without touching pyiceberg; install() changes it."""
    code = """
import json
import pipelines.iceberg_io, pipelines.maintenance, pipelines.catalog
from pyiceberg.expressions.visitors import _ManifestEvalVisitor
from pyiceberg.manifest import ManifestFile
from pyiceberg.table import Transaction
members = [_ManifestEvalVisitor.eval, ManifestFile.fetch_manifest_entry, Transaction.__dict__["table_metadata"].fget]
from pipelines import pyiceberg_compat
before = pyiceberg_compat.installed_changes()
pyiceberg_compat.install()
print(json.dumps({"modules": [m.__module__ for m in members], "before": before,
                  "after": pyiceberg_compat.installed_changes()}))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["modules"] == ["pyiceberg.expressions.visitors", "pyiceberg.manifest", "pyiceberg.table"]
    assert seen["before"] == []
    assert seen["after"] == ALL_CHANGES


def test_required_version_is_the_pin_and_the_installed_release() -> None:
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    [pin] = [d for d in dependencies if d.startswith("pyiceberg[")]
    assert pin.endswith(f"=={pyiceberg_compat.REQUIRED_VERSION}")
    assert pyiceberg_compat.installed_version() == pyiceberg_compat.REQUIRED_VERSION


def test_install_refuses_another_pyiceberg_with_a_one_line_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyiceberg_compat, "_installed", False)
    monkeypatch.setattr(pyiceberg_compat, "installed_version", lambda: "0.13.0")
    with pytest.raises(pyiceberg_compat.PyicebergVersionMismatch) as refused:
        pyiceberg_compat.install()
    message = str(refused.value)
    assert "pyiceberg 0.13.0 is installed" in message and "requires pyiceberg==0.12.0" in message
    assert "\n" not in message
    assert pyiceberg_compat._installed is False


def test_a_second_install_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    pyiceberg_compat.install()
    members = (_ManifestEvalVisitor.eval, ManifestFile.fetch_manifest_entry, Transaction.__dict__["table_metadata"])

    def must_not_be_asked() -> str:
        raise AssertionError("a second install() checked the version again")

    monkeypatch.setattr(pyiceberg_compat, "installed_version", must_not_be_asked)
    pyiceberg_compat.install()
    assert (_ManifestEvalVisitor.eval, ManifestFile.fetch_manifest_entry, Transaction.__dict__["table_metadata"]) == (
        members
    )
    assert pyiceberg_compat.installed_changes() == ALL_CHANGES


# --- manifest_eval_lock ---------------------------------------------------------------------


def _manifest(i: int, day: int) -> ManifestFile:
    bound = to_bytes(DateType(), day)
    return ManifestFile.from_args(
        manifest_path=f"m{i}.avro",
        partitions=[PartitionFieldSummary(False, None, bound, bound)],
    )


def _judge_concurrently(evaluate, manifests: list[ManifestFile]) -> list[bool]:
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(evaluate, manifests))


@pytest.fixture
def tiny_switch_interval():
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(old)


def test_upstream_manifest_evaluator_shares_state_between_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """Upstream ``_ManifestEvalVisitor.eval`` keeps the manifest's summaries on the shared visitor:
    another call between its store and its use makes it judge the wrong manifest. Deterministic:
    the other call is made from inside the first, where a second thread would run."""
    partition_schema = Schema(*DATE_SPEC.partition_type(DATE_SCHEMA).fields)
    wanted = In(term=Reference("event_date"), values={DateLiteral(20_100), DateLiteral(20_101)})
    visitor = _ManifestEvalVisitor(partition_schema, wanted, case_sensitive=True)
    inside, outside = _manifest(0, 20_100), _manifest(1, 30_000)
    assert manifest_eval_lock.ORIGINAL(visitor, inside) is True
    assert manifest_eval_lock.ORIGINAL(visitor, outside) is False

    visit_in = visitor.visit_in
    interleaved: list[ManifestFile] = []

    def with_another_call_first(term, literals):
        if not interleaved:
            interleaved.append(outside)
            manifest_eval_lock.ORIGINAL(visitor, outside)
        return visit_in(term=term, literals=literals)

    monkeypatch.setattr(visitor, "visit_in", with_another_call_first)
    # `inside` matches, but is judged by `outside`'s summaries: upstream still shares the state.
    assert manifest_eval_lock.ORIGINAL(visitor, inside) is False
    assert interleaved == [outside]


@pytest.mark.slow
def test_manifest_evaluator_judges_each_manifest_by_its_own_summaries(tiny_switch_interval) -> None:
    """One evaluator shared by threads (as ``_deleted_entries`` shares it) gives the sequential answers."""
    pyiceberg_compat.install()
    wanted = range(20_100, 20_111)
    evaluate = manifest_evaluator(
        DATE_SPEC, DATE_SCHEMA, In(term=Reference("event_date"), values={DateLiteral(d) for d in wanted})
    )
    manifests = [_manifest(i, 20_000 + i % 400) for i in range(4000)]
    expected = [20_100 <= 20_000 + i % 400 <= 20_110 for i in range(4000)]
    for _ in range(12):
        assert _judge_concurrently(evaluate, manifests) == expected


# --- manifest_cache -------------------------------------------------------------------------


class CountingFileIO(PyArrowFileIO):
    """The local FileIO, counting the paths it opens for reading."""

    def __init__(self, properties: dict[str, str]) -> None:
        super().__init__(properties)
        self.opened: list[str] = []

    def new_input(self, location: str):
        self.opened.append(location)
        return super().new_input(location)


def _a_manifest(catalog) -> tuple[ManifestFile, CountingFileIO]:
    ev = Event("ev-1", 1, 7, "US", "tv", at(0, 12), 600, at(0, 20))
    ingest_batch(catalog, batch([ev]))
    table = catalog.load_table(SOURCE_TABLE)
    [manifest] = table.current_snapshot().manifests(table.io)
    return manifest, CountingFileIO(dict(table.io.properties))


def test_upstream_fetch_manifest_entry_reads_the_file_on_every_call(catalog) -> None:
    manifest, io = _a_manifest(catalog)
    first = manifest_cache.ORIGINAL(manifest, io, True)
    second = manifest_cache.ORIGINAL(manifest, io, True)
    assert [e.data_file.file_path for e in first] == [e.data_file.file_path for e in second]
    # Upstream opens and parses the immutable file again: no cache of its own yet.
    assert io.opened.count(manifest.manifest_path) == 2


def test_manifest_cache_reads_each_manifest_once(catalog) -> None:
    manifest, io = _a_manifest(catalog)
    manifest_cache.clear()
    first = manifest_cache.fetch_cached(manifest, io)
    second = manifest_cache.fetch_cached(manifest, io)
    assert [e.data_file.file_path for e in first] == [e.data_file.file_path for e in second]
    assert io.opened.count(manifest.manifest_path) == 1


def test_manifest_cache_serves_what_the_file_holds(catalog) -> None:
    """Cached entries equal a fresh read, across overwrites that rewrite manifests."""
    manifest_cache.clear()
    hits_before = manifest_cache.stats["hits"]
    table = catalog.load_table("ips.playback_daily_agg")
    start = date(2026, 1, 1)
    for step in range(6):
        dates = [start + timedelta(days=d) for d in range(step, step + 4)]
        rows = pa.table(
            {
                "event_date": pa.array([d for d in dates for _ in range(3)], pa.date32()),
                "account_id": pa.array(range(len(dates) * 3), pa.int64()),
                "total_view_seconds": pa.array([step] * len(dates) * 3, pa.int64()),
                "plays": pa.array([1] * len(dates) * 3, pa.int64()),
                "distinct_titles": pa.array([1] * len(dates) * 3, pa.int64()),
            }
        )
        overwrite_partitions(table, [rows], dates, StageRecorder())
        for manifest in table.current_snapshot().manifests(table.io):
            fresh = manifest_cache.ORIGINAL(manifest, table.io, True)
            cached = live_data_files(manifest, table.io)
            assert sorted(f.file_path for f in cached) == sorted(e.data_file.file_path for e in fresh)
    live = partition_files(table, [start + timedelta(days=d) for d in range(10)])
    assert len(live) == 9  # days 0..8, one file each
    assert manifest_cache.stats["hits"] > hits_before


# --- transaction_metadata -------------------------------------------------------------------


def test_upstream_transaction_copies_metadata_with_nothing_staged(catalog) -> None:
    table = catalog.load_table("ips.playback_daily_agg")
    tx = table.transaction()
    upstream = transaction_metadata.ORIGINAL(tx)
    # Nothing staged, yet upstream returns a (deep) copy.
    assert upstream == table.metadata and upstream is not table.metadata


def test_transaction_metadata_is_copied_only_once_updates_are_staged(catalog) -> None:
    table = catalog.load_table("ips.playback_daily_agg")
    tx = table.transaction()
    assert tx.table_metadata is table.metadata  # nothing staged: no copy
    tx.set_properties(owner="ipsbench")
    staged = tx.table_metadata
    assert staged is not table.metadata and staged.properties["owner"] == "ipsbench"
    assert "owner" not in table.metadata.properties
    # The same staged updates: the same copy; staging more makes a new one.
    assert tx.table_metadata is staged
    tx.set_properties(team="data")
    more = tx.table_metadata
    assert more is not staged and (more.properties["owner"], more.properties["team"]) == ("ipsbench", "data")
    # Equal to a fresh upstream copy but for the time each copy was made (the catalog's commit stamps its own).
    fresh = transaction_metadata.ORIGINAL(tx)
    assert more.model_copy(update={"last_updated_ms": 0}) == fresh.model_copy(update={"last_updated_ms": 0})
    tx.commit_transaction()
    assert catalog.load_table("ips.playback_daily_agg").properties["owner"] == "ipsbench"


# --- the project's writer beside pyiceberg's --------------------------------------------------


@pytest.mark.parametrize("arrival", ["scattered", "grouped by partition"])
def test_partition_writer_matches_pyiceberg_writer(catalog, arrival: str) -> None:
    """``data_files`` puts the same rows into the same partitions as pyiceberg's own writer,
    whether it has to sort the rows or finds each partition's rows together already."""
    table = catalog.load_table("ips.playback_daily_agg")
    days = [date(2026, 1, 1) + timedelta(days=(i * 7919) % 23) for i in range(2000)]
    if arrival != "scattered":
        days.sort(reverse=True)
    rows = pa.table(
        {
            "event_date": pa.array(days, pa.date32()),
            "account_id": pa.array(range(2000), pa.int64()),
            "total_view_seconds": pa.array([i * 3 for i in range(2000)], pa.int64()),
            "plays": pa.array([1] * 2000, pa.int64()),
            "distinct_titles": pa.array([2] * 2000, pa.int64()),
        }
    )
    ours = data_files(table.metadata, rows, table.io, uuid.uuid4())
    theirs = list(_dataframe_to_data_files(table.metadata, rows, table.io, write_uuid=uuid.uuid4()))

    def by_partition(files):
        return {f.partition[0]: f.record_count for f in files}

    assert by_partition(ours) == by_partition(theirs)
    assert len(ours) == len(set(days))
    assert sum(f.record_count for f in ours) == 2000
    written = pa.concat_tables(pq.read_table(f.file_path.removeprefix("file://")) for f in ours)
    assert sorted(zip(*written.select(["account_id", "event_date"]).to_pydict().values(), strict=True)) == sorted(
        zip(range(2000), days, strict=True)
    )


def test_tables_cap_dictionary_pages_so_unique_event_ids_fall_back_to_plain(catalog) -> None:
    """Every table carries the 64 KiB dictionary cap. Under it the unique event_ids get a small
    dictionary page (then plain pages) where Iceberg's 2 MiB default builds one 2 MiB deep,
    while the 5,000 title_ids and the countries keep the very dictionary they had."""
    names = [".".join(t) for ns in ("source", "lookback", "ips") for t in catalog.list_tables(ns)]
    assert set(names) == {*(s.name for s in SOURCES), *(f"{ns}.{st}" for ns in ("lookback", "ips") for st in STAGES)}
    for name in names:
        assert catalog.load_table(name).properties["write.parquet.dict-size-bytes"] == str(64 * 1024)
    table = catalog.load_table("lookback.playback_daily")
    n = 150_000
    rows = pa.table(
        {
            "event_id": [f"e{10**19 + i * 7_777_777}" for i in range(n)],
            # Distinct 60-bit values scattered like the real MD5-derived keys; not measured here.
            "event_key": pa.array([(i * 0x9E3779B97F4A7C15) % 2**60 for i in range(n)], pa.int64()),
            "event_date": pa.array([date(2026, 1, 1)] * n, pa.date32()),
            "event_ts": pa.array([i for i in range(n)], pa.timestamp("us", tz="UTC")),
            "account_id": pa.array([i % 997 for i in range(n)], pa.int64()),
            "title_id": pa.array([(i * 7919) % 5000 for i in range(n)], pa.int64()),
            "country": [("US", "BR", "FR")[i % 3] for i in range(n)],
            "device": [("tv", "web")[i % 2] for i in range(n)],
            "view_seconds": pa.array([i % 3600 + 1 for i in range(n)], pa.int32()),
        }
    )
    default = table.metadata.model_copy(
        update={"properties": {k: v for k, v in table.properties.items() if k != "write.parquet.dict-size-bytes"}}
    )

    def dictionary_pages(metadata) -> dict[str, int]:
        """Bytes of each column's dictionary page, from the file's footer."""
        [written] = data_files(metadata, conform(table, rows), table.io, uuid.uuid4())
        meta = pq.ParquetFile(written.file_path.removeprefix("file://")).metadata
        pages = {}
        for column in ("event_id", "title_id", "country"):
            chunk = meta.row_group(0).column(meta.schema.names.index(column))
            assert chunk.has_dictionary_page
            pages[column] = chunk.data_page_offset - chunk.dictionary_page_offset
        return pages

    capped, uncapped = dictionary_pages(table.metadata), dictionary_pages(default)
    # The cap is checked after each batch of rows written, so a page may pass it by one batch.
    assert capped["event_id"] < 128 * 1024 < 4 * capped["event_id"] < uncapped["event_id"], (capped, uncapped)
    assert capped["title_id"] == uncapped["title_id"] > 5000  # all 5,000 titles, under both settings
    assert capped["country"] == uncapped["country"]


@pytest.mark.slow
def test_outputs_written_in_chunks_of_whole_partitions_stay_exact(tmp_path, monkeypatch) -> None:
    """With tiny chunks every stage's output reaches pyiceberg in many pieces; both strategies stay exact."""
    monkeypatch.setattr(DuckDBEngine, "CHUNK_ROWS", 300)
    pieces = []
    whole = DuckDBEngine.chunks

    def counted(self, name):
        for chunk in whole(self, name):
            pieces.append(chunk.num_rows)
            yield chunk

    monkeypatch.setattr(DuckDBEngine, "chunks", counted)
    # Four days: every stage writes chunks on each, late rows reach earlier dates from day 1 on.
    scenario = from_preset("tiny", days=4, warmup_days=1)
    run = simulate(scenario, tmp_path / "warehouse", progress=False)
    assert run.verdicts["ips"].equal_to_oracle
    assert run.verdicts["lookback"].unexplained_mismatched_rows == 0
    catalog = open_catalog(tmp_path / "warehouse")
    table = catalog.load_table("lookback.playback_daily")
    files = live_files(table)
    # Still one file per partition, though a run's output came in several chunks.
    assert len(files) == len({f.partition[0] for f in files})
    assert sum(f.record_count for f in files) > 5 * 300
    assert len(pieces) > 3 * scenario.days  # several chunks per day


# --- writer_threads -------------------------------------------------------------------------


def test_upstream_offers_no_public_executor_shutdown() -> None:
    from pyiceberg.utils.concurrent import ExecutorFactory

    public = {name for name in vars(ExecutorFactory) if not name.startswith("_")}
    assert public == {"get_or_create", "max_workers"}, public  # a new member may be the public way


def test_stop_writers_waits_for_the_running_writes_and_drops_the_executor() -> None:
    import threading

    from pyiceberg.utils.concurrent import ExecutorFactory

    from pipelines.pyiceberg_compat.writer_threads import stop_writers

    executor = ExecutorFactory.get_or_create()
    started, release, finished = threading.Event(), threading.Event(), threading.Event()

    def write() -> None:
        started.set()
        release.wait(5)
        finished.set()

    executor.submit(write)
    assert started.wait(5)
    threading.Timer(0.2, release.set).start()
    stop_writers()
    assert finished.is_set()  # stop_writers returned only after the running write ended
    assert ExecutorFactory.get_or_create() is not executor  # a later write gets a fresh executor


# --- row_delta ------------------------------------------------------------------------------


def _agg_rows(dates: list[date], accounts: range, seconds: int) -> pa.Table:
    return pa.table(
        {
            "event_date": pa.array([d for d in dates for _ in accounts], pa.date32()),
            "account_id": pa.array([a for _ in dates for a in accounts], pa.int64()),
            "total_view_seconds": pa.array([seconds] * (len(dates) * len(accounts)), pa.int64()),
            "plays": pa.array([1] * (len(dates) * len(accounts)), pa.int64()),
            "distinct_titles": pa.array([1] * (len(dates) * len(accounts)), pa.int64()),
        }
    )


def test_upstream_writes_no_delete_manifests(catalog) -> None:
    """pyiceberg's manifest writer is DATA only, and its overwrite cannot remove a delete file."""
    from pyiceberg.exceptions import ValidationException
    from pyiceberg.manifest import ManifestContent, ManifestWriterV2, write_manifest
    from pyiceberg.table.update.snapshot import UpdateSnapshot

    table = catalog.load_table("ips.playback_daily_agg")
    out = table.io.new_output(f"{table.location()}/metadata/probe-{uuid.uuid4()}.avro")
    writer = write_manifest(2, table.spec(), table.schema(), out, 1, "null")
    assert isinstance(writer, ManifestWriterV2) and writer.content() == ManifestContent.DATA
    assert not any("delta" in name or "delete_file" in name for name in dir(UpdateSnapshot))
    # A delete file written by the row delta cannot be removed by pyiceberg's own overwrite.
    day = date(2026, 1, 1)
    overwrite_partitions(table, [_agg_rows([day], range(4), 1)], [day], StageRecorder())
    table = catalog.load_table("ips.playback_daily_agg")
    [data] = live_files(table)
    deletes = row_level.write_position_deletes(
        table, pa.table({"file_path": [data.file_path], "pos": [0]}), [data], uuid.uuid4()
    )
    row_level.commit_row_delta(table, deletes)
    table = catalog.load_table("ips.playback_daily_agg")
    [live_delete] = [f for f in live_files(table) if f.file_path == deletes[0].file_path]
    with (
        pytest.raises(ValidationException, match="Missing required files"),
        table.transaction() as tx,
        tx.update_snapshot().overwrite() as replace,
    ):
        replace.delete_data_file(live_delete)


def test_row_delta_writes_spec_position_deletes_in_one_snapshot(catalog) -> None:
    """Delete files (reserved field ids, sorted) in a DELETE manifest, with the commit's sequence number, plus the
    new rows, in one snapshot; pyiceberg's scan applies them; a partition overwrite removes them."""
    from pyiceberg.manifest import DataFileContent, ManifestContent

    table = catalog.load_table("ips.playback_daily_agg")
    days = [date(2026, 1, 1), date(2026, 1, 2)]
    overwrite_partitions(table, [_agg_rows(days, range(6), 1)], days, StageRecorder())
    table = catalog.load_table("ips.playback_daily_agg")
    old = live_files(table)
    base_seq = table.current_snapshot().sequence_number
    # Replace accounts 1 and 4 of both days (positions 1 and 4 of each day's one file), unsorted on purpose.
    named = pa.table({"file_path": [f.file_path for f in old for _ in (4, 1)], "pos": [p for _ in old for p in (4, 1)]})
    write_uuid = uuid.uuid4()
    deletes = row_level.write_position_deletes(table, named, old, write_uuid)
    replacement = conform(table, _agg_rows(days, range(1, 5, 3), 99))
    added = data_files(table.metadata, replacement, table.io, write_uuid)
    row_level.commit_row_delta(table, [*added, *deletes], (), write_uuid, {"probe": "yes"})

    table = catalog.load_table("ips.playback_daily_agg")
    snap = table.current_snapshot()
    assert snap.sequence_number == base_seq + 1
    assert snap.summary.operation.value == "overwrite" and snap.summary["probe"] == "yes"
    assert int(snap.summary["added-position-deletes"]) == 4 and int(snap.summary["added-position-delete-files"]) == 2
    assert int(snap.summary["added-data-files"]) == 2
    own = [m for m in snap.manifests(table.io) if m.added_snapshot_id == snap.snapshot_id]
    assert sorted(m.content for m in own) == [ManifestContent.DATA, ManifestContent.DELETES]
    [delete_manifest] = [m for m in own if m.content == ManifestContent.DELETES]
    entries = delete_manifest.fetch_manifest_entry(table.io)
    assert {e.data_file.content for e in entries} == {DataFileContent.POSITION_DELETES}
    # ADDED entries inherit the commit's sequence number; the files they name are older.
    assert {e.sequence_number for e in entries} == {snap.sequence_number}
    assert (
        max(
            e.sequence_number
            for m in snap.manifests(table.io)
            if m.content == ManifestContent.DATA
            for e in m.fetch_manifest_entry(table.io)
            if e.data_file.file_path in {f.file_path for f in old}
        )
        <= base_seq
    )
    for e in entries:
        written = pq.read_table(e.data_file.file_path)
        assert [f.metadata[b"PARQUET:field_id"] for f in written.schema] == [b"2147483546", b"2147483545"]
        assert written.column_names == ["file_path", "pos"]
        assert written.to_pylist() == sorted(written.to_pylist(), key=lambda r: (r["file_path"], r["pos"]))
        assert e.data_file.record_count == written.num_rows == 2
    rows = table.scan().to_arrow().sort_by([("event_date", "ascending"), ("account_id", "ascending")])
    seconds = {(r["event_date"], r["account_id"]): r["total_view_seconds"] for r in rows.to_pylist()}
    assert len(seconds) == rows.num_rows == 12
    assert {k for k, v in seconds.items() if v == 99} == {(d, a) for d in days for a in (1, 4)}
    # The DuckDB engine reads the same live rows.
    engine = DuckDBEngine()
    from pipelines.iceberg_io import plan_dates

    engine.bind_files("t", plan_dates(table, days), pa.schema([]))
    duck = engine.query("SELECT * FROM t ORDER BY event_date, account_id")
    engine.close()
    assert duck.equals(rows.cast(duck.schema))
    # Overwriting those partitions removes their data and delete files together.
    overwrite_partitions(table, [_agg_rows(days, range(2), 7)], days, StageRecorder())
    table = catalog.load_table("ips.playback_daily_agg")
    assert {f.content for f in live_files(table)} == {DataFileContent.DATA}
    assert table.scan().to_arrow().num_rows == 4
