"""Commit tokens: how a unit of work whose COMMIT lost its connection learns whether it committed.

A write unit records a commit token (a row of ``planflow_commits``) in the same round trip as its ``BEGIN``; a
single write statement inserts one in a first CTE (:func:`with_token`). Should the reply to COMMIT be lost,
:class:`CommitResolver` asks the server on a new connection whether that token was committed, so that a unit
is never applied twice. (The transaction's id would not do: after a crash the server may give an id that
never reached the WAL to a new transaction, and report that one's outcome.) Every process deletes expired
tokens now and then (:class:`TokenCleanup`), so the table stays bounded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache

import psycopg

from planflow.errors import CommitUnknownError
from planflow.infra.postgres.errors import one_line
from planflow.infra.postgres.io import Raw
from planflow.infra.sql.database import Connection, ConnectionLostError

logger = logging.getLogger("planflow.postgres")

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


@lru_cache(maxsize=512)
def with_token(sql: str) -> str:
    """``sql`` with a first CTE inserting a commit token (its first parameter), committed with it or not at all."""
    head = "WITH planflow_token AS (INSERT INTO planflow_commits (token) VALUES (?)) "
    if sql.startswith("WITH "):
        return f"{head[:-1]}, {sql[5:]}"
    return head + sql


@dataclass(frozen=True, slots=True)
class CommitTicket:
    """What a write unit needs to learn its outcome: its commit token, the backend that ran it, and when it
    began (``time.monotonic()``): a token older than :data:`TOKEN_KEPT` may have been deleted."""

    token: str
    backend_pid: int | None
    began: float


class TokenCleanup:
    """Deletes a bounded batch of expired commit tokens on this process's first token and every
    :data:`TOKEN_CLEANUP_EVERY` th after, so that every process, however short-lived, keeps the table
    bounded."""

    __slots__ = ("_units",)

    def __init__(self) -> None:
        self._units = 0

    async def now_and_then(self, connection: Connection) -> None:
        """Count one token written on ``connection``; delete a batch of expired ones when it is time."""
        self._units += 1
        if self._units % TOKEN_CLEANUP_EVERY == 1:
            await connection.execute(DELETE_OLD_TOKENS)


class CommitResolver:
    """Learns the outcome of units whose COMMIT lost its connection (see the module docstring).

    Args:
        connect: A new autocommit connection outside the pool, with a short connect timeout.
        sleep: How to wait between attempts (blocking or asyncio).
        connect_timeout: The configuration's: how long a server that is away is waited for (2 s at least).
        location: The server, without its password, for messages.
        pgbouncer: Behind PgBouncer, whose backend pids are not the server's: no backend is terminated.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[Raw]],
        sleep: Callable[[float], Awaitable[None]],
        *,
        connect_timeout: float,
        location: str,
        pgbouncer: bool,
    ) -> None:
        self._connect = connect
        self._sleep = sleep
        self._connect_timeout = connect_timeout
        self._location = location
        self._pgbouncer = pgbouncer

    async def committed(self, ticket: CommitTicket, lost: ConnectionLostError) -> bool:
        """Whether the unit of ``ticket``, whose COMMIT lost its connection, committed.

        On a new connection, inserts the unit's token again (then rolls that back): the insert conflicts with
        the token if the unit committed, succeeds if it did not, and waits while the unit's transaction still
        runs on its old backend (which may not have noticed its client is gone: after a second that backend is
        terminated, which settles it). A server that is away is waited for, up to ``connect_timeout``.

        Raises:
            CommitUnknownError: no answer within ``connect_timeout``.
        """
        started = time.monotonic()
        # Past this the token may have been deleted by a cleanup, and its absence would read as "not committed".
        trusted_until = ticket.began + TOKEN_KEPT - TOKEN_MARGIN
        deadline = min(started + max(self._connect_timeout, 2.0), trusted_until)
        delay = 0.02
        why = "the server did not answer"
        while True:
            try:
                committed = await self._probe_token(ticket, terminate=time.monotonic() - started > 1.0)
            except (psycopg.Error, OSError) as exc:
                why = one_line(exc)
            else:
                if committed is not None:
                    outcome = "committed" if committed else "aborted"
                    logger.warning(
                        "the connection was lost during COMMIT; the unit of work had %s",
                        outcome,
                        extra={"planflow_commit_token": ticket.token, "planflow_outcome": outcome},
                    )
                    return committed
                why = "its transaction was still running"
            if time.monotonic() >= deadline:
                raise CommitUnknownError(
                    f"the connection to PostgreSQL at {self._location} was lost while COMMIT was in flight, and "
                    f"whether the unit of work committed could not be learned ({why}); it was not run again"
                ) from lost
            await self._sleep(delay)
            delay = min(delay * 2, 0.25)

    async def _probe_token(self, ticket: CommitTicket, *, terminate: bool) -> bool | None:
        """True: the unit committed; False: it did not; None: its transaction still holds the token."""
        raw = await self._connect()
        try:
            if terminate and ticket.backend_pid and not self._pgbouncer:
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


__all__ = [
    "DELETE_OLD_TOKENS",
    "INSERT_TOKEN",
    "TOKEN_CLEANUP_BATCH",
    "CommitResolver",
    "CommitTicket",
    "TokenCleanup",
    "with_token",
]
