"""PostgreSQL connections: a psycopg_pool pool of autocommit connections, for the blocking and the async API.

Units of work begin with ``BEGIN`` (READ COMMITTED: writes lock the rows they touch, and ``FOR UPDATE`` waits
for the holder) and record a commit token in the same round trip; reads that must be
consistent across statements (a workflow with its tasks) use ``BEGIN ISOLATION LEVEL REPEATABLE READ READ
ONLY``. Serialization failures, deadlocks, lost connections and server shutdowns surface as
:class:`TransientError`, and the unit of work is run again, except when the connection was lost while its
COMMIT was in flight: then :meth:`PostgresDatabase.committed` asks the server on a new connection whether the
unit's commit token (a row the unit inserted) was committed, so that a unit is never applied twice. (The
transaction's id would not do: after a crash the server may give an id that never reached the WAL to a new
transaction, and report that one's outcome.)

A pooled connection the server has closed (restart, failover, ``idle_session_timeout``, a proxy) is found by a
check before it is lent when it has been idle for a second or a loss was seen since it was last used; checks
that fail are not followed by psycopg_pool's backoff (1, 2, 4 ... seconds), and while the server is away
the pool is asked again every quarter second, so that the first call after the server answers again waits
about a second at most, whatever the pool size.

JSON columns load as text (a per-connection loader), as they do on SQLite, so the shared codec parses them
once; timestamps load as aware datetimes. The shared SQL's ``?`` placeholders become ``%s`` (cached per
statement text). psycopg prepares a statement on the server after its fifth execution on a connection, except
behind PgBouncer in transaction mode (``pgbouncer=true``), where a prepared statement would not survive the
transaction.
"""

from __future__ import annotations

import logging
import math
import os
import time
import uuid
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import lru_cache
from time import perf_counter
from typing import Any, TypeVar
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.types.string import TextLoader
from psycopg_pool import PoolClosed, PoolTimeout

from planflow.config import PlanflowConfig, redact_url
from planflow.errors import (
    ClosedError,
    CommitUnknownError,
    ConfigError,
    DatabaseError,
    DuplicateError,
    PlanflowError,
    ReadOnlyError,
    TransientError,
    ValidationError,
)
from planflow.infra.postgres.io import Pool, PostgresIO, Raw
from planflow.infra.postgres.listen import SharedListener
from planflow.infra.sql.database import (
    Connection,
    ConnectionLostError,
    Database,
    ForeignKeyViolation,
    Params,
    Result,
    Row,
    StatementLog,
    WaitedTooLongError,
    Watcher,
    Work,
    retrying,
    statement,
    statement_rows,
)

T = TypeVar("T")
logger = logging.getLogger("planflow.postgres")

#: SQLSTATEs after which running the unit of work again can succeed: serialization failure, deadlock,
#: statement completion unknown, lock not available (lock_timeout), server shutting down or restarting,
#: too many connections. Class 08 (connection exceptions) is transient as a whole.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "40003", "55P03", "57P01", "57P02", "57P03", "53300"})

#: Connection failures worth waiting out (until ``connect_timeout``): the server is not reachable yet, or up
#: but not accepting connections right now. Any other failure to connect is a configuration error.
_WAIT_AND_RETRY = (
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "could not translate host name",
    "temporary failure in name resolution",
    "server closed the connection unexpectedly",
    "connection reset",
    "could not receive data",
    "could not send data",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "too many clients",
    "too many connections",
    "connection slots are reserved",
)
#: A port where nothing listens answers at once; it is waited out only this long (a server restarting).
REFUSED_GRACE = 1.0
#: Seconds after its last use during which a pooled connection is lent without a check round trip.
CHECK_AFTER_IDLE = 1.0
#: While the server seems away, the pool is asked for a connection this often (see the module docstring).
UNHEALTHY_SLICE = 0.25
#: How long after a loss the pool counts as unhealthy.
UNHEALTHY_FOR = 30.0

