"""A prepared warehouse that every benchmark round starts from, really on a copy.

Iceberg metadata (and the catalog's rows) hold absolute paths: a warehouse
copied to another directory still reads and writes the original's files. So
the prepared state is kept aside as bytes (never opened as a catalog), and each
round restores it at the warehouse's own path, where its paths are right: a
round's writes land in that restored copy, the kept state never changes.
"""

from __future__ import annotations

import shutil
from pathlib import Path


class Prepared:
    """The state of ``warehouse`` when made, restorable at ``warehouse`` for every round."""

    def __init__(self, warehouse: Path, keep: Path) -> None:
        self.warehouse = warehouse
        self.keep = keep
        shutil.copytree(warehouse, keep)

    def restore(self) -> Path:
        """The warehouse as it was prepared (what an earlier round wrote is gone); returns its path."""
        shutil.rmtree(self.warehouse)
        shutil.copytree(self.keep, self.warehouse)
        return self.warehouse
