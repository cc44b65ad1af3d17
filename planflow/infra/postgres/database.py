"""PostgreSQL connections: a ``psycopg_pool.ConnectionPool`` of autocommit connections in UTC.

Units of work begin with ``BEGIN`` (READ COMMITTED: writes lock the rows they touch, and ``FOR UPDATE`` waits
for the holder) or, for reads that must be consistent across statements (a workflow with its tasks),
``BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY``. Serialization failures, deadlocks, lost connections and
server shutdowns surface as :class:`TransientError`, and ``Database.run`` retries the whole unit of work.

JSON columns load as text (a per-connection loader), as they do on SQLite, so the shared codec parses them
once; timestamps load as aware datetimes. The shared SQL's ``?`` placeholders become ``%s`` (cached per
statement text); psycopg prepares a statement on the server after its fifth execution on a connection.
"""

from __future__ import annotations

import math
import time
import weakref
from collections.abc import Generator, Iterable, Mapping
from contextlib import contextmanager
from functools import lru_cache
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool, PoolClosed, PoolTimeout

from planflow.config import PlanflowConfig, redact_url
from planflow.errors import ConfigError, DuplicateError, PlanflowError, TransientError, ValidationError
from planflow.infra.sql.database import (
    Connection,
    Database,
    ForeignKeyViolation,
    Params,
    Row,
    WaitedTooLongError,
)

RawConnection = psycopg.Connection[TupleRow]

#: SQLSTATEs after which running the unit of work again can succeed: serialization failure, deadlock,
#: statement completion unknown, lock not available (lock_timeout), server shutting down or restarting,
#: too many connections. Class 08 (connection exceptions) is transient as a whole.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "40003", "55P03", "57P01", "57P02", "57P03", "53300"})

