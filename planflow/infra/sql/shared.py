"""Patterns the SQL repositories share: batches, versioned writes, deletes, keyset pages."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from planflow.errors import ConflictError, NotFoundError
from planflow.infra.sql.codec import decode_cursor, encode_cursor
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.tables import Table
from planflow.models import Page

T = TypeVar("T")
M = TypeVar("M")

#: Rows per statement and per transaction of a bulk write or import: large enough that the round trip and the
#: commit are paid rarely, small enough that one batch holds SQLite's write lock for tens of milliseconds.
BATCH_SIZE = 1000


async def every_item(fetch: Callable[[str | None], Awaitable[Page[M]]]) -> AsyncIterator[M]:
    """The items of every page ``fetch(cursor)`` returns, from the first page to the last.

    Keyset pages, each a short read of its own: memory stays at one page, no transaction is held while the
    caller works, and every item that existed at the start is yielded exactly once.
    """
    cursor: str | None = None
    while True:
        page = await fetch(cursor)
        for item in page.items:
            yield item
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


async def write_idempotent(database: Database, sql: str, params: Sequence[object]) -> None:
    """Run an upsert or a delete by key: running it again changes nothing more, so a lost reply needs no reread."""
    await database.write(sql, params, result="count", reread=_done)


async def _done(_: Connection) -> int:
    return 1


def batches(items: Iterable[T], size: int = BATCH_SIZE) -> Iterator[list[T]]:
    """``items`` in lists of ``size`` (the last one shorter)."""
    iterator = iter(items)
    while batch := list(islice(iterator, size)):
        yield batch


async def write_batches(
    database: Database, items: Iterable[T], to_row: Callable[[T], Sequence[object]], sql: str
) -> int:
    """Write ``items`` with ``sql``, one ``execute_many`` and one transaction per batch; returns how many.

    Each batch's rows are built (and checked) before its transaction begins, so a bad item stores nothing of
    its batch.
    """
    written = 0
    for batch in batches(items):
        rows = [to_row(item) for item in batch]

        async def work(conn: Connection, rows: list[Sequence[object]] = rows) -> None:
            await conn.execute_many(sql, rows)

        await database.run(work)
        written += len(rows)
    return written


async def missing_or_conflict(
    conn: Connection, table: Table[Any], key: str, expected: int | None, what: str
) -> Exception:
    """Why a versioned write matched no row: the row is missing, or at another version (both named)."""
    found = await conn.fetch_one(f"SELECT version FROM {table.name} WHERE {table.key} = ?", [key])
    if found is None:
        return NotFoundError(f"{what} {key!r} not found")
    return ConflictError(
        f"{what} {key!r} is at version {found[0]}, expected {expected}", expected=expected, actual=found[0]
    )


async def delete_one(database: Database, table: Table[Any] | tuple[str, str], key: str, what: str) -> None:
    """Delete the row ``key`` of ``table`` (a table, or its name and key column); ``NotFoundError`` if none."""
    name, column = (table.name, table.key) if isinstance(table, Table) else table

    async def gone(conn: Connection) -> int:
        # The reply was lost after the DELETE committed: it deleted the row if the row is gone now.
        return int(await conn.fetch_one(f"SELECT 1 FROM {name} WHERE {column} = ?", [key]) is None)

    if (
        await database.write(f"DELETE FROM {name} WHERE {column} = ?", [key], result="count", reread=gone)
        == 0
    ):
        raise NotFoundError(f"{what} {key!r} not found")


def where_clause(
    table: Table[Any], filter: object | None, cursor: str | None, ts_param: Callable[[datetime], object]
) -> tuple[str, list[object]]:
    """The WHERE clause (``''`` or starting with a space) and parameters of a listing.

    Every non-``None`` field of ``filter`` is an equality on the table's column of that name, its value checked
    by the column's kind (the argument layer has made sure ``filter`` is the repository's own filter type),
    ANDed with the keyset ``(created_at, key) > cursor``.
    """
    conditions: list[str] = []
    params: list[object] = []
    if filter is not None:
        for field in dataclasses.fields(filter):  # pyright: ignore[reportArgumentType]
            value = getattr(filter, field.name)
            if value is not None:
                table.column(field.name)
                conditions.append(f"{field.name} = ?")
                params.append(table.check_value(field.name, value))
    if cursor is not None:
        created, last_key = decode_cursor(cursor)
        conditions.append(f"(created_at, {table.key}) > (?, ?)")
        params += [ts_param(created), last_key]
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), params


def page(
    items: list[M], limit: int, created_at: Callable[[M], datetime | None], key: Callable[[M], str]
) -> Page[M]:
    """A page of ``items`` fetched with ``LIMIT limit + 1``: the extra row only says that more follow."""
    if len(items) <= limit:
        return Page(items)
    del items[limit:]
    last = items[-1]
    stamp = created_at(last)
    assert stamp is not None
    return Page(items, encode_cursor(stamp, key(last)))
