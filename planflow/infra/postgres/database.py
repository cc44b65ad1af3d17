"""PostgreSQL connections: a psycopg_pool pool of autocommit connections, for the blocking and the async API.

Units of work begin with ``BEGIN`` (READ COMMITTED: writes lock the rows they touch, and ``FOR UPDATE`` waits
for the holder) and record a commit token in the same round trip; reads that must be
consistent across statements (a workflow with its tasks) use ``BEGIN ISOLATION LEVEL REPEATABLE READ READ
ONLY``. Serialization failures, deadlocks, lost connections and server shutdowns surface as
:class:`TransientError`, and the unit of work is run again, except when the connection was lost while its
COMMIT was in flight: then :meth:`PostgresDatabase.committed` asks the server on a new connection whether the
unit's commit token (a row the unit inserted) was committed, so that a unit is never applied twice (see
``planflow.infra.postgres.commits``).

The parts, by concern: ``connect`` (the URL, connection settings, the first check of the server, the pool and
its health), ``connection`` (running a statement), ``errors`` (psycopg's errors as planflow's), ``commits``
(commit tokens and the outcome of a lost COMMIT), ``listen`` (the shared LISTEN connection of waiters for
work), ``standbys`` (reads outside transactions on the standbys of ``read_url``, with read-your-writes).
psycopg prepares a statement on the server after its fifth execution on a connection, except behind PgBouncer
in transaction mode (``pgbouncer=true``), where a prepared statement would not survive the transaction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator, Awaitable
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

import psycopg

from planflow.config import PlanflowConfig
from planflow.errors import ClosedError, CommitUnknownError
from planflow.infra.postgres.commits import (
    INSERT_TOKEN,
    CommitResolver,
    CommitTicket,
    TokenCleanup,
    with_token,
)
from planflow.infra.postgres.connect import PooledDatabase
from planflow.infra.postgres.connection import PostgresConnection
from planflow.infra.postgres.errors import translate
from planflow.infra.postgres.io import PostgresIO, Raw
from planflow.infra.postgres.listen import SharedListener
from planflow.infra.postgres.standbys import WRITTEN_POSITION, Standbys, standby_config
from planflow.infra.sql.database import (
    Connection,
    ConnectionLostError,
    Params,
    Result,
    Transaction,
    Watcher,
    Work,
    retrying,
    statement,
)

T = TypeVar("T")

#: How often a watcher behind PgBouncer (no LISTEN there) looks for work again.
POLL_INTERVAL = 0.1


class _SharedWatcher(Watcher):
    """Waits on the provider's shared listening connection (see ``planflow.infra.postgres.listen``)."""

    def __init__(self, listener: SharedListener, seen: int, db: PostgresDatabase) -> None:
        self._listener = listener
        self._seen = seen
        self._db = db

    async def wait(self, seconds: float) -> None:
        try:
            await self._listener.wait(self._seen, seconds)
        except psycopg.Error as exc:
            raise self._db.lost(translate(exc, lost=True)) from exc
        self._seen = self._listener.signal.generation


class _PollingWatcher(Watcher):
    def __init__(self, db: PostgresDatabase) -> None:
        self._db = db

    async def wait(self, seconds: float) -> None:
        await self._db.sleep(min(seconds, POLL_INTERVAL))


