"""The psycopg calls of the PostgreSQL driver, blocking or asyncio: the only code that differs between the two.

:class:`PostgresDatabase` is written once, as coroutines, against :class:`Raw`, :class:`Pool` and
:class:`PostgresIO`. :data:`BLOCKING` implements them over ``psycopg.Connection`` and ``ConnectionPool``, with
coroutines that never suspend (the synchronous API drives them to their end at once); :data:`ASYNCIO` over
``psycopg.AsyncConnection`` and ``AsyncConnectionPool``, awaited on the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import suppress
from typing import Any, TypeVar

import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from planflow.infra.shielding import finish_then_cancel

T = TypeVar("T")
Query = bytes
Params = Sequence[object] | None
Row = tuple[Any, ...]
BlockingConnection = psycopg.Connection[TupleRow]
AsyncConnection = psycopg.AsyncConnection[TupleRow]


class Raw(ABC):
    """One psycopg connection, blocking or asyncio, with the few calls the driver makes."""

    __slots__ = ("conn",)

    conn: BlockingConnection | AsyncConnection

    @property
    def closed(self) -> bool:
        """Whether the connection is closed or broken."""
        return self.conn.closed

    @property
    def backend_pid(self) -> int | None:
        """The server process of the connection (PgBouncer's when behind one), or None once closed."""
        try:
            return self.conn.info.backend_pid
        except psycopg.OperationalError:
            return None

    @abstractmethod
    async def one(self, query: Query, params: Params) -> Row | None:
        """Run a statement; its first row."""

    @abstractmethod
    async def all(self, query: Query, params: Params) -> list[Row]:
        """Run a statement; all its rows."""

    @abstractmethod
    async def count(self, query: Query, params: Params) -> int:
        """Run a statement; the rows it changed."""

    @abstractmethod
    def stream(self, query: Query, params: Params, batch: int) -> AsyncIterator[list[Row]]:
        """Run a statement with a server-side cursor (inside a transaction); its rows ``batch`` at a time."""

    @abstractmethod
    async def many(self, query: Query, rows: Iterable[Sequence[object]]) -> None:
        """Run a statement once per row of parameters, pipelined (one round trip for the batch)."""

    @abstractmethod
    async def script(self, script: Query) -> Row | None:
        """Run statements without parameters in one round trip (simple query protocol); the last one's row."""

    @abstractmethod
    async def notified(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for a notification on a channel this connection LISTENs to."""

    @abstractmethod
    async def check(self) -> None:
        """A round trip that fails if the connection is broken."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection."""


class Pool(ABC):
    """A psycopg_pool pool, blocking or asyncio."""

    @abstractmethod
    async def open(self, timeout: float, *, wait: bool = True) -> None:
        """Open the pool, waiting up to ``timeout`` for its minimum connections (``PoolTimeout`` after); without
        ``wait``, return at once (the connections are made in the background)."""

    @abstractmethod
    async def get(self, timeout: float) -> Raw:
        """A connection, waiting up to ``timeout`` (``PoolTimeout`` after)."""

    @abstractmethod
    async def put(self, raw: Raw) -> None:
        """Give a connection back (the pool rolls back a dirty one and replaces a broken one)."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection and stop the pool's workers."""

    @abstractmethod
    def stats(self) -> dict[str, int]:
        """psycopg_pool's ``get_stats()``: pool size, available and waiting connections, counters."""


class Signal(ABC):
    """A generation counter for waiters on one listening connection (``planflow.infra.postgres.listen``): whoever
    reads the connection (one at a time: the one that :meth:`lead` let in) bumps it; the others wait for it to
    move, or for the reader to :meth:`resign` so that one of them takes over."""

    generation: int = 0

    @abstractmethod
    def lead(self) -> bool:
        """Become the reader, unless someone is: True when this caller is it now."""

    @abstractmethod
    def resign(self) -> None:
        """Stop being the reader; wake the waiters (one of them takes over)."""

    @abstractmethod
    def bump(self) -> None:
        """Something was heard: move the generation and wake the waiters."""

    @abstractmethod
    async def wait(self, seen: int, timeout: float) -> None:
        """Return after at most ``timeout`` seconds, or once the generation moved past ``seen`` or nobody reads."""


class PostgresIO(ABC):
    """How to make pools and connections and how to wait, for one of the two APIs."""

    @abstractmethod
    def pool(self, conninfo: str, configure: Callable[[Any], None], **options: Any) -> Pool:
        """A closed pool; ``configure`` runs on every connection it opens."""

    @abstractmethod
    async def connect(self, conninfo: str, **options: Any) -> Raw:
        """A new connection outside the pool (probing the server, learning a commit's outcome)."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait."""

    @abstractmethod
    def signal(self) -> Signal:
        """A new :class:`Signal` for the waiters of this API (threads, or tasks of one event loop)."""

    @abstractmethod
    async def uninterrupted(self, work: Awaitable[T]) -> T:
        """Await ``work`` to its end even if the caller is cancelled meanwhile; the cancellation propagates
        after it (a COMMIT sent finishes: its outcome is then known to the server and to the caller's retry)."""


def _prepare(params: Params) -> bool | None:
    """psycopg's ``prepare`` for a statement: never for one without parameters (BEGIN, COMMIT, ROLLBACK,
    SAVEPOINT: nothing to gain, and no named statement to keep in step with the server), else psycopg's rule
    (prepared on the server from its sixth execution on the connection)."""
    return False if params is None else None


def _cursor_name() -> str:
    return f"planflow_{next(_cursor_numbers)}"


_cursor_numbers = itertools.count()


# Blocking ----------------------------------------------------------------------------------------------------


class _BlockingRaw(Raw):
    __slots__ = ()

    def __init__(self, conn: BlockingConnection) -> None:
        self.conn = conn

    @property
    def _conn(self) -> BlockingConnection:
        return self.conn  # pyright: ignore[reportReturnType]

    async def one(self, query: Query, params: Params) -> Row | None:
        return self._conn.execute(query, params, prepare=_prepare(params)).fetchone()

    async def all(self, query: Query, params: Params) -> list[Row]:
        return self._conn.execute(query, params, prepare=_prepare(params)).fetchall()

    async def count(self, query: Query, params: Params) -> int:
        return self._conn.execute(query, params, prepare=_prepare(params)).rowcount

    async def stream(self, query: Query, params: Params, batch: int) -> AsyncIterator[list[Row]]:
        with self._conn.cursor(name=_cursor_name()) as cursor:
            cursor.execute(query, params)
            while rows := cursor.fetchmany(batch):
                yield rows

    async def many(self, query: Query, rows: Iterable[Sequence[object]]) -> None:
        with self._conn.cursor() as cursor:
            cursor.executemany(query, rows)

    async def script(self, script: Query) -> Row | None:
        cursor = self._conn.execute(script, prepare=False)
        while cursor.nextset():
            pass
        return cursor.fetchone() if cursor.description else None

    async def notified(self, timeout: float) -> bool:
        return any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))

    async def check(self) -> None:
        ConnectionPool.check_connection(self._conn)

    async def close(self) -> None:
        self._conn.close()


