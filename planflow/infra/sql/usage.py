"""Merging token usage into a stored row: the read-modify-write shared by tasks and workflows."""

from __future__ import annotations

from planflow.errors import NotFoundError
from planflow.infra.sql.codec import dump_usage, load_usage, now
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
from planflow.models import UsageSummary


class UsageMerger:
    """Adds usage into the ``usage`` column of one table's row, atomically.

    The row is read under a write lock (SQLite: the transaction's ``BEGIN IMMEDIATE``; Postgres:
    ``FOR UPDATE``), so concurrent merges serialise and none is lost. The caller has checked the key and the
    summary (the argument layer); the merged summary is checked again before it is written.
    """

    def __init__(self, database: Database, dialect: Dialect, table: str, key: str, kind: str) -> None:
        self._db = database
        self._dialect = dialect
        self._kind = kind
        self._select = f"SELECT usage FROM {table} WHERE {key} = ?{dialect.for_update}"
        self._update = f"UPDATE {table} SET usage = ?, version = version + 1, updated_at = ? WHERE {key} = ?"

    async def merge(self, key: str, usage: UsageSummary) -> UsageSummary:
        """Add ``usage`` into the row ``key``; returns the merged summary; ``NotFoundError`` if absent."""
        dump_usage(usage)

        async def work(conn: Connection) -> UsageSummary:
            row = await conn.fetch_one(self._select, [key])
            if row is None:
                raise NotFoundError(f"{self._kind} state {key!r} not found")
            merged = (load_usage(row[0]) or UsageSummary()).merge(usage)
            text = dump_usage(merged)
            assert text is not None
            await conn.execute(
                self._update, [self._dialect.json_param(text), self._dialect.ts_param(now()), key]
            )
            return merged

        return await self._db.run(work)
