"""A process-wide cache of manifest contents.

Upstream (pyiceberg 0.12): ``pyiceberg.manifest.ManifestFile.fetch_manifest_entry``
opens and parses (in Python, Avro record by record) the manifest file on every
call. An overwrite commit (``pyiceberg.table.update.snapshot._OverwriteFiles``,
``_existing_manifests`` and ``_deleted_entries``) reads every manifest of the
parent snapshot twice, and every scan plan reads them again.

Why we need it: an Iceberg manifest is immutable (a commit writes new manifests
and never edits one), yet with a table's manifests counted in dozens that
re-parsing was the largest single cost of the lookback's writes. Each manifest
is now parsed once per process. The key holds the manifest path and what the
entries inherit from the manifest list that names it (added snapshot id,
sequence numbers, spec id); a read whose entry count differs from the counts
the manifest list recorded is served but never kept. Entries are shared
between callers: pyiceberg mutates them only while reading (that inheritance),
which happens before they are cached.

When upstream caches parsed manifests itself:
``test_upstream_fetch_manifest_entry_reads_the_file_on_every_call`` fails;
delete this module, its entry in ``CHANGES`` and its tests.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

from pyiceberg.io import FileIO
from pyiceberg.manifest import ManifestEntry, ManifestFile

MAX_MANIFESTS = 4096

ORIGINAL = ManifestFile.fetch_manifest_entry
_lock = threading.Lock()
_cache: OrderedDict[tuple[Any, ...], tuple[ManifestEntry, ...]] = OrderedDict()
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


def fetch_cached(self: ManifestFile, io: FileIO, discard_deleted: bool = True) -> list[ManifestEntry]:
    key = _key(self, discard_deleted)
    with _lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
            stats["hits"] += 1
            return list(hit)
    entries = tuple(ORIGINAL(self, io, discard_deleted))
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


def clear() -> None:
    with _lock:
        _cache.clear()


def install() -> None:
    ManifestFile.fetch_manifest_entry = fetch_cached  # type: ignore[method-assign]


def is_installed() -> bool:
    return ManifestFile.fetch_manifest_entry is fetch_cached