#: Connection failures worth waiting out (until ``connect_timeout``): the server is not reachable yet, or up
#: but not accepting connections right now. Any other failure to connect is a configuration error.
_WAIT_AND_RETRY = (
    "connection refused",
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


@lru_cache(maxsize=2048)
def to_pyformat(sql: str) -> bytes:
    """The shared SQL (``?`` placeholders) in psycopg's format: ``%s`` placeholders, literal ``%`` doubled."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


@lru_cache(maxsize=256)
def _plain(sql: str) -> bytes:
    # Without parameters psycopg sends the text as it is: no placeholder, no escaping.
    return sql.encode()


def _text(exc: BaseException) -> str:
    """An exception's message on one line (psycopg adds DETAIL and HINT lines)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def translate(exc: psycopg.Error, *, lost: bool = False) -> PlanflowError:
    """The planflow error for a psycopg exception raised by a statement (the caller chains the original).

    Args:
        exc: What psycopg raised.
        lost: The connection is no longer usable (killed, server gone): always transient.
    """
    state = exc.sqlstate or ""
    message = _text(exc)
    if state == "23505":
        return DuplicateError(message)
    if state == "23503":
        return ForeignKeyViolation(f"a referenced row does not exist ({message})")
    if state.startswith(("22", "23")) or (not state and isinstance(exc, psycopg.DataError)):
        return ValidationError(f"rejected by the database: {message}")
    if lost or state in TRANSIENT_SQLSTATES or state.startswith("08"):
        return TransientError(f"PostgreSQL failed transiently ({state or 'connection lost'}): {message}")
    if not state and isinstance(exc, psycopg.OperationalError):
        return TransientError(f"PostgreSQL connection failed: {message}")
    return PlanflowError(f"PostgreSQL error {state or type(exc).__name__}: {message}")


class PostgresConnection(Connection):
    """A pooled psycopg connection as the repositories see it."""

    __slots__ = ("_db", "raw")

    def __init__(self, raw: RawConnection, db: PostgresDatabase) -> None:
        self.raw = raw
        self._db = db

    def _cursor(self, sql: str, params: Params) -> psycopg.Cursor[TupleRow]:
        self._db.statements += 1
        try:
            if params:
                return self.raw.execute(to_pyformat(sql), params)
            return self.raw.execute(_plain(sql))
        except psycopg.Error as exc:
            raise translate(exc, lost=self.raw.closed) from exc

    def execute(self, sql: str, params: Params = ()) -> int:
        return self._cursor(sql, params).rowcount

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        cursor = self._cursor(sql, params)
        try:
            return cursor.fetchone()
        except psycopg.Error as exc:
            raise translate(exc, lost=self.raw.closed) from exc

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        cursor = self._cursor(sql, params)
        try:
            return list(cursor.fetchall())
        except psycopg.Error as exc:
            raise translate(exc, lost=self.raw.closed) from exc

    def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        self._db.statements += 1
        try:
            # psycopg 3 pipelines executemany: one round trip for the whole batch, not one per row.
            with self.raw.cursor() as cursor:
                cursor.executemany(to_pyformat(sql), rows)
        except psycopg.Error as exc:
            raise translate(exc, lost=self.raw.closed) from exc

    def execute_script(self, script: str) -> None:
        self._db.statements += 1
        try:
            # No parameters: the simple query protocol, which runs several statements in one call.
            self.raw.execute(script.encode(), prepare=False)
        except psycopg.Error as exc:
            raise translate(exc, lost=self.raw.closed) from exc


def _url_password(url: str) -> str | None:
    """The password of a URL, read without libpq (which may reject the URL), to scrub it from messages."""
    try:
        return urlsplit(url).password
    except ValueError:
        return None


#: Seconds after its last use during which a pooled connection is lent without a check round trip.
CHECK_AFTER_IDLE = 1.0


def _configure(raw: RawConnection) -> None:
    # JSON as text, like SQLite: the shared codec parses it once. Per connection, never psycopg's globals.
    raw.adapters.register_loader("json", TextLoader)
    raw.adapters.register_loader("jsonb", TextLoader)


class PostgresDatabase(Database):
    """A PostgreSQL database reached through a connection pool.

    Opening checks the server at once: a refused login or a missing database is a :class:`ConfigError`, a
    server that stays unreachable for ``config.connect_timeout`` seconds a :class:`TransientError`. No message
    carries the password.
    """

    #: psycopg pipelines ``executemany``: rows built on demand overlap with the server's work on earlier ones.
    streams_parameters = True

    def __init__(self, config: PlanflowConfig) -> None:
        super().__init__(config.retry)
        self._config = config
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
        self._returned: weakref.WeakKeyDictionary[RawConnection, float] = weakref.WeakKeyDictionary()
        deadline = time.monotonic() + config.connect_timeout
        self._probe(deadline)
        self._pool: ConnectionPool[RawConnection] = ConnectionPool(
            url,
            kwargs={"autocommit": True, **self._settings},
            min_size=config.pool_min_size,
            max_size=config.pool_max_size,
            open=False,
            configure=_configure,
            check=self._check,
            name="planflow",
            timeout=config.pool_timeout,
            max_lifetime=config.pool_max_lifetime,
            max_idle=config.pool_max_idle,
        )
        try:
            self._pool.open(wait=True, timeout=max(deadline - time.monotonic(), 0.1))
        except PoolTimeout as exc:
            self._pool.close()
            raise TransientError(
                f"PostgreSQL at {self._location} did not provide {config.pool_min_size} connections within "
                f"connect_timeout={config.connect_timeout}s"
            ) from exc

    def _connection_settings(self, params: Mapping[str, object]) -> dict[str, str | int]:
        """Connection parameters on top of the URL's: UTC, a connect timeout, an application name."""
        options = f"{params.get('options') or ''} -c TimeZone=UTC".strip()
        settings: dict[str, str | int] = {"options": options}
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

    def _connect_error(self, exc: psycopg.Error) -> PlanflowError:
        if not isinstance(exc, psycopg.ProgrammingError):
            lowered = str(exc).lower()
            if any(reason in lowered for reason in _WAIT_AND_RETRY):
                return self._scrubbed(
                    TransientError,
                    f"cannot reach PostgreSQL at {self._location} within "
                    f"connect_timeout={self._config.connect_timeout}s",
                    exc,
                )
        return self._scrubbed(ConfigError, f"cannot connect to PostgreSQL at {self._location}", exc)

    def _probe(self, deadline: float) -> None:
        """Connect once, retrying while the server is unreachable until ``deadline``, to fail fast and clearly."""
        delay = 0.05
        while True:
            remaining = deadline - time.monotonic()
            settings = {**self._settings}
            if "connect_timeout" in settings:
                settings["connect_timeout"] = max(2, math.ceil(remaining))
            try:
                psycopg.connect(make_conninfo(self._conninfo, **settings)).close()
            except psycopg.Error as exc:
                error = self._connect_error(exc)
                remaining = deadline - time.monotonic()
                if isinstance(error, ConfigError) or remaining <= 0:
                    raise error from exc
                time.sleep(min(delay, remaining))
                delay = min(delay * 2, 1.0)
            else:
                return

    @contextmanager
    def _connect(self) -> Generator[Connection, None, None]:
        try:
            raw = self._pool.getconn(timeout=self._config.pool_timeout)
        except PoolClosed as exc:
            raise PlanflowError("the provider is closed") from exc
        except PoolTimeout as exc:
            raise WaitedTooLongError(
                f"no PostgreSQL connection became free within pool_timeout={self._config.pool_timeout}s "
                f"(pool_max_size={self._config.pool_max_size})"
            ) from exc
        try:
            yield PostgresConnection(raw, self)
        finally:
            # The pool rolls back a connection returned inside a transaction and replaces a broken one.
            self._returned[raw] = time.monotonic()
            self._pool.putconn(raw)

    def _check(self, raw: RawConnection) -> None:
        """Check a connection before lending it, unless it was in use a moment ago.

        A round trip per checkout would cost as much as a point read; a connection returned within
        ``CHECK_AFTER_IDLE`` seconds was just working, and should the server have gone in that moment the
        operation fails as a TransientError and is retried on a fresh connection.
        """
        returned = self._returned.get(raw)
        if returned is None or time.monotonic() - returned > CHECK_AFTER_IDLE:
            ConnectionPool.check_connection(raw)

    def _begin(self, connection: Connection, *, write: bool) -> None:
        connection.execute("BEGIN" if write else "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")

    def close(self) -> None:
        self._pool.close()
