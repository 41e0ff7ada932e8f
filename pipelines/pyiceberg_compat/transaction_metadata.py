"""No deep copy of unchanged metadata, and one copy per staged state.

Upstream (pyiceberg 0.12): the property ``pyiceberg.table.Transaction.table_metadata``
returns ``update_table_metadata(self._table.metadata, self._updates)``, which
ends in ``model_copy(deep=True)`` even when no update is staged.

Why we need it: a snapshot commit reads that property a dozen times, mostly
with nothing staged yet, and deep-copying metadata that holds every retained
snapshot was about 5 % of a whole run. With no staged update the table's own
metadata is returned (after the checks ``update_table_metadata`` would make):
it is a frozen model that pyiceberg replaces on commit, never edits. With
updates staged the original runs once per staged state: a snapshot commit
reads the property about four times with the same updates staged, and each
read deep-copied the metadata again (12 % of an hourly-batch run's profile,
growing with the snapshots a table retains). The result is kept on the
transaction beside the table metadata and the updates tuple it was made from
(compared by identity: staging builds a new tuple, a commit a new metadata),
and returned while both are the same objects. It keeps the ``last_updated_ms``
of its first read; the catalog's commit applies the updates itself and stamps
the committed metadata with its own time.

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


# Where a transaction keeps (table metadata, staged updates, the metadata made from them).
MEMO = "_ipsbench_staged_metadata"


def table_metadata(self: Transaction) -> TableMetadata:
    base, updates = self._table.metadata, self._updates
    if not updates:
        base.spec().check_compatible(base.schema())
        base.sort_order().check_compatible(base.schema())
        return base
    memo = self.__dict__.get(MEMO)
    if memo is not None and memo[0] is base and memo[1] is updates:
        return memo[2]
    staged = ORIGINAL(self)
    self.__dict__[MEMO] = (base, updates, staged)
    return staged


PATCHED = property(table_metadata)


def install() -> None:
    Transaction.table_metadata = PATCHED  # type: ignore[method-assign,assignment]


def is_installed() -> bool:
    return Transaction.__dict__["table_metadata"] is PATCHED
