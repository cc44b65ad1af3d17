"""Idempotency keys: a write given a key applies once within the key's window; a repeat returns its outcome.

The key is claimed by the unit of work that applies the write, as its first statement, and the write's
outcome (JSON text) recorded by the same unit before it commits: the key, the outcome and the write commit
together or not at all. A second call with the key finds it committed and returns the recorded outcome without
applying anything; a concurrent second call waits for the first (PostgreSQL: on the key's unique index entry;
SQLite: on the write lock) and then does the same. After ``idempotency_window`` seconds the key may be used
again, as a new write.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from planflow.errors import ConflictError
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect

T = TypeVar("T")


def _shown(request: str) -> str:
    return request if len(request) <= 120 else request[:117] + "..."


#: A unit that claims a key first deletes expired keys every this many claims (of this process).
CLEANUP_EVERY = 64
#: Expired keys deleted by one cleanup at most.
CLEANUP_BATCH = 500


class IdempotencyKeys:
    """The ``planflow_idempotency`` table of one database."""

    def __init__(self, database: Database, dialect: Dialect, window: float) -> None:
        self._db = database
        self._dialect = dialect
        self._window = window
        self._claims = 0
        moment, expiry = dialect.at(), dialect.at(plus_seconds=True)
        self._claim = (
            "INSERT INTO planflow_idempotency (key, request, outcome, created_at, expires_at) "
            f"VALUES (?, ?, NULL, {moment}, {expiry}) ON CONFLICT (key) DO UPDATE SET outcome = NULL, "
            "request = excluded.request, created_at = excluded.created_at, expires_at = excluded.expires_at "
            "WHERE planflow_idempotency.expires_at <= excluded.created_at RETURNING 1"
        )
        self._cleanup = (
            "DELETE FROM planflow_idempotency WHERE key IN (SELECT key FROM planflow_idempotency "
            f"WHERE expires_at < {moment} ORDER BY expires_at LIMIT {CLEANUP_BATCH}{dialect.skip_locked})"
        )

    async def claim(self, conn: Connection, key: str, request: str) -> str | None:
        """Take ``key`` for the unit of ``conn``: ``None`` when the write is to be applied (the key was free or
        had expired), else the outcome recorded by the write that applied it.

        Args:
            conn: The unit of work's connection.
            key: The caller's idempotency key.
            request: What the write is (its operation and arguments): a key given to another request within its
                window is refused, since returning that request's outcome would answer a question not asked.

        Raises:
            ConflictError: the key was used for another request.
        """
        self._claims += 1
        if self._claims % CLEANUP_EVERY == 1:
            await conn.execute(self._cleanup)
        params = [key, request, *self._dialect.at_params(self._window)]
        if await conn.fetch_one(self._claim, params) is not None:
            return None
        row = await conn.fetch_one("SELECT request, outcome FROM planflow_idempotency WHERE key = ?", [key])
        assert row is not None and row[1] is not None, "a committed key carries its outcome"
        if row[0] != request:
            raise ConflictError(
                f"idempotency key {key!r} was already used for another request ({_shown(row[0])}), not for "
                f"{_shown(request)}"
            )
        outcome: str = row[1]
        return outcome

    async def record(self, conn: Connection, key: str, outcome: str) -> None:
        """Record the outcome of the write that claimed ``key``, in its unit of work."""
        await conn.execute("UPDATE planflow_idempotency SET outcome = ? WHERE key = ?", [outcome, key])

    async def run(
        self,
        key: str | None,
        request: str,
        work: Callable[[Connection], Awaitable[T]],
        encode: Callable[[T], str],
        decode: Callable[[str], T],
    ) -> T:
        """Run ``work`` as a unit of work applied once per ``key`` (see the module docstring); without a key,
        simply as a unit of work."""
        if key is None:
            return await self._db.run(work)

        async def keyed(conn: Connection) -> T:
            recorded = await self.claim(conn, key, request)
            if recorded is not None:
                return decode(recorded)
            result = await work(conn)
            await self.record(conn, key, encode(result))
            return result

        return await self._db.run(keyed)


class TransactionKeys:
    """Keys claimed and recorded in the caller's current transaction (``provider.run_in_transaction``)."""

    def __init__(self, keys: IdempotencyKeys, database: Database) -> None:
        self._keys = keys
        self._db = database

    def _connection(self) -> Connection:
        tx = self._db.current()
        assert tx is not None, "keys of a unit of work are claimed inside its transaction"
        return tx.connection

    async def claim(self, key: str, request: str) -> str | None:
        """See :meth:`IdempotencyKeys.claim`."""
        return await self._keys.claim(self._connection(), key, request)

    async def record(self, key: str, outcome: str) -> None:
        """See :meth:`IdempotencyKeys.record`."""
        await self._keys.record(self._connection(), key, outcome)