class _BlockingPool(Pool):
    def __init__(self, pool: ConnectionPool[BlockingConnection]) -> None:
        self._pool = pool

    async def open(self, timeout: float, *, wait: bool = True) -> None:
        self._pool.open(wait=wait, timeout=timeout)

    async def get(self, timeout: float) -> Raw:
        return _BlockingRaw(self._pool.getconn(timeout=timeout))

    async def put(self, raw: Raw) -> None:
        self._pool.putconn(raw.conn)  # pyright: ignore[reportArgumentType]

    async def close(self) -> None:
        self._pool.close()

    def stats(self) -> dict[str, int]:
        return self._pool.get_stats()


class _BlockingSignal(Signal):
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._reading = False

    def lead(self) -> bool:
        with self._changed:
            if self._reading:
                return False
            self._reading = True
            return True

    def resign(self) -> None:
        with self._changed:
            self._reading = False
            self._changed.notify_all()

    def bump(self) -> None:
        with self._changed:
            self.generation += 1
            self._changed.notify_all()

    async def wait(self, seen: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.generation != seen or not self._reading, timeout)


class _BlockingIO(PostgresIO):
    def pool(self, conninfo: str, configure: Callable[[Any], None], **options: Any) -> Pool:
        return _BlockingPool(ConnectionPool(conninfo, open=False, configure=configure, **options))

    async def connect(self, conninfo: str, **options: Any) -> Raw:
        return _BlockingRaw(psycopg.Connection.connect(conninfo, **options))

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def signal(self) -> Signal:
        return _BlockingSignal()

    async def uninterrupted(self, work: Awaitable[T]) -> T:
        # Blocking calls are not cancelled part way.
        return await work


