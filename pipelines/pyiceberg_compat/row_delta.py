"""Row-level commits (Iceberg's RowDelta): delete manifests written, delete files removed.

Upstream (pyiceberg 0.12) writes no row-level deletes:

- ``pyiceberg.manifest.ManifestWriterV2.content()`` is always
  ``ManifestContent.DATA`` (its ``_meta`` says ``"content": "data"``), and
  ``write_manifest`` has no way to ask for a delete manifest;
- every snapshot producer (``_SnapshotProducer._manifests``) writes the files
  given to ``append_data_file`` into such a DATA manifest, whatever their content;
- ``_OverwriteFiles`` cannot remove a delete file: ``_deleted_entries`` keeps
  only ``DataFileContent.DATA`` entries (so ``_validate_required_deletes``
  raises "Missing required files to delete"), and ``_existing_manifests``
  rewrites a DELETE manifest through a DATA writer.

This module replaces nothing. It adds ``DeleteManifestWriter`` (the public
``ManifestWriterV2`` with content DELETES) and ``RowDelta``, a snapshot
producer built on the private ``_SnapshotProducer`` that in one snapshot adds
data files (a DATA manifest), adds position-delete files (a DELETES manifest)
and removes data and delete files (each manifest holding one is rewritten
with the same content: the file as DELETED, the others as EXISTING). Sequence
numbers follow the spec: ADDED entries carry none and inherit the manifest's,
which the manifest list assigns at commit (the new snapshot's); EXISTING and
DELETED entries keep theirs. A position delete applies to a data file with the
same ``file_path`` whose data sequence number is at most the delete's, so
deletes and the data files of the same commit never interfere (the new data
files have new paths).

Concurrency: a row delta names row positions of specific files, so it never
retries onto a newer parent: if anything was committed since it started,
``_validate_concurrency`` raises ``CommitFailedException`` and the caller
re-plans.

When upstream writes delete manifests (``ManifestWriterV2.content()`` can be
DELETES, or a row-delta producer exists): ``test_upstream_writes_no_delete_manifests``
fails; move to upstream's producer and delete this module and its tests.
"""

from __future__ import annotations

import uuid
from collections import defaultdict

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    ManifestWriter,
    ManifestWriterV2,
)
from pyiceberg.table import Transaction
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _SnapshotProducer
from pyiceberg.typedef import EMPTY_DICT


class DeleteManifestWriter(ManifestWriterV2):
    """A format-v2 manifest of delete files (content DELETES)."""

    def content(self) -> ManifestContent:
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


class RowDelta(_SnapshotProducer["RowDelta"]):
    """One snapshot adding data and position-delete files and removing data and delete files."""

    def __init__(
        self,
        transaction: Transaction,
        commit_uuid: uuid.UUID | None = None,
        snapshot_properties: dict[str, str] = EMPTY_DICT,
        operation: Operation = Operation.OVERWRITE,
    ) -> None:
        super().__init__(operation, transaction, transaction._table.io, commit_uuid, snapshot_properties)
        self._added_deletes: list[DataFile] = []

    def add_file(self, data_file: DataFile) -> RowDelta:
        """Add a data file or a position-delete file."""
        if data_file.content == DataFileContent.DATA:
            self._added_data_files.append(data_file)
        elif data_file.content == DataFileContent.POSITION_DELETES:
            self._added_deletes.append(data_file)
        else:
            raise ValueError(f"a row delta adds data and position-delete files, not {data_file.content}")
        return self

    def remove_file(self, data_file: DataFile) -> RowDelta:
        """Remove a live data or delete file."""
        self._deleted_data_files.add(data_file)
        return self

    def _writer(self, content: ManifestContent, spec_id: int) -> ManifestWriter:
        if content == ManifestContent.DATA:
            return self.new_manifest_writer(self.spec(spec_id))
        metadata = self._transaction.table_metadata
        if metadata.format_version != 2:
            raise ValueError(f"position deletes need a format-version 2 table, not {metadata.format_version}")
        return DeleteManifestWriter(
            self.spec(spec_id), self.schema(), self.new_manifest_output(), self._snapshot_id, self._compression
        )

    def _added(self, content: ManifestContent, files: list[DataFile]) -> list[ManifestFile]:
        by_spec: dict[int, list[DataFile]] = defaultdict(list)
        default = self._transaction.table_metadata.default_spec_id
        for f in files:
            # DataFile.from_args drops spec_id (it is not stored in the file); files read from a manifest have it.
            by_spec[getattr(f, "_spec_id", default)].append(f)
        out = []
        for spec_id, group in by_spec.items():
            with self._writer(content, spec_id) as writer:
                for f in group:
                    writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED, data_file=f))
            out.append(writer.to_manifest_file())
        return out

    def _existing_manifests(self) -> list[ManifestFile]:
        """The parent's manifests, those holding a removed file rewritten (it DELETED, the rest EXISTING)."""
        if self._parent_snapshot_id is None:
            if self._deleted_data_files:
                raise ValueError("nothing to remove from a table without a snapshot")
            return []
        parent = self._transaction.table_metadata.snapshot_by_id(self._parent_snapshot_id)
        if parent is None:
            raise ValueError(f"snapshot {self._parent_snapshot_id} not found")
        removed_paths = {f.file_path for f in self._deleted_data_files}
        found: set[str] = set()
        out: list[ManifestFile] = []
        for manifest in parent.manifests(self._io):
            entries = manifest.fetch_manifest_entry(self._io, discard_deleted=True) if removed_paths else []
            hit = [e for e in entries if e.data_file.file_path in removed_paths]
            if not hit:
                out.append(manifest)
                continue
            found.update(e.data_file.file_path for e in hit)
            with self._writer(manifest.content, manifest.partition_spec_id) as writer:
                for e in entries:
                    if e.data_file.file_path in removed_paths:
                        writer.delete(e)
                    else:
                        writer.existing(e)
            out.append(writer.to_manifest_file())
        if missing := sorted(removed_paths - found):
            raise ValueError(f"files to remove are not live: {', '.join(missing)}")
        return out

    def _deleted_entries(self) -> list[ManifestEntry]:
        # Written by _existing_manifests, in the rewritten manifests themselves.
        return []

    def _manifests(self) -> list[ManifestFile]:
        return (
            self._added(ManifestContent.DATA, self._added_data_files)
            + self._added(ManifestContent.DELETES, self._added_deletes)
            + self._existing_manifests()
        )

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        # The collector counts position-delete files apart from data files (added-position-deletes, ...).
        added = self._added_data_files
        self._added_data_files = [*added, *self._added_deletes]
        try:
            return super()._summary(snapshot_properties)
        finally:
            self._added_data_files = added

    def _validate_concurrency(self) -> None:
        if self._commit_window is not None and not self._commit_window.is_empty():
            raise CommitFailedException(
                "the table changed since this row delta was planned; its positions may be stale: re-plan"
            )