#: Seconds a commit token is kept: a lost COMMIT is resolved only while its unit is younger than this (minus a
#: margin), and every process deletes older tokens.
TOKEN_KEPT = 3600.0
#: Seconds before :data:`TOKEN_KEPT` after which a lost COMMIT is not resolved (its token may be gone).
TOKEN_MARGIN = 300.0
#: A process deletes old tokens with its first token write and then every this many.
TOKEN_CLEANUP_EVERY = 128
#: Tokens deleted by one cleanup at most: a short statement, never a long lock or scan.
TOKEN_CLEANUP_BATCH = 1000
INSERT_TOKEN = "INSERT INTO planflow_commits DEFAULT VALUES RETURNING token::text"
DELETE_OLD_TOKENS = (
    "DELETE FROM planflow_commits WHERE token = ANY(ARRAY(SELECT token FROM planflow_commits WHERE created_at < "
    f"now() - interval '{int(TOKEN_KEPT)} seconds' ORDER BY created_at LIMIT {TOKEN_CLEANUP_BATCH} "
    "FOR UPDATE SKIP LOCKED))"
)
#: Inserting a token again conflicts (nothing returned) when the unit committed it.
PROBE_TOKEN = b"INSERT INTO planflow_commits (token) VALUES (%s) ON CONFLICT (token) DO NOTHING RETURNING 1"

#: Connections inherited from a parent process (their sockets pointed at /dev/null) and pools abandoned
#: in a child: kept referenced so that nothing closes them politely.
_abandoned: list[object] = []


@lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> bytes:
    """The shared SQL (``?`` placeholders) in psycopg's format: ``%s`` placeholders, literal ``%`` doubled."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


@lru_cache(maxsize=256)
def _plain(sql: str) -> bytes:
    # Without parameters psycopg sends the text as it is: no placeholder, no escaping.
    return sql.encode()


@lru_cache(maxsize=512)
def with_token(sql: str) -> str:
    """``sql`` with a first CTE inserting a commit token (its first parameter), committed with it or not at all."""
    head = "WITH planflow_token AS (INSERT INTO planflow_commits (token) VALUES (?)) "
    if sql.startswith("WITH "):
        return f"{head[:-1]}, {sql[5:]}"
    return head + sql


def _text(exc: BaseException) -> str:
    """An exception's message on one line (psycopg adds DETAIL and HINT lines)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def translate(exc: psycopg.Error, *, lost: bool = False) -> PlanflowError:
    """The planflow error for a psycopg exception raised by a statement (the caller chains the original).

    Args:
        exc: What psycopg raised.
        lost: The connection is no longer usable (killed, server gone): always transient, and in doubt.
    """
    state = exc.sqlstate or ""
    message = _text(exc)
    if state == "23505":
        return DuplicateError(message)
    if state == "23503":
        return ForeignKeyViolation(f"a referenced row does not exist ({message})")
    if state == "25006":  # read_only_sql_transaction
        return ReadOnlyError(f"the PostgreSQL session is read-only: {message}")
    if state.startswith(("22", "23")) or (not state and isinstance(exc, psycopg.DataError)):
        return ValidationError(f"rejected by the database: {message}")
    if lost or state in ("57P01", "57P02", "57P03") or state.startswith("08"):
        return ConnectionLostError(f"PostgreSQL connection lost ({state or 'closed'}): {message}")
    if state in TRANSIENT_SQLSTATES:
        return TransientError(f"PostgreSQL failed transiently ({state}): {message}")
    if not state and isinstance(exc, psycopg.OperationalError):
        return ConnectionLostError(f"PostgreSQL connection failed: {message}")
    return DatabaseError(f"PostgreSQL error {state or type(exc).__name__}: {message}")


