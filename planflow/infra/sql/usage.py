"""Merging token usage into a stored row: the read-modify-write shared by tasks and workflows."""

from __future__ import annotations

from planflow.errors import NotFoundError
from planflow.infra.sql.codec import dump_usage, load_usage, now
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.idempotency import IdempotencyKeys
from planflow.models import UsageSummary


class UsageMerger:
    """Adds usage into the ``usage`` column of one table's row, atomically.

    The row is read under a write lock (SQLite: the transaction's ``BEGIN IMMEDIATE``; Postgres:
    ``FOR UPDATE``), so concurrent merges serialise and none is lost. The caller has checked the key and the
    summary (the argument layer); the merged summary is checked before it is written (its sums may pass the
    largest count).
    """

    def __init__(
        self, database: Database, dialect: Dialect, table: str, key: str, kind: str, *, keys: IdempotencyKeys
    ) -> None:
        self._db = database
        self._dialect = dialect
        self._keys = keys
        self._kind = kind
        self._select = f"SELECT usage FROM {table} WHERE {key} = ?{dialect.for_update}"
        self._update = f"UPDATE {table} SET usage = ?, version = version + 1, updated_at = ? WHERE {key} = ?"

    async def merge(self, key: str, usage: UsageSummary, idempotency_key: str | None = None) -> UsageSummary:
        """Add ``usage`` into the row ``key``; returns the merged summary; ``NotFoundError`` if absent.

        With ``idempotency_key``, a merge already applied with that key within the window is not applied again:
        its merged summary is returned as it was then.
        """

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

        request = f"{self._kind}s.merge_usage({key!r}, {dump_usage(usage)})" if idempotency_key else ""
        return await self._keys.run(idempotency_key, request, work, _dumped, _loaded)


def _dumped(summary: UsageSummary) -> str:
    text = dump_usage(summary)
    assert text is not None
    return text


def _loaded(text: str) -> UsageSummary:
    summary = load_usage(text)
    assert summary is not None
    return summary
