"""No deep copy of unchanged metadata.

Upstream (pyiceberg 0.12): the property ``pyiceberg.table.Transaction.table_metadata``
returns ``update_table_metadata(self._table.metadata, self._updates)``, which
ends in ``model_copy(deep=True)`` even when no update is staged.

Why we need it: a snapshot commit reads that property a dozen times, mostly
with nothing staged yet, and deep-copying metadata that holds every retained
snapshot was about 5 % of a whole run. With no staged update the table's own
metadata is returned (after the checks ``update_table_metadata`` would make):
it is a frozen model that pyiceberg replaces on commit, never edits. With
updates staged the original runs.

When upstream stops copying unchanged metadata:
``test_upstream_transaction_copies_metadata_with_nothing_staged`` fails;
delete this module, its entry in ``CHANGES`` and its tests.
"""

from __future__ import annotations

from collections.abc import Callable

from pyiceberg.table import Transaction
from pyiceberg.table.metadata import TableMetadata

# The upstream property's getter, read through the class dict: typeshed makes ``property.fget`` Optional.
ORIGINAL: Callable[[Transaction], TableMetadata] = Transaction.__dict__["table_metadata"].fget


def table_metadata(self: Transaction) -> TableMetadata:
    if not self._updates:
        metadata = self._table.metadata
        metadata.spec().check_compatible(metadata.schema())
        metadata.sort_order().check_compatible(metadata.schema())
        return metadata
    return ORIGINAL(self)


PATCHED = property(table_metadata)


def install() -> None:
    Transaction.table_metadata = PATCHED  # type: ignore[method-assign,assignment]


def is_installed() -> bool:
    return Transaction.__dict__["table_metadata"] is PATCHED
