"""Reaching the server: the URL and connection settings, the first check when opening, and the pool's health.

:class:`Connector` knows where the server is and how to connect (UTC, a connect timeout, an application
name, read-only sessions, PgBouncer's restrictions) and says why it could not, without the password.

A pooled connection the server has closed (restart, failover, ``idle_session_timeout``, a proxy) is found by a
check before it is lent when it has been idle for a second or a loss was seen since it was last used; checks
that fail are not followed by psycopg_pool's backoff (1, 2, 4 ... seconds), and while the server is away
the pool is asked again every quarter second, so that the first call after the server answers again waits
about a second at most, whatever the pool size (:class:`PooledDatabase`).

JSON columns load as text (a per-connection loader), as they do on SQLite, so the shared codec parses them
once; timestamps load as aware datetimes.
"""

from __future__ import annotations

import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Mapping
from time import perf_counter
from typing import Any, Self

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg.types.string import TextLoader
from psycopg_pool import PoolClosed, PoolTimeout

from planflow.config import PlanflowConfig, parse_postgres, redact_url
from planflow.errors import ClosedError, ConfigError, PlanflowError, TransientError
from planflow.infra.postgres.connection import PostgresConnection
from planflow.infra.postgres.errors import one_line
from planflow.infra.postgres.io import Pool, PostgresIO, Raw
from planflow.infra.sql.database import (
    Connection,
    ConnectionLostError,
    Database,
    StatementLog,
    WaitedTooLongError,
)

logger = logging.getLogger("planflow.postgres")

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

#: Connections inherited from a parent process (their sockets pointed at /dev/null) and pools abandoned
#: in a child: kept referenced so that nothing closes them politely.
_abandoned: list[object] = []


def _configure(conn: Any) -> None:
    # JSON as text, like SQLite: the shared codec parses it once. Per connection, never psycopg's globals.
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)


