"""The store's metadata on the SQL drivers: table ``planflow_metadata`` (key, value, updated_at)."""

from __future__ import annotations

from planflow.infra.sql.codec import now
from planflow.infra.sql.database import Database
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.statements import write_idempotent

GET = "SELECT value FROM planflow_metadata WHERE key = ?"
SET = (
    "INSERT INTO planflow_metadata (key, value, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at"
)
DELETE = "DELETE FROM planflow_metadata WHERE key = ?"
ITEMS = "SELECT key, value FROM planflow_metadata"


class SqlMetadataRepository:
    """MetadataRepository over a :class:`Database` (see ``planflow.protocols.MetadataRepository``)."""

    def __init__(self, database: Database, dialect: Dialect) -> None:
        self._db = database
        self._dialect = dialect

    async def _write(self, sql: str, params: list[object]) -> None:
        await write_idempotent(self._db, sql, params)

    async def get(self, key: str) -> str | None:
        """The value stored under ``key``, or ``None``."""
        row = await self._db.fetch_one(GET, [key])
        return None if row is None else str(row[0])

    async def set(self, key: str, value: str) -> None:
        """Store ``value`` under ``key``, replacing any value there."""
        await self._write(SET, [key, value, self._dialect.ts_param(now())])

    async def delete(self, key: str) -> None:
        """Remove ``key``; a key that is not stored is no error."""
        await self._write(DELETE, [key])

    async def items(self) -> dict[str, str]:
        """Every key and value, by key in code point order."""
        return dict(sorted((str(key), str(value)) for key, value in await self._db.fetch_all(ITEMS)))


__all__ = ["SqlMetadataRepository"]
