"""A pooled psycopg connection as the repositories see it: the statement path, run once per statement.

The shared SQL's ``?`` placeholders become ``%s`` (cached per statement text); a statement without parameters
is sent as it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from functools import lru_cache
from time import perf_counter
from typing import TYPE_CHECKING, Any

import psycopg

from planflow.infra.postgres.errors import translate
from planflow.infra.postgres.io import Raw
from planflow.infra.sql.database import Connection, Params, Row, statement_rows

if TYPE_CHECKING:
    from planflow.infra.postgres.connect import PooledDatabase


@lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> bytes:
    """The shared SQL (``?`` placeholders) in psycopg's format: ``%s`` placeholders, literal ``%`` doubled."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


@lru_cache(maxsize=256)
def _plain(sql: str) -> bytes:
    # Without parameters psycopg sends the text as it is: no placeholder, no escaping.
    return sql.encode()


class PostgresConnection(Connection):
    """A pooled psycopg connection as the repositories see it."""

    __slots__ = ("_db", "raw")

    def __init__(self, raw: Raw, db: PooledDatabase) -> None:
        self.raw = raw
        self._db = db

    @property
    def database(self) -> PooledDatabase:
        """The database (the primary's, or the standby pool's) whose pool lent this connection."""
        return self._db

    async def _run(self, call: Callable[[bytes, Params | None], Any], sql: str, params: Params) -> Any:
        db = self._db
        if not db.log.timing():
            try:
                return await call(to_pyformat(sql) if params else _plain(sql), params or None)
            except psycopg.Error as exc:
                raise db.lost(translate(exc, lost=self.raw.closed)) from exc
        started = perf_counter()
        try:
            result = await call(to_pyformat(sql) if params else _plain(sql), params or None)
        except psycopg.Error as exc:
            error = db.lost(translate(exc, lost=self.raw.closed))
            db.log.done(sql, started, None, error)
            raise error from exc
        db.log.done(sql, started, statement_rows(result))
        return result

    async def execute(self, sql: str, params: Params = ()) -> int:
        count: int = await self._run(self.raw.count, sql, params)
        return count

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        row: Row | None = await self._run(self.raw.one, sql, params)
        return row

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        rows: list[Row] = await self._run(self.raw.all, sql, params)
        return rows

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        await self._run(self.raw.many, sql, rows)  # pyright: ignore[reportArgumentType]

    async def iterate(self, sql: str, params: Params = (), *, batch: int = 1000) -> AsyncIterator[list[Row]]:
        db = self._db
        query = to_pyformat(sql) if params else _plain(sql)
        rows = self.raw.stream(query, params or None, batch)
        # Timed from the first fetch to the last (the consumer's time between batches included).
        started = perf_counter() if db.log.timing() else None
        count = 0
        while True:
            try:
                chunk = await anext(rows)
            except StopAsyncIteration:
                if started is not None:
                    db.log.done(sql, started, count)
                return
            except psycopg.Error as exc:
                error = db.lost(translate(exc, lost=self.raw.closed))
                if started is not None:
                    db.log.done(sql, started, None, error)
                raise error from exc
            count += len(chunk)
            yield list(chunk)

    async def execute_script(self, script: str) -> None:
        # No parameters: the simple query protocol, which runs several statements in one round trip.
        await self._run(lambda query, _: self.raw.script(query), script, ())

    async def script_row(self, script: str) -> Row | None:
        """Run ``script`` like :meth:`execute_script`; the row of its last statement."""
        row: Row | None = await self._run(lambda query, _: self.raw.script(query), script, ())
        return row


__all__ = ["PostgresConnection", "to_pyformat"]
