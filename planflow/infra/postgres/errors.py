"""PostgreSQL errors as planflow errors: :func:`translate` for what a statement raised."""

from __future__ import annotations

import psycopg

from planflow.errors import (
    DatabaseError,
    DuplicateError,
    PlanflowError,
    ReadOnlyError,
    TransientError,
    ValidationError,
)
from planflow.infra.sql.database import ConnectionLostError, ForeignKeyViolation

#: SQLSTATEs after which running the unit of work again can succeed: serialization failure, deadlock,
#: statement completion unknown, lock not available (lock_timeout), server shutting down or restarting,
#: too many connections. Class 08 (connection exceptions) is transient as a whole.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "40003", "55P03", "57P01", "57P02", "57P03", "53300"})


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (psycopg adds DETAIL and HINT lines)."""
    return " ".join(part.strip() for part in str(exc).splitlines() if part.strip())


def translate(exc: psycopg.Error, *, lost: bool = False) -> PlanflowError:
    """The planflow error for a psycopg exception raised by a statement (the caller chains the original).

    Args:
        exc: What psycopg raised.
        lost: The connection is no longer usable (killed, server gone): always transient, and in doubt.
    """
    state = exc.sqlstate or ""
    message = one_line(exc)
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


__all__ = ["one_line", "translate"]
