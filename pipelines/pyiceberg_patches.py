"""Three changes to pyiceberg 0.12's commit path, installed by ``install()``.

1. A thread-safe manifest evaluator. ``_ManifestEvalVisitor.eval`` stores the
   manifest's partition summaries on the visitor before visiting the filter,
   and ``_OverwriteFiles._deleted_entries`` calls one shared visitor from
   several threads: a manifest can be judged by another manifest's summaries,
   skipped, and the overwrite then fails with "Missing required files to
   delete" (found here as an intermittent failure; iceberg-go fixed the same
   race in its manifest evaluator). Each call now holds a lock.

2. A process-wide cache of manifest contents. An Iceberg manifest file is
   immutable: a commit writes new manifests and never edits one. pyiceberg
   nevertheless re-reads (and re-parses, in Python) every manifest of the
   parent snapshot on each overwrite commit, twice, and every scan plan reads
   them again; with a table's manifests counted in dozens, that was the largest
   single cost of the lookback's writes. ``fetch_manifest_entry`` now parses
   each manifest once per process. The key holds the manifest path and what the
   entries inherit from the manifest list that names it (added snapshot id,
   sequence numbers); a read whose entry count differs from the counts the
   manifest list recorded is served but never kept. Entries are shared between
   callers: pyiceberg only mutates them while reading (that inheritance), which
   happens before they are cached.

3. No deep copy of unchanged metadata. ``Transaction.table_metadata`` applies
   the staged updates to the table's metadata and returns a deep copy of the
   result; a snapshot commit reads that property a dozen times, mostly with
   nothing staged yet, and copying metadata that holds every retained snapshot
   was about 5 % of a whole run. With no staged update it now returns the
   table's own metadata, which is a frozen model pyiceberg replaces, never
   edits, on commit; with updates staged the original runs.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from pyiceberg.expressions.visitors import _ManifestEvalVisitor
from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestEntry, ManifestFile
from pyiceberg.table import Transaction
from pyiceberg.table.metadata import TableMetadata

MAX_MANIFESTS = 4096

_lock = threading.Lock()
_cache: OrderedDict[tuple[Any, ...], tuple[ManifestEntry, ...]] = OrderedDict()
_original = ManifestFile.fetch_manifest_entry
stats = {"hits": 0, "misses": 0, "rejected": 0}


def _complete(manifest: ManifestFile, entries: tuple[ManifestEntry, ...], discard_deleted: bool) -> bool:
    """Whether ``entries`` count what the manifest list recorded for ``manifest``."""
    counts = (manifest.added_files_count, manifest.existing_files_count, manifest.deleted_files_count)
    if any(c is None for c in counts):
        return False
    added, existing, deleted = (int(c) for c in counts)  # type: ignore[arg-type]
    return len(entries) == added + existing + (0 if discard_deleted else deleted)


def _key(manifest: ManifestFile, discard_deleted: bool) -> tuple[Any, ...]:
    return (
        manifest.manifest_path,
        manifest.added_snapshot_id,
        manifest.sequence_number,
        manifest.min_sequence_number,
        manifest.partition_spec_id,
        discard_deleted,
    )


def _fetch(self: ManifestFile, io: FileIO, discard_deleted: bool = True) -> list[ManifestEntry]:
    key = _key(self, discard_deleted)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return list(hit)
    entries = tuple(_original(self, io, discard_deleted))
    if not _complete(self, entries, discard_deleted):
        # Not what the manifest list says the manifest holds: serve it, never keep it.
        with _lock:
            stats["rejected"] += 1
        return list(entries)
    with _lock:
        stats["misses"] += 1
        _cache[key] = entries
        while len(_cache) > MAX_MANIFESTS:
            _cache.popitem(last=False)
    return list(entries)


_original_eval = _ManifestEvalVisitor.eval
_eval_lock = threading.Lock()


def _eval(self: _ManifestEvalVisitor, manifest: ManifestFile) -> bool:
    with _eval_lock:
        return _original_eval(self, manifest)


_original_table_metadata = Transaction.table_metadata


def _table_metadata(self: Transaction) -> TableMetadata:
    if not self._updates:
        # What update_table_metadata would check before copying; then no copy.
        metadata = self._table.metadata
        metadata.spec().check_compatible(metadata.schema())
        metadata.sort_order().check_compatible(metadata.schema())
        return metadata
    return _original_table_metadata.fget(self)  # type: ignore[attr-defined]


def install() -> None:
    """Lock manifest evaluation; serve manifests from the cache; no copy of unchanged metadata (idempotent)."""
    _ManifestEvalVisitor.eval = _eval  # type: ignore[method-assign]
    ManifestFile.fetch_manifest_entry = _fetch  # type: ignore[method-assign]
    Transaction.table_metadata = property(_table_metadata)  # type: ignore[method-assign,assignment]


def clear() -> None:
    with _lock:
        _cache.clear()
