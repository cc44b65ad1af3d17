"""What ``Provider.migrate()`` and ``migration_status()`` report, the same for every driver."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True, slots=True)
class Migration:
    """One migration file: its number, its name and its SQL."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: an applied file must never change."""
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class MigrationStatus:
    """A known migration and when it was applied (``None``: pending), with the SHA-256 of its file (an applied
    migration's file must still have the checksum recorded when it was applied)."""

    version: int
    name: str
    applied_at: datetime | None
    checksum: str = ""