# Asyncio -----------------------------------------------------------------------------------------------------


class _AsyncRaw(Raw):
    __slots__ = ()

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    @property
    def _conn(self) -> AsyncConnection:
        return self.conn  # pyright: ignore[reportReturnType]

    async def one(self, query: Query, params: Params) -> Row | None:
        cursor = await self._conn.execute(query, params, prepare=_prepare(params))
        return await cursor.fetchone()

    async def all(self, query: Query, params: Params) -> list[Row]:
        cursor = await self._conn.execute(query, params, prepare=_prepare(params))
        return await cursor.fetchall()

    async def count(self, query: Query, params: Params) -> int:
        return (await self._conn.execute(query, params, prepare=_prepare(params))).rowcount

    async def stream(self, query: Query, params: Params, batch: int) -> AsyncIterator[list[Row]]:
        async with self._conn.cursor(name=_cursor_name()) as cursor:
            await cursor.execute(query, params)
            while rows := await cursor.fetchmany(batch):
                yield rows

    async def many(self, query: Query, rows: Iterable[Sequence[object]]) -> None:
        async with self._conn.cursor() as cursor:
            await cursor.executemany(query, rows)

    async def script(self, script: Query) -> Row | None:
        cursor = await self._conn.execute(script, prepare=False)
        while cursor.nextset():
            pass
        return await cursor.fetchone() if cursor.description else None

    async def notified(self, timeout: float) -> bool:
        async for _ in self._conn.notifies(timeout=timeout, stop_after=1):
            return True
        return False

    async def check(self) -> None:
        await AsyncConnectionPool.check_connection(self._conn)

    async def close(self) -> None:
        await self._conn.close()


class _AsyncPool(Pool):
    def __init__(self, pool: AsyncConnectionPool[AsyncConnection]) -> None:
        self._pool = pool

    async def open(self, timeout: float, *, wait: bool = True) -> None:
        await self._pool.open(wait=wait, timeout=timeout)

    async def get(self, timeout: float) -> Raw:
        return _AsyncRaw(await self._pool.getconn(timeout=timeout))

    async def put(self, raw: Raw) -> None:
        await self._pool.putconn(raw.conn)  # pyright: ignore[reportArgumentType]

    async def close(self) -> None:
        await self._pool.close()

    def stats(self) -> dict[str, int]:
        return self._pool.get_stats()


class _AsyncSignal(Signal):
    def __init__(self) -> None:
        self._changed = asyncio.Event()
        self._reading = False

    def lead(self) -> bool:
        if self._reading:
            return False
        self._reading = True
        return True

    def resign(self) -> None:
        self._reading = False
        self._wake()

    def bump(self) -> None:
        self.generation += 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:
        if self.generation != seen or not self._reading:
            return
        with suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)


class _AsyncIO(PostgresIO):
    def pool(self, conninfo: str, configure: Callable[[Any], None], **options: Any) -> Pool:
        async def configure_async(conn: AsyncConnection) -> None:
            configure(conn)

        return _AsyncPool(
            AsyncConnectionPool(conninfo, open=False, configure=configure_async, **options)  # pyright: ignore[reportArgumentType]
        )

    async def connect(self, conninfo: str, **options: Any) -> Raw:
        return _AsyncRaw(await psycopg.AsyncConnection.connect(conninfo, **options))

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def signal(self) -> Signal:
        return _AsyncSignal()

    async def uninterrupted(self, work: Awaitable[T]) -> T:
        return await finish_then_cancel(work)


BLOCKING: PostgresIO = _BlockingIO()
ASYNCIO: PostgresIO = _AsyncIO()