class Connector:
    """Where the server is and how to connect to it; every message without the password.

    Raises:
        ConfigError: libpq refuses the URL (on construction).
    """

    def __init__(self, config: PlanflowConfig, io: PostgresIO) -> None:
        self._config = config
        self._io = io
        target = parse_postgres(config.url or "")
        #: The server, safe to print.
        self.location = target.redacted
        self._secret = target.password
        #: What psycopg is given: the URL (or key/value pairs) as configured.
        self.conninfo = target.conninfo
        #: Connection parameters on top of the URL's.
        self.settings = self._connection_settings(target.params)

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

    def scrubbed(self, kind: type[PlanflowError], what: str, exc: psycopg.Error) -> PlanflowError:
        """``kind`` with ``what`` and psycopg's message, which can echo the conninfo, without the password.

        The original exception is scrubbed in place too, since it is chained to the error and printed with it.
        """
        original = str(exc)
        message = self.scrub(one_line(exc))
        if self.scrub(original) != original:
            exc.args = (message,)
        return kind(self.scrub(f"{what}: {message}"))

    def scrub(self, text: str) -> str:
        """``text`` without the password."""
        text = redact_url(text)
        return text.replace(self._secret, "***") if self._secret else text

    def pool(self, configure: Callable[[Any], None]) -> Pool:
        """A new, closed pool of autocommit connections; ``configure`` runs on each connection it opens."""
        config = self._config
        return self._io.pool(
            self.conninfo,
            configure,
            kwargs={"autocommit": True, **self.settings},
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

    async def connect(self, **options: Any) -> Raw:
        """A connection of its own, outside the pool, with ``options`` on top of the settings (never prepared
        statements: nothing runs on it often)."""
        settings = {**self.settings, **options}
        settings.pop("prepare_threshold", None)
        return await self._io.connect(self.conninfo, **settings)

    def _connect_error(self, exc: psycopg.Error, *, waited: float) -> tuple[PlanflowError, bool]:
        """The error for a failed connection attempt, and whether another attempt may succeed.

        The one place that reads a message: libpq reports a failed connection attempt in words only. psycopg's
        ``OperationalError`` then carries no SQLSTATE (not even for the server's own refusal, such as 57P03
        "the database system is starting up" or 53300 "too many clients") and no ``errno``, so the reasons
        worth waiting out are told by libpq's wording (:data:`_WAIT_AND_RETRY`). Errors raised by statements
        are classified by their class (``planflow.infra.postgres.errors``).
        """
        if not isinstance(exc, psycopg.ProgrammingError):
            lowered = str(exc).lower()
            if "connection refused" in lowered:
                # Nothing listens: worth a second's patience (a server restarting), not connect_timeout's.
                refused = self.scrubbed(
                    TransientError, f"nothing accepts connections at {self.location} (refused)", exc
                )
                return refused, waited < REFUSED_GRACE
            if any(reason in lowered for reason in _WAIT_AND_RETRY):
                return self.scrubbed(
                    TransientError,
                    f"cannot reach PostgreSQL at {self.location} within "
                    f"connect_timeout={self._config.connect_timeout}s",
                    exc,
                ), True
        return self.scrubbed(ConfigError, f"cannot connect to PostgreSQL at {self.location}", exc), False

    async def probe(self, deadline: float) -> None:
        """Connect once, retrying while the server is unreachable until ``deadline``, to fail fast and clearly.

        A refused connection (nothing listens on the port) is retried for :data:`REFUSED_GRACE` seconds only.

        Raises:
            ConfigError: the login is refused, the database does not exist, or another lasting failure.
            TransientError: the server stayed unreachable until ``deadline``.
        """
        started = time.monotonic()
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            settings = {**self.settings}
            settings.pop("prepare_threshold", None)
            if "connect_timeout" in settings:
                settings["connect_timeout"] = max(2, math.ceil(remaining))
            try:
                raw = await self._io.connect(make_conninfo(self.conninfo, **settings))
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


class PooledDatabase(Database):
    """The connections of :class:`~planflow.infra.postgres.database.PostgresDatabase`: its pool, opened after
    a first check of the server, and the checks that keep dead connections from being lent (see the module
    docstring). Lends :class:`PostgresConnection` objects in autocommit mode."""

    def __init__(self, config: PlanflowConfig, io: PostgresIO) -> None:
        super().__init__(config.retry, StatementLog("postgres", config.slow_statement_ms))
        self._config = config
        self._io = io
        self.read_only = config.read_only
        self._connector = Connector(config, io)
        self._returned: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        #: Every connection the pool opened, so that a forked child can neutralise them all.
        self._known: weakref.WeakSet[Any] = weakref.WeakSet()
        self._pool: Pool | None = self._connector.pool(self._configure)
        self._lost_at = -math.inf
        self._closed = False
        #: Told how long a call waited for a pooled connection, when the provider has listeners.
        self.on_pool_wait: Callable[[float], None] | None = None

    async def open(self) -> Self:
        """Check the server and open the pool (see the class docstring); returns ``self``."""
        deadline = time.monotonic() + self._config.connect_timeout
        await self._connector.probe(deadline)
        assert self._pool is not None
        try:
            await self._pool.open(timeout=max(deadline - time.monotonic(), 0.1))
        except PoolTimeout as exc:
            await self._pool.close()
            raise TransientError(
                f"PostgreSQL at {self._connector.location} did not provide {self._config.pool_min_size} "
                f"connections within connect_timeout={self._config.connect_timeout}s"
            ) from exc
        return self

    async def start(self) -> TransientError | None:
        """Open the pool without waiting for its connections (made in the background), for a server that may be
        down now (a standby); return why it did not answer a first connection, or None.

        Raises:
            ConfigError: the server refuses the login, has no such database, or another lasting failure.
        """
        failure = None
        try:
            await self._connector.probe(time.monotonic() + self._config.connect_timeout)
        except TransientError as exc:
            failure = exc
        assert self._pool is not None
        await self._pool.open(self._config.connect_timeout, wait=False)
        return failure

    @property
    def location(self) -> str:
        """The server, safe to print."""
        return self._connector.location

    def _configure(self, conn: Any) -> None:
        _configure(conn)
        self._known.add(conn)

    def lost(self, error: PlanflowError) -> PlanflowError:
        """Note a lost connection (the next connections lent are checked first); return ``error``."""
        if isinstance(error, ConnectionLostError):
            self._lost_at = time.monotonic()
        return error

    async def acquire(self) -> Connection:
        if self._closed:
            raise ClosedError("the provider is closed")
        if self._pool is None:  # forked: this process opens its own
            self._pool = self._connector.pool(self._configure)
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
        if connection.database is not self:  # a standby's (see planflow.infra.postgres.standbys)
            await connection.database.release(connection)
            return
        raw = connection.raw
        self._returned[raw.conn] = time.monotonic()
        if self._pool is not None:
            # The pool rolls back a connection returned inside a transaction and replaces a broken one.
            await self._pool.put(raw)

    def pool_stats(self) -> dict[str, int]:
        """psycopg_pool's statistics: ``pool_size``, ``pool_available``, ``requests_waiting`` and counters."""
        return {} if self._pool is None else self._pool.stats()

    async def aclose(self) -> None:
        self._closed = True
        if self._pool is not None:
            await self._pool.close()

    def after_fork(self) -> None:
        self._abandon_connections([])

    def _abandon_connections(self, others: list[Any]) -> None:
        """In a child after ``fork()``: neutralise the pool's connections and ``others`` (see below)."""
        # The child shares the parent's sockets. Closing a connection politely would send Terminate and end
        # the parent's session, and using it would interleave both processes' messages; so each socket's file
        # descriptor is pointed at /dev/null in the child (whatever libpq writes to it later goes nowhere) and
        # the objects are kept referenced. The child opens a pool of its own on first use.
        if os.name != "posix":  # pragma: no cover - no fork elsewhere
            return
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for conn in [*self._known, *others]:
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


__all__ = ["Connector", "PooledDatabase"]
