"""Reads on standbys (``read_url``): which reads a standby may serve now, with read-your-writes.

Reads made outside a transaction are lent a connection of the standby pool (``PostgresDatabase.
acquire_for_read``); writes, claims and every read inside a transaction stay on the primary. Whether a standby
connection may serve a read is decided here, once for every repository and both APIs:

- **After a write of the caller** (its context: the thread, or the asyncio task and the tasks it starts
  afterwards): each write that commits on the primary notes the primary's WAL insert position, read after its
  commit (:meth:`Standbys.note`). A later read waits until the standby has replayed that position
  (``pg_last_wal_replay_lsn()``), for at most ``standby_wait``, and otherwise reads from the primary: it never
  sees data older than the caller's own write. The insert position is at or past the end of the commit record
  (it may include later WAL of other sessions: waiting for it is conservative, never wrong).
- **Following no write** (and after one as well): the standby serves the read if its replay lag is within
  ``max_staleness``: zero while it has replayed all the WAL it received and its WAL receiver runs (an idle
  primary sends nothing, so the time since the last replayed transaction does not measure lag then), else
  ``now()`` against the time of the last transaction replayed.

What a standby connection last reported is kept per connection, so that most reads cost no check: a replay
position only grows, and a lag measured at ``t0`` is at most ``lag + (t - t0)`` at ``t``. A standby that is down,
or lagging beyond the bounds, is skipped for :data:`RECHECK_AFTER` seconds with one log line (WARNING on
``planflow.postgres``, and INFO when it serves reads again), never an error. A server of ``read_url`` that is
not in recovery (the primary itself, or a promoted standby) is always fresh.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
import weakref
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from planflow.config import PlanflowConfig, standby_conninfo
from planflow.errors import ConfigError, PlanflowError
from planflow.infra.postgres.connection import PostgresConnection
from planflow.infra.sql.database import Connection

if TYPE_CHECKING:
    from planflow.infra.postgres.database import PostgresDatabase

logger = logging.getLogger("planflow.postgres")

#: The primary's WAL insert position as a number of bytes, read after a commit.
WRITTEN_POSITION = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8"
#: What a standby says of itself: in recovery, the position it has replayed, and its replay lag in seconds.
REPLAY_STATE = (
    "SELECT pg_is_in_recovery(), COALESCE((pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8, 0), "
    "CASE WHEN NOT pg_is_in_recovery() THEN 0.0::float8 "
    "WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() "
    "AND EXISTS (SELECT FROM pg_stat_wal_receiver WHERE pid IS NOT NULL) THEN 0.0::float8 "
    "ELSE COALESCE(EXTRACT(epoch FROM now() - pg_last_xact_replay_timestamp())::float8, 'Infinity') END"
)
#: Seconds a standby found down or lagging is skipped before it is tried again.
RECHECK_AFTER = 2.0
#: Seconds a read waits at most for a free standby connection (or a new one) before it reads on the primary.
STANDBY_POOL_TIMEOUT = 0.5
#: Seconds the reads of a context stay on the primary after a write of it whose position is unknown (its reply
#: was lost and the commit learned otherwise, or the position could not be read).
PIN_AFTER_UNKNOWN = 10.0
#: First and longest pause between two looks at a standby's replay position while a read waits for it.
FIRST_POLL = 0.001
LONGEST_POLL = 0.016


def standby_config(config: PlanflowConfig) -> PlanflowConfig:
    """The settings of the standby pool: ``read_url`` as its URL, read-only sessions, short waits."""
    assert config.read_url is not None
    return dataclasses.replace(
        config,
        url=standby_conninfo(config.read_url).conninfo,
        read_url=None,
        read_only=True,
        pool_timeout=min(config.pool_timeout, STANDBY_POOL_TIMEOUT),
        connect_timeout=min(config.connect_timeout, 2.0),
    )


class _Written:
    """The newest WAL position written by one context (and the tasks it started after it first read or wrote)."""

    __slots__ = ("_lock", "pinned_until", "position")

    def __init__(self) -> None:
        self.position = 0
        self.pinned_until = -math.inf
        self._lock = threading.Lock()

    def advance(self, position: int) -> None:
        with self._lock:  # threads handed a copy of the context share this
            self.position = max(self.position, position)

    def pin(self) -> None:
        self.pinned_until = time.monotonic() + PIN_AFTER_UNKNOWN


@dataclass(slots=True)
class _Seen:
    """What a standby connection last reported: replayed position, lag, and when (``time.monotonic``)."""

    position: float
    lag: float
    at: float


class Standbys:
    """The standby pool of ``read_url`` and the rule deciding whether it serves a read now (module docstring)."""

    def __init__(self, database: PostgresDatabase, config: PlanflowConfig) -> None:
        #: The standby pool (a database of its own: its connections, its checks, its losses).
        self.database = database
        self._max_staleness = config.max_staleness
        self._wait = config.standby_wait
        self._written: ContextVar[_Written | None] = ContextVar(f"planflow_written_{id(self)}", default=None)
        self._seen: weakref.WeakKeyDictionary[Any, _Seen] = weakref.WeakKeyDictionary()
        self._skip_until = -math.inf
        #: Reads that follow a write skip the standby until then (it did not replay one within standby_wait).
        self._behind_until = -math.inf
        #: Why the standby is being skipped, while it is (logged once when it starts, once when it ends).
        self._skipping: str | None = None

    async def open(self) -> None:
        """Open the standby pool without waiting for the standby: one that does not answer now is skipped.

        Raises:
            ConfigError: the standby refuses the login or has no such database.
        """
        try:
            failure = await self.database.start()
        except ConfigError as exc:
            raise ConfigError(f"read_url: {exc}") from exc
        if failure is not None:
            self._skip(f"it did not answer ({failure})")

    # Writes --------------------------------------------------------------------------------------------------

    def _context(self) -> _Written:
        written = self._written.get()
        if written is None:
            written = _Written()
            self._written.set(written)
        return written

    async def note(self, connection: Connection) -> None:
        """A write of this context committed on ``connection`` (the primary's): remember where its WAL ends.

        Costs one round trip. Never raises: the write is done; should the position be unreadable, this
        context's reads stay on the primary for :data:`PIN_AFTER_UNKNOWN` seconds.
        """
        try:
            row = await connection.fetch_one(WRITTEN_POSITION)
        except PlanflowError:
            self.pin()
            return
        assert row is not None
        self.noted(int(row[0]))

    def noted(self, position: int) -> None:
        """A write of this context committed; the primary's WAL insert position after it is ``position``."""
        self._context().advance(position)

    def pin(self) -> None:
        """A write of this context committed at a position not known: its reads go to the primary a while."""
        self._context().pin()

    # Reads ---------------------------------------------------------------------------------------------------

    async def lend(self) -> Connection | None:
        """A standby connection that may serve a read of this context now, or None (read on the primary).

        Never raises for the standby's sake: a standby that is down or lagging is skipped.
        """
        now = time.monotonic()
        if now < self._skip_until:
            return None
        written = self._written.get()
        if written is not None and now < written.pinned_until:
            return None
        if written is not None and written.position == 0:
            written = None  # pinned once, never a position: a read that follows no known write
        if written is not None and now < self._behind_until:
            return None
        try:
            connection = await self.database.acquire()
        except (PlanflowError, psycopg.Error) as exc:
            self._skip(f"no connection to it ({exc})")
            return None
        try:
            # After a write, the standby must have replayed it, and be within max_staleness of the primary too (a
            # write long past says nothing of what others wrote since); the second look is usually from the cache.
            fresh = (
                written is None or await self._replayed(connection, written.position)
            ) and await self._recent(connection)
        except PlanflowError as exc:
            await self.database.release(connection)
            self._skip(f"it failed ({exc})")
            return None
        if not fresh:
            await self.database.release(connection)
            return None
        if self._skipping is not None:
            logger.info("the standby at %s serves reads again", self.database.location)
            self._skipping = None
        return connection

    async def _look(self, connection: Connection) -> _Seen:
        row = await connection.fetch_one(REPLAY_STATE)
        assert row is not None and isinstance(connection, PostgresConnection)
        in_recovery, position, lag = row
        seen = _Seen(float(position) if in_recovery else math.inf, float(lag), time.monotonic())
        self._seen[connection.raw.conn] = seen
        return seen

    async def _replayed(self, connection: Connection, position: int) -> bool:
        """Whether the standby of ``connection`` has replayed ``position``, waiting up to ``standby_wait``."""
        assert isinstance(connection, PostgresConnection)
        seen = self._seen.get(connection.raw.conn)
        if seen is not None and seen.position >= position:
            return True
        deadline = time.monotonic() + self._wait
        pause = FIRST_POLL
        while True:
            seen = await self._look(connection)
            if seen.position >= position:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._behind_until = time.monotonic() + RECHECK_AFTER
                self._note_skipping(
                    f"it did not replay a write of this process within standby_wait={self._wait}s "
                    f"(lag {seen.lag:.3f}s)",
                    level=logging.INFO,
                )
                return False
            await self.database.sleep(min(pause, remaining))
            pause = min(pause * 2, LONGEST_POLL)

    async def _recent(self, connection: Connection) -> bool:
        """Whether the standby of ``connection`` lags at most ``max_staleness`` seconds."""
        assert isinstance(connection, PostgresConnection)
        seen = self._seen.get(connection.raw.conn)
        if seen is not None and seen.lag + (time.monotonic() - seen.at) <= self._max_staleness:
            return True
        seen = await self._look(connection)
        if seen.lag <= self._max_staleness:
            return True
        self._skip(f"it lags {seen.lag:.3f}s behind the primary (max_staleness={self._max_staleness}s)")
        return False

    def _skip(self, why: str) -> None:
        self._skip_until = time.monotonic() + RECHECK_AFTER
        self._note_skipping(why, level=logging.WARNING)

    def _note_skipping(self, why: str, *, level: int) -> None:
        if self._skipping is None:
            logger.log(
                level,
                "the standby at %s is skipped, reads go to the primary: %s",
                self.database.location,
                why,
                extra={"planflow_driver": "postgres", "planflow_standby": self.database.location},
            )
        self._skipping = why

    async def aclose(self) -> None:
        """Close the standby pool."""
        await self.database.aclose()


__all__ = ["Standbys", "standby_config"]
