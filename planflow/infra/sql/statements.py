"""Statement patterns the SQL repositories share: batches, versioned writes, deletes, keyset pages."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar, cast

from planflow.errors import ConflictError, NotFoundError
from planflow.infra import inputs
from planflow.infra.sql.codec import decode_cursor, encode_cursor
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
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
    """Run an upsert or a delete by key: running it again changes nothing more, so a lost reply is followed by
    running it again."""
    await database.write(sql, params, result="count", idempotent=True)


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


#: Time bounds of a filter: field -> (column, comparison). Exclusive, as ``created_after`` reads.
TIME_BOUNDS = {
    "created_after": ("created_at", ">"),
    "created_before": ("created_at", "<"),
    "updated_after": ("updated_at", ">"),
    "updated_before": ("updated_at", "<"),
}


#: Fields of a filter that match any of several values: field -> the column they compare.
ANY_OF = {
    "execution_types": "execution_type",
    "workflow_ids": "workflow_id",
    "workflow_exec_ids": "workflow_exec_id",
    "task_ids": "task_id",
}


def _any_of(table: Table[Any], field: str, value: object) -> tuple[str, list[object]]:
    """``column IN (?, ...)`` for the values of a collection field (each checked by the column's kind)."""
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        raise inputs.wrong_type(field, "a collection of values", value)
    column = ANY_OF[field]
    items = cast("Iterable[object]", value)
    checked = sorted({table.check_value(column, item) for item in items}, key=str)
    if not checked:
        return "1 = 0", []
    return f"{column} IN ({', '.join('?' for _ in checked)})", list(checked)


@dataclass(frozen=True, slots=True)
class Conditions:
    """A filter's conditions, checked: ``where`` (SQL, ANDed) with ``params``, and the statuses it allows.

    ``statuses`` is ``None`` when the filter does not restrict the status, else the status values the rows
    may have (empty when ``status`` and ``statuses`` exclude each other): a listing reads each of them along
    its own index (see :func:`listing`).
    """

    where: list[str]
    params: list[object]
    statuses: list[str] | None


def conditions(
    table: Table[Any], filter: object | None, ts_param: Callable[[datetime], object]
) -> Conditions:
    """The checked conditions of ``filter`` on ``table``.

    Every non-``None`` field of ``filter`` is an equality on the table's column of that name, its value checked
    by the column's kind (the argument layer has made sure ``filter`` is the repository's own filter type),
    except ``statuses`` (any of) and the exclusive time bounds of ``TIME_BOUNDS`` (aware datetimes only).
    """
    where: list[str] = []
    params: list[object] = []
    statuses: list[str] | None = None
    if filter is None:
        return Conditions(where, params, statuses)
    for field in dataclasses.fields(filter):  # pyright: ignore[reportArgumentType]
        value = getattr(filter, field.name)
        if value is None:
            continue
        bound = TIME_BOUNDS.get(field.name)
        if bound is not None:
            column, comparison = bound
            where.append(f"{column} {comparison} ?")
            params.append(ts_param(inputs.check_aware(value, field.name)))
        elif field.name in ANY_OF:
            condition, values = _any_of(table, field.name, value)
            where.append(condition)
            params += values
        elif field.name in ("status", "statuses"):
            allowed = (
                sorted(status.value for status in inputs.check_statuses(value, field.name))
                if field.name == "statuses"
                else [str(table.check_value("status", value))]
            )
            statuses = allowed if statuses is None else [s for s in statuses if s in allowed]
        else:
            table.column(field.name)
            where.append(f"{field.name} = ?")
            params.append(table.check_value(field.name, value))
    return Conditions(where, params, statuses)


def _status_where(statuses: list[str] | None) -> tuple[list[str], list[object]]:
    if statuses is None:
        return [], []
    if not statuses:
        return ["1 = 0"], []
    if len(statuses) == 1:
        return ["status = ?"], list(statuses)
    return [f"status IN ({', '.join('?' for _ in statuses)})"], list(statuses)


def where_clause(
    table: Table[Any], filter: object | None, ts_param: Callable[[datetime], object]
) -> tuple[str, list[object]]:
    """The WHERE clause (``''`` or starting with a space) and parameters of ``filter`` (see :func:`conditions`);
    a listing's page, with its keyset, comes from :func:`listing`."""
    found = conditions(table, filter, ts_param)
    status_where, status_params = _status_where(found.statuses)
    where, params = [*found.where, *status_where], [*found.params, *status_params]
    return (f" WHERE {' AND '.join(where)}" if where else ""), params


def order_by(table: Table[Any], order: str) -> str:
    """``ORDER BY created_at, key`` in ``order`` (the keyset every listing pages by)."""
    direction = "" if order == "asc" else " DESC"
    return f"ORDER BY created_at{direction}, {table.key}{direction}"


def listing(
    table: Table[Any],
    filter: object | None,
    *,
    cursor: str | None,
    order: str,
    limit: int,
    dialect: Dialect,
) -> tuple[str, list[object]]:
    """The query (and parameters) of one page of ``table``'s rows matching ``filter``: ``limit`` rows in
    ``order`` of ``(created_at, key)`` after ``cursor``.

    A filter allowing several statuses reads each status along its own ``(status, created_at, key)`` index
    range, the ranges merged in order by a ``UNION ALL`` with one arm per status, so that a page reads about
    ``limit`` rows per status: an ``IN`` list over the index would yield the rows in status order, every match
    sorted whatever the page size. Where the engine asks for it (``Dialect.limit_union_arms``) each arm is
    ordered and limited as well.
    """
    ts_param, limit_arms = dialect.ts_param, dialect.limit_union_arms
    found = conditions(table, filter, ts_param)
    keyset: list[str] = []
    keyset_params: list[object] = []
    if cursor is not None:
        created, last_key = decode_cursor(cursor, order)
        keyset.append(f"(created_at, {table.key}) {'>' if order == 'asc' else '<'} (?, ?)")
        keyset_params += [ts_param(created), last_key]
    ordering = order_by(table, order)
    if found.statuses is None or len(found.statuses) < 2:
        status_where, status_params = _status_where(found.statuses)
        where = [*found.where, *status_where, *keyset]
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return (
            f"{table.select}{clause} {ordering} LIMIT ?",
            [*found.params, *status_params, *keyset_params, limit],
        )
    branches: list[str] = []
    params: list[object] = []
    for status in found.statuses:
        branch = f"{table.select} WHERE {' AND '.join([*found.where, 'status = ?', *keyset])}"
        params += [*found.params, status, *keyset_params]
        if limit_arms:
            branch = f"({branch} {ordering} LIMIT ?)"
            params.append(limit)
        branches.append(branch)
    union = " UNION ALL ".join(branches)
    if not limit_arms:
        union = f"SELECT * FROM ({union}) planflow_statuses"
    return f"{union} {ordering} LIMIT ?", [*params, limit]


def page(
    items: list[M],
    limit: int,
    created_at: Callable[[M], datetime | None],
    key: Callable[[M], str],
    order: str = "asc",
) -> Page[M]:
    """A page of ``items`` fetched with ``LIMIT limit + 1``: the extra row only says that more follow."""
    if len(items) <= limit:
        return Page(items)
    del items[limit:]
    last = items[-1]
    stamp = created_at(last)
    assert stamp is not None
    return Page(items, encode_cursor(stamp, key(last), order))
