"""One listening connection per provider, shared by every ``tasks.wait_for_work`` waiter of it.

Waiting for work costs no connection of the pool and no new connection per call: the provider keeps one
connection that LISTENs on the schema's work channel (NOTIFY is sent by the transaction that makes a task
PENDING, see migration 0006), opened by the first waiter and kept until the provider closes. One waiter at a
time reads from it (the *reader*); the others wait on a :class:`~planflow.infra.postgres.io.Signal` whose
generation the reader bumps for every notification, and one of them takes over reading when the reader's own
wait ends. Notifications that arrive while nobody reads stay in the connection's buffer until the next reader.

A broken listening connection (a server restart, a killed backend) is closed and the generation bumped, so that
every waiter looks for work again (notifications may have been missed meanwhile); the next reader opens a new
one. Waiters look for work after their watch began, and watching begins only once the connection LISTENs, so
no commit falls between the two.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import suppress

import psycopg

from planflow.infra.postgres.io import Raw, Signal

#: Longest one reader reads before letting another waiter take over (and look at its own deadline).
READ_SLICE = 1.0


class SharedListener:
    """The provider's listening connection and the signal its waiters wait on (see the module docstring)."""

    def __init__(self, signal: Signal, connect: Callable[[], Awaitable[Raw]]) -> None:
        self.signal = signal
        self._connect = connect
        self._raw: Raw | None = None

    async def listening(self) -> int:
        """Make sure the connection LISTENs; the generation to wait from.

        Raises:
            psycopg.Error: the connection could not be opened (the caller translates it).
        """
        while self._raw is None:
            if not self.signal.lead():
                await self.signal.wait(self.signal.generation, READ_SLICE)
                continue
            try:
                await self._open()
            finally:
                self.signal.resign()
        return self.signal.generation

    async def _open(self) -> None:
        if self._raw is not None:
            return
        raw = await self._connect()
        try:
            row = await raw.script(b"SELECT 'planflow_work_' || md5(current_schema())")
            assert row is not None
            # The channel is an identifier: a hex digest cannot need quoting, but it is quoted anyway.
            await raw.script(f'LISTEN "{row[0]}"'.encode())
        except BaseException:
            await raw.close()
            raise
        self._raw = raw
        self.signal.bump()  # notifications before this were not heard: every waiter looks again

    async def wait(self, seen: int, seconds: float) -> None:
        """Return after at most ``seconds``, or sooner once the generation moved past ``seen`` (a notification
        arrived, or the connection was replaced: either way the waiter looks for work again).

        Raises:
            psycopg.Error: a new listening connection could not be opened.
        """
        deadline = time.monotonic() + seconds
        signal = self.signal
        while signal.generation == seen:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not signal.lead():
                await signal.wait(seen, remaining)
                continue
            try:
                await self._read(min(remaining, READ_SLICE))
            finally:
                signal.resign()

    async def _read(self, seconds: float) -> None:
        """As the reader: open the connection if there is none, then read at most one notification."""
        if self._raw is None:
            await self._open()
            return
        try:
            if await self._raw.notified(seconds):
                self.signal.bump()
        except psycopg.Error:
            await self.drop()
            self.signal.bump()

    async def drop(self) -> None:
        """Close the connection (a broken one, or at the provider's close); the next reader opens another."""
        raw, self._raw = self._raw, None
        if raw is not None:
            with suppress(psycopg.Error):
                await raw.close()

    def abandon(self) -> Raw | None:
        """In a child after ``fork()``: forget the connection without using or closing it; returns it."""
        raw, self._raw = self._raw, None
        return raw
