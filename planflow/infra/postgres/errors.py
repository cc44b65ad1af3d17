"""PostgreSQL errors as planflow errors: :func:`translate` for what a statement raised."""

from __future__ import annotations

import psycopg
from psycopg import errors as pg

from planflow.errors import (
    DatabaseError,
    DuplicateError,
    PlanflowError,
    ReadOnlyError,
    TransientError,
    ValidationError,
)
from planflow.infra.sql.database import ConnectionLostError, ForeignKeyViolation

#: After these, running the unit of work again can succeed: serialization failure, deadlock, statement
#: completion unknown, lock not available (lock_timeout), too many connections.
TRANSIENT = (
    pg.SerializationFailure,
    pg.DeadlockDetected,
    pg.StatementCompletionUnknown,
    pg.LockNotAvailable,
    pg.TooManyConnections,
)
#: The connection is gone: the server is shutting down or restarting, or a connection exception (SQLSTATE
#: class 08, transient as a whole; psycopg gives each of its codes a class of its own, not a common base).
CONNECTION_GONE = (
    pg.AdminShutdown,
    pg.CrashShutdown,
    pg.CannotConnectNow,
    pg.ConnectionException,
    pg.SqlclientUnableToEstablishSqlconnection,
    pg.ConnectionDoesNotExist,
    pg.SqlserverRejectedEstablishmentOfSqlconnection,
    pg.ConnectionFailure,
    pg.TransactionResolutionUnknown,
    pg.ProtocolViolation,
)


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (psycopg adds DETAIL and HINT lines)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def translate(exc: psycopg.Error, *, lost: bool = False) -> PlanflowError:
    """The planflow error for a psycopg exception raised by a statement (the caller chains the original).

    Args:
        exc: What psycopg raised.
        lost: The connection is no longer usable (killed, server gone): always transient, and in doubt.
    """
    message = one_line(exc)
    if isinstance(exc, pg.UniqueViolation):
        return DuplicateError(message)
    if isinstance(exc, pg.ForeignKeyViolation):
        return ForeignKeyViolation(f"a referenced row does not exist ({message})")
    if isinstance(exc, pg.ReadOnlySqlTransaction):
        return ReadOnlyError(f"the PostgreSQL session is read-only: {message}")
    # Integrity constraints (class 23) and bad data (class 22, or refused by psycopg before it was sent).
    if isinstance(exc, psycopg.IntegrityError | psycopg.DataError):
        return ValidationError(f"rejected by the database: {message}")
    if lost or isinstance(exc, CONNECTION_GONE):
        return ConnectionLostError(f"PostgreSQL connection lost ({exc.sqlstate or 'closed'}): {message}")
    if isinstance(exc, TRANSIENT):
        return TransientError(f"PostgreSQL failed transiently ({exc.sqlstate}): {message}")
    if exc.sqlstate is None and isinstance(exc, psycopg.OperationalError):
        # Raised by psycopg or libpq themselves, not by the server: the connection failed.
        return ConnectionLostError(f"PostgreSQL connection failed: {message}")
    return DatabaseError(f"PostgreSQL error {exc.sqlstate or type(exc).__name__}: {message}")


__all__ = ["one_line", "translate"]