@dataclass(frozen=True, slots=True)
class CommitTicket:
    """What a write unit needs to learn its outcome: its commit token, the backend that ran it, and when it
    began (``time.monotonic()``): a token older than :data:`TOKEN_KEPT` may have been deleted."""

    token: str
    backend_pid: int | None
    began: float


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


class PostgresConnection(Connection):
    """A pooled psycopg connection as the repositories see it."""

    __slots__ = ("_db", "raw")

    def __init__(self, raw: Raw, db: PostgresDatabase) -> None:
        self.raw = raw
        self._db = db

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


def _url_password(url: str) -> str | None:
    """The password of a URL, read without libpq (which may reject the URL), to scrub it from messages."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def _configure(conn: Any) -> None:
    # JSON as text, like SQLite: the shared codec parses it once. Per connection, never psycopg's globals.
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


class PostgresDatabase(Database):
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
        super().__init__(config.retry, StatementLog("postgres", config.slow_statement_ms))
        self._config = config
        self._io = io
        self.read_only = config.read_only
        url = config.url or ""
        self._location = redact_url(url)
        self._secret: str | None = _url_password(url)
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise self._scrubbed(ConfigError, f"invalid PostgreSQL URL {self._location!r}", exc) from exc
        password = params.get("password")
        self._secret = str(password) if password else self._secret
        self._conninfo = url
        self._settings = self._connection_settings(params)
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        #: Every connection the pool opened, so that a forked child can neutralise them all.
        self._known: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pool: Pool | None = self._new_pool()
        self._lost_at = -math.inf
        self._closed = False
        #: The listening connection shared by this provider's waiters for work, once one has waited.
        self._listener: SharedListener | None = None
        #: How lost COMMITs were resolved: committed, aborted, unknown (a diagnostic for the fault tests).
        self.commit_outcomes = {"committed": 0, "aborted": 0, "unknown": 0}
        self._units = 0
        #: Told how long a call waited for a pooled connection, when the provider has listeners.
        self.on_pool_wait: Callable[[float], None] | None = None

    async def open(self) -> PostgresDatabase:
        """Check the server and open the pool (see the class docstring); returns ``self``."""
        deadline = time.monotonic() + self._config.connect_timeout
        await self._probe(deadline)
        assert self._pool is not None
        try:
            await self._pool.open(timeout=max(deadline - time.monotonic(), 0.1))
        except PoolTimeout as exc:
            await self._pool.close()
            raise TransientError(
                f"PostgreSQL at {self._location} did not provide {self._config.pool_min_size} connections "
                f"within connect_timeout={self._config.connect_timeout}s"
            ) from exc
        return self

    def _new_pool(self) -> Pool:
        config = self._config
        return self._io.pool(
            self._conninfo,
            self._configure,
            kwargs={"autocommit": True, **self._settings},
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            name="planflow",
            timeout=config.pool_timeout,
            max_lifetime=config.pool_max_lifetime,
            max_idle=config.pool_max_idle,
            # A failed reconnection gives up after this; the next request starts a fresh attempt at once
            # instead of waiting out psycopg_pool's growing backoff.
            reconnect_timeout=UNHEALTHY_SLICE * 2,
        )

    def _configure(self, conn: Any) -> None:
        _configure(conn)
        self._known.add(conn)

    def _connection_settings(self, params: Mapping[str, object]) -> dict[str, Any]:
        """Connection parameters on top of the URL's: UTC, a connect timeout, an application name."""
        settings: dict[str, Any] = {}
        if self._config.pgbouncer:
            # PgBouncer in transaction mode: no statement may be prepared on a server connection it lends to
            # another client next; and it refuses startup options it does not know.
            settings["prepare_threshold"] = None
        else:
            # Read-only: the server refuses every write of the session, whatever sends it.
            read_only = " -c default_transaction_read_only=on" if self._config.read_only else ""
            settings["options"] = f"{params.get('options') or ''} -c TimeZone=UTC{read_only}".strip()
        if "connect_timeout" not in params:
            settings["connect_timeout"] = max(2, math.ceil(self._config.connect_timeout))
        if "application_name" not in params:
            settings["application_name"] = "planflow"
        return settings

    def _scrubbed(self, kind: type[PlanflowError], what: str, exc: psycopg.Error) -> PlanflowError:
        """``kind`` with ``what`` and psycopg's message, which can echo the conninfo, without the password.

        The original exception is scrubbed in place too, since it is chained to the error and printed with it.
        """
        original = str(exc)
        message = self._scrub(_text(exc))
        if self._scrub(original) != original:
            exc.args = (message,)
        return kind(self._scrub(f"{what}: {message}"))

    def _scrub(self, text: str) -> str:
        text = redact_url(text)
        return text.replace(self._secret, "***") if self._secret else text

    def _connect_error(self, exc: psycopg.Error, *, waited: float) -> tuple[PlanflowError, bool]:
        """The error for a failed connection attempt, and whether another attempt may succeed."""
        if not isinstance(exc, psycopg.ProgrammingError):
            lowered = str(exc).lower()
            if "connection refused" in lowered:
                # Nothing listens: worth a second's patience (a server restarting), not connect_timeout's.
                refused = self._scrubbed(
                    TransientError, f"nothing accepts connections at {self._location} (refused)", exc
                )
                return refused, waited < REFUSED_GRACE
            if any(reason in lowered for reason in _WAIT_AND_RETRY):
                return self._scrubbed(
                    TransientError,
                    f"cannot reach PostgreSQL at {self._location} within "
                    f"connect_timeout={self._config.connect_timeout}s",
                    exc,
                ), True
        return self._scrubbed(ConfigError, f"cannot connect to PostgreSQL at {self._location}", exc), False

    async def _probe(self, deadline: float) -> None:
        """Connect once, retrying while the server is unreachable until ``deadline``, to fail fast and clearly.

        A refused connection (nothing listens on the port) is retried for :data:`REFUSED_GRACE` seconds only.
        """
        started = time.monotonic()
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            settings = {**self._settings}
            settings.pop("prepare_threshold", None)
            if "connect_timeout" in settings:
                settings["connect_timeout"] = max(2, math.ceil(remaining))
            try:
                raw = await self._io.connect(make_conninfo(self._conninfo, **settings))
            except psycopg.Error as exc:
                error, again = self._connect_error(exc, waited=time.monotonic() - started)
                remaining = deadline - time.monotonic()
                if not again or remaining <= 0:
                    raise error from exc
                await self._io.sleep(min(delay, remaining))
                delay = min(delay * 2, 0.25)
            else:
                await raw.close()
                return

    # Connections ---------------------------------------------------------------------------------------

    def lost(self, error: PlanflowError) -> PlanflowError:
        """Note a lost connection (the next connections lent are checked first); return ``error``."""
        if isinstance(error, ConnectionLostError):
            self._lost_at = time.monotonic()
        return error

    async def acquire(self) -> Connection:
        if self._closed:
            raise ClosedError("the provider is closed")
        if self._pool is None:  # forked: this process opens its own
            self._pool = self._new_pool()
            await self._pool.open(timeout=self._config.connect_timeout)
        deadline = time.monotonic() + self._config.pool_timeout
        while True:
            raw = await self._get(deadline)
            returned = self._returned.get(raw.conn)
            if (
                returned is not None
                and time.monotonic() - returned <= CHECK_AFTER_IDLE
                and returned > self._lost_at
            ):
                return PostgresConnection(raw, self)
            try:
                await raw.check()
            except psycopg.Error:
                # Dead (the server restarted or closed it): give it back to be replaced and try the next one
                # at once, without the pool's backoff.
                self._lost_at = time.monotonic()
                await self._pool.put(raw)
                continue
            return PostgresConnection(raw, self)

    async def _get(self, deadline: float) -> Raw:
        pool = self._pool
        assert pool is not None
        if self.on_pool_wait is None or pool.stats().get("pool_available", 1):
            return await self._get_from(pool, deadline)
        # Observed, and no idle connection to lend: the call waits (for a connection to come back or be made).
        started = perf_counter()
        try:
            return await self._get_from(pool, deadline)
        finally:
            waited = perf_counter() - started
            logger.debug(
                "waited %.3f ms for a pooled connection",
                waited * 1000,
                extra={"planflow_driver": "postgres", "planflow_duration_ms": waited * 1000},
            )
            self.on_pool_wait(waited)

    async def _get_from(self, pool: Pool, deadline: float) -> Raw:
        while True:
            remaining = deadline - time.monotonic()
            unhealthy = time.monotonic() - self._lost_at < UNHEALTHY_FOR
            wait = min(remaining, UNHEALTHY_SLICE) if unhealthy else remaining
            try:
                return await pool.get(timeout=max(wait, 0.001))
            except PoolClosed as exc:
                raise ClosedError("the provider is closed") from exc
            except PoolTimeout as exc:
                if time.monotonic() < deadline:
                    continue  # ask again: a fresh request makes the pool try a fresh connection
                raise WaitedTooLongError(
                    f"no PostgreSQL connection became free within pool_timeout={self._config.pool_timeout}s "
                    f"(pool_max_size={self._config.pool_max_size})"
                ) from exc

    async def release(self, connection: Connection) -> None:
        assert isinstance(connection, PostgresConnection)
        raw = connection.raw
        self._returned[raw.conn] = time.monotonic()
        if self._pool is not None:
            # The pool rolls back a connection returned inside a transaction and replaces a broken one.
            await self._pool.put(raw)

    async def begin_on(self, connection: Connection, *, write: bool, resolvable: bool) -> object | None:
        assert isinstance(connection, PostgresConnection)
        if not write:
            await connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            return None
        if not resolvable:
            await connection.execute("BEGIN")
            return None
        await self._clean_tokens_now_and_then(connection)
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
            return await statement(connection, sql, params, result)
        except ConnectionLostError:
            if reread is None:
                raise
        finally:
            await self.release(connection)
        return await self.read(reread)

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
            await self._clean_tokens_now_and_then(connection)
            return await statement(connection, with_token(sql), [token, *params], result)
        except ConnectionLostError as lost:
            await self.release(connection)
            connection = None
            if not await self.committed(CommitTicket(token, pid, started), lost):
                raise
        finally:
            if connection is not None:
                await self.release(connection)
        assert reread is not None, "a tokened write needs a reread for a reply lost after it committed"
        return await self.read(reread)

    async def _clean_tokens_now_and_then(self, connection: Connection) -> None:
        """Delete a bounded batch of expired commit tokens on this process's first token and every
        :data:`TOKEN_CLEANUP_EVERY` th after, so that every process, however short-lived, keeps the table
        bounded."""
        self._units += 1
        if self._units % TOKEN_CLEANUP_EVERY == 1:
            await connection.execute(DELETE_OLD_TOKENS)

    async def committed(self, ticket: object, lost: ConnectionLostError) -> bool:
        """Whether the unit of ``ticket`` (a :class:`CommitTicket`), whose COMMIT lost its connection, committed.

        On a new connection, inserts the unit's token again (then rolls that back): the insert conflicts with
        the token if the unit committed, succeeds if it did not, and waits while the unit's transaction still
        runs on its old backend (which may not have noticed its client is gone: after a second that backend is
        terminated, which settles it). A server that is away is waited for, up to ``connect_timeout``.

        Raises:
            CommitUnknownError: no answer within ``connect_timeout``.
        """
        assert isinstance(ticket, CommitTicket)
        started = time.monotonic()
        # Past this the token may have been deleted by a cleanup, and its absence would read as "not committed".
        trusted_until = ticket.began + TOKEN_KEPT - TOKEN_MARGIN
        deadline = min(started + max(self._config.connect_timeout, 2.0), trusted_until)
        delay = 0.02
        why = "the server did not answer"
        while True:
            try:
                committed = await self._probe_token(ticket, terminate=time.monotonic() - started > 1.0)
            except (psycopg.Error, OSError) as exc:
                why = _text(exc)
            else:
                if committed is not None:
                    outcome = "committed" if committed else "aborted"
                    self.commit_outcomes[outcome] += 1
                    logger.warning(
                        "the connection was lost during COMMIT; the unit of work had %s",
                        outcome,
                        extra={"planflow_commit_token": ticket.token, "planflow_outcome": outcome},
                    )
                    return committed
                why = "its transaction was still running"
            if time.monotonic() >= deadline:
                self.commit_outcomes["unknown"] += 1
                raise CommitUnknownError(
                    f"the connection to PostgreSQL at {self._location} was lost while COMMIT was in flight, and "
                    f"whether the unit of work committed could not be learned ({why}); it was not run again"
                ) from lost
            await self.sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _probe_token(self, ticket: CommitTicket, *, terminate: bool) -> bool | None:
        """True: the unit committed; False: it did not; None: its transaction still holds the token."""
        settings = {**self._settings, "connect_timeout": 2, "autocommit": True}
        settings.pop("prepare_threshold", None)
        raw = await self._io.connect(self._conninfo, **settings)
        try:
            if terminate and ticket.backend_pid and not self._config.pgbouncer:
                # The unit's old backend, still inside its transaction: its client is gone for good.
                await raw.one(
                    b"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    b"WHERE pid = %s AND state LIKE 'idle in transaction%%'",
                    [ticket.backend_pid],
                )
            await raw.script(b"BEGIN; SET LOCAL lock_timeout = '500ms'")
            try:
                inserted = await raw.one(PROBE_TOKEN, [ticket.token])
            except psycopg.errors.LockNotAvailable:
                return None
            finally:
                await raw.script(b"ROLLBACK")
        finally:
            await raw.close()
        return inserted is None

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
        settings = {**self._settings, "autocommit": True}
        settings.pop("prepare_threshold", None)
        return await self._io.connect(self._conninfo, **settings)

    async def sleep(self, seconds: float) -> None:
        await self._io.sleep(seconds)

    async def uninterrupted(self, work: Awaitable[T]) -> T:
        return await self._io.uninterrupted(work)

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's statistics: ``pool_size``, ``pool_available``, ``requests_waiting`` and counters."""
        return {} if self._pool is None else self._pool.stats()

    async def aclose(self) -> None:
        self._closed = True
        if self._listener is not None:
            await self._listener.drop()
        if self._pool is not None:
            await self._pool.close()

    def after_fork(self) -> None:
        # The child shares the parent's sockets. Closing a connection politely would send Terminate and end
        # the parent's session, and using it would interleave both processes' messages; so each socket's file
        # descriptor is pointed at /dev/null in the child (whatever libpq writes to it later goes nowhere) and
        # the objects are kept referenced. The child opens a pool of its own on first use.
        if os.name != "posix":  # pragma: no cover - no fork elsewhere
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        listening = None if self._listener is None else self._listener.abandon()
        self._listener = None
        try:
            for conn in [*self._known, *([] if listening is None else [listening.conn])]:
                try:
                    fd = conn.pgconn.socket
                except psycopg.Error:
                    continue
                if fd >= 0:
                    os.dup2(devnull, fd)
                _abandoned.append(conn)
        finally:
            os.close(devnull)
        _abandoned.append(self._pool)
        self._pool = None
        self._known = weakref.WeakSet()
        self._returned = weakref.WeakKeyDictionary()
        self._lost_at = -math.inf


__all__ = ["CommitUnknownError", "PostgresConnection", "PostgresDatabase", "translate"]
