"""A thread-safe manifest evaluator.

Upstream (pyiceberg 0.12): ``pyiceberg.expressions.visitors._ManifestEvalVisitor.eval``
stores the manifest's partition summaries on the visitor
(``self.partition_fields``) and then visits the filter, whose ``visit_*``
methods read them back. ``manifest_evaluator()`` hands out that one visitor's
bound ``eval``, and ``pyiceberg.table.update.snapshot._OverwriteFiles._deleted_entries``
calls it from the executor's threads, one manifest per thread. A manifest can
then be judged by another manifest's summaries and skipped, and the overwrite
fails with "Missing required files to delete".

Why we need it: our partition overwrites and ``maintenance.compact`` commit
through ``_OverwriteFiles``; the failure showed up here as an intermittent
commit error. Each call now holds a lock (evaluating summaries is cheap next to
reading manifests, which stays parallel).

When upstream fixes it (per-call state, or one visitor per thread):
``test_upstream_manifest_evaluator_shares_state_between_calls`` fails; delete
this module, its entry in ``CHANGES`` and its tests.
"""

from __future__ import annotations

import threading

from pyiceberg.expressions.visitors import _ManifestEvalVisitor
from pyiceberg.manifest import ManifestFile

ORIGINAL = _ManifestEvalVisitor.eval
_lock = threading.Lock()


def eval_locked(self: _ManifestEvalVisitor, manifest: ManifestFile) -> bool:
    with _lock:
        return ORIGINAL(self, manifest)


def install() -> None:
    _ManifestEvalVisitor.eval = eval_locked  # type: ignore[method-assign]


def is_installed() -> bool:
    return _ManifestEvalVisitor.eval is eval_locked
