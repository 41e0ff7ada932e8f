"""Every change this project makes to pyiceberg's private members, version-checked.

pyiceberg is pinned (``pyiceberg==0.12.0`` in pyproject.toml) and the changes
below replace private members of exactly that release. Nothing is changed on
import: ``install()`` applies them, and ``pipelines.catalog.open_catalog``
calls it, so every project path into pyiceberg (each one starts from a catalog
opened there) runs with them.

One module per change; each module's docstring names the upstream member it
replaces, why, and what to do once upstream fixes it. Each change has a test in
``tests/test_pyiceberg_compat.py`` that runs the saved upstream member and
fails once upstream no longer behaves that way: then the change may go.

- ``manifest_eval_lock``: ``_ManifestEvalVisitor.eval`` made thread-safe.
- ``manifest_cache``: ``ManifestFile.fetch_manifest_entry`` parses each manifest once.
- ``transaction_metadata``: ``Transaction.table_metadata`` copies nothing when nothing is staged, once per staged state.

Two modules build on private members without replacing anything (so they are not in ``CHANGES``):

- ``writer_threads``: ``stop_writers()`` waits for the shared writer executor (``ExecutorFactory._instance``).
- ``row_delta``: ``RowDelta``, a snapshot producer on ``_SnapshotProducer`` that writes delete manifests
  and removes delete files (merge-on-read), which upstream cannot.
"""

from __future__ import annotations

from importlib.metadata import version

from pipelines.pyiceberg_compat import manifest_cache, manifest_eval_lock, transaction_metadata

REQUIRED_VERSION = "0.12.0"
CHANGES = (manifest_eval_lock, manifest_cache, transaction_metadata)

_installed = False


class PyicebergVersionMismatch(RuntimeError):
    """The installed pyiceberg is not the release the compat changes were written for."""


def installed_version() -> str:
    return version("pyiceberg")


def check_version(installed: str) -> None:
    """Raise ``PyicebergVersionMismatch`` unless ``installed`` is ``REQUIRED_VERSION``."""
    if installed != REQUIRED_VERSION:
        raise PyicebergVersionMismatch(
            f"pyiceberg {installed} is installed, pipelines.pyiceberg_compat requires pyiceberg=={REQUIRED_VERSION}: "
            "check each change in pipelines/pyiceberg_compat against the new release before moving the pin"
        )


def install() -> None:
    """Apply every change after checking the pyiceberg version; later calls do nothing.

    Raises:
        PyicebergVersionMismatch: pyiceberg is not ``REQUIRED_VERSION``; nothing is changed.
    """
    global _installed
    if _installed:
        return
    check_version(installed_version())
    # Two threads racing here would assign the same functions twice: harmless, so no lock.
    for change in CHANGES:
        change.install()
    _installed = True


def installed_changes() -> list[str]:
    """The changes now in place in pyiceberg, by module name."""
    return [change.__name__.rsplit(".", 1)[1] for change in CHANGES if change.is_installed()]