class PostgresDatabase(PooledDatabase):
    """A PostgreSQL database reached through a connection pool, for either API (see the module docstring).

    Open it with :meth:`open`: it checks the server at once: a refused login or a missing database is a
    :class:`ConfigError`, a server that stays unreachable for ``config.connect_timeout`` seconds a
    :class:`TransientError`. No message carries the password.
    """

    #: psycopg pipelines ``executemany``: rows built on demand overlap with the server's work on earlier ones.
    streams_parameters = True
    #: A lost reply to an autocommitted statement leaves its outcome in doubt; units run in transactions.
    autocommit_single_statement = False

    def __init__(self, config: PlanflowConfig, io: PostgresIO) -> None:
        super().__init__(config, io)
        #: The listening connection shared by this provider's waiters for work, once one has waited.
        self._listener: SharedListener | None = None
        self._cleanup = TokenCleanup()
        self._resolver = CommitResolver(
            lambda: self._connector.connect(connect_timeout=2, autocommit=True),
            self.sleep,
            connect_timeout=config.connect_timeout,
            location=self._connector.location,
            pgbouncer=config.pgbouncer,
        )
        #: The standbys of ``read_url`` that serve reads outside transactions, if any.
        self._standbys: Standbys | None = None
        if config.read_url is not None:
            self._standbys = Standbys(PostgresDatabase(standby_config(config), io), config)

    async def open(self) -> Self:
        """Check the server and open the pool, then open the standby pool without waiting for the standby."""
        await super().open()
        if self._standbys is not None:
            try:
                await self._standbys.open()
            except BaseException:
                await self.aclose()
                raise
        return self

    async def acquire_for_read(self, *, grouped: bool = False) -> Connection:
        if self._standbys is not None:
            connection = await self._standbys.lend()
            if connection is not None:
                return connection
        return await self.acquire()

    async def send_commit(self, tx: Transaction) -> None:
        if self._standbys is None or not tx.write:
            await tx.connection.execute("COMMIT")
            return
        # Where the unit's WAL ends, read after its COMMIT in the same round trip (for read-your-writes).
        assert isinstance(tx.connection, PostgresConnection)
        row = await tx.connection.script_row(f"COMMIT; {WRITTEN_POSITION}")
        assert row is not None
        self._standbys.noted(int(row[0]))

    async def begin_on(self, connection: Connection, *, write: bool, resolvable: bool) -> object | None:
        assert isinstance(connection, PostgresConnection)
        if not write:
            await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return None
        if not resolvable:
            await connection.execute("BEGIN")
            return None
        await self._cleanup.now_and_then(connection)
        # The unit's commit token, written in the same round trip as BEGIN: should the reply to COMMIT be lost,
        # committed() learns from it whether the unit committed.
        started = time.monotonic()
        row = await connection.script_row(f"BEGIN; {INSERT_TOKEN}")
        assert row is not None
        return CommitTicket(str(row[0]), connection.raw.backend_pid, started)

    async def write(
        self,
        sql: str,
        params: Params,
        *,
        result: Result,
        reread: Work[Any] | None = None,
        evident: bool = False,
        idempotent: bool = False,
    ) -> Any:
        self.refuse_writes()
        if self.current() is not None:
            return await super().write(sql, params, result=result, reread=reread)
        run = self._write_evident if evident or idempotent else self._write_tokened
        # Cancelled while the statement runs (an asyncio timeout, say), psycopg asks the server to cancel it and
        # waits for its outcome before letting the cancellation through: a statement waiting for a lock is
        # stopped; one already committing commits. Either way it is over, and the connection idle, by then.
        return await retrying(lambda: run(sql, params, result, reread), self.retry, self.sleep, self.on_retry)

    async def _write_evident(self, sql: str, params: Params, result: Result, reread: Work[Any] | None) -> Any:
        # The statement alone, in autocommit mode. Its reply lost, what it did is read back from the rows it
        # marked (or, with no reread, it is simply run again: running it twice changes nothing more). Should the
        # reread come before the server finished the statement, it reports less than was done: rows claimed (or
        # leases extended) unbeknown to the caller, which lapse with their lease and are claimed again. Never
        # more, so nothing is done twice.
        connection = await self.acquire()
        try:
            outcome = await statement(connection, sql, params, result)
            if self._standbys is not None:
                await self._standbys.note(connection)
            return outcome
        except ConnectionLostError:
            if reread is None:
                raise
        finally:
            await self.release(connection)
        return await self._reread(reread)

    async def _write_tokened(self, sql: str, params: Params, result: Result, reread: Work[Any] | None) -> Any:
        # One statement in autocommit mode whose first CTE inserts a commit token made here: the token commits
        # with the statement or not at all, so a reply lost at any point is resolved by looking for the token,
        # without BEGIN, COMMIT or a pipeline.
        token = str(uuid.uuid4())
        connection = await self.acquire()
        assert isinstance(connection, PostgresConnection)
        pid = connection.raw.backend_pid
        started = time.monotonic()
        try:
            await self._cleanup.now_and_then(connection)
            outcome = await statement(connection, with_token(sql), [token, *params], result)
            if self._standbys is not None:
                await self._standbys.note(connection)
            return outcome
        except ConnectionLostError as lost:
            await self.release(connection)
            connection = None
            if not await self.committed(CommitTicket(token, pid, started), lost):
                raise
        finally:
            if connection is not None:
                await self.release(connection)
        assert reread is not None, "a tokened write needs a reread for a reply lost after it committed"
        return await self._reread(reread)

    async def _reread(self, reread: Work[Any]) -> Any:
        """What a write whose reply was lost did, read on the primary (as are this context's reads a while)."""
        if self._standbys is not None:
            self._standbys.pin()
        return await self.read(reread)

    async def committed(self, ticket: object, lost: ConnectionLostError) -> bool:
        """Whether the unit of ``ticket`` (a :class:`CommitTicket`), whose COMMIT lost its connection, committed
        (see :meth:`CommitResolver.committed`).

        Raises:
            CommitUnknownError: no answer within ``connect_timeout``.
        """
        assert isinstance(ticket, CommitTicket)
        applied = await self._resolver.committed(ticket, lost)
        if applied and self._standbys is not None:
            self._standbys.pin()
        return applied

    @asynccontextmanager
    async def watch(self) -> AsyncGenerator[Watcher, None]:
        if self._config.pgbouncer:
            # A bouncer in transaction mode hands LISTEN's session to other clients: poll instead.
            yield _PollingWatcher(self)
            return
        if self._closed:
            raise ClosedError("the provider is closed")
        if self._listener is None:
            self._listener = SharedListener(self._io.signal(), self._connect_listener)
        try:
            seen = await self._listener.listening()
        except psycopg.Error as exc:
            raise self.lost(translate(exc, lost=True)) from exc
        yield _SharedWatcher(self._listener, seen, self)

    async def _connect_listener(self) -> Raw:
        """A connection of its own (outside the pool) for the shared listener."""
        return await self._connector.connect(autocommit=True)

    async def sleep(self, seconds: float) -> None:
        await self._io.sleep(seconds)

    async def uninterrupted(self, work: Awaitable[T]) -> T:
        return await self._io.uninterrupted(work)

    async def aclose(self) -> None:
        self._closed = True
        if self._listener is not None:
            await self._listener.drop()
        if self._standbys is not None:
            await self._standbys.aclose()
        await super().aclose()

    def after_fork(self) -> None:
        listening = None if self._listener is None else self._listener.abandon()
        self._listener = None
        self._abandon_connections([] if listening is None else [listening.conn])


__all__ = ["CommitUnknownError", "PostgresConnection", "PostgresDatabase", "translate"]
