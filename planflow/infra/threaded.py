"""The asynchronous API over a blocking driver (SQLite, TinyDB): its core's calls run on worker threads.

The driver's core is written as coroutines that never suspend (sqlite3 and TinyDB block); each call's
coroutine is checked on the event loop (by the generated ``Threaded*`` adapters) and then driven to its end on a
worker thread (``planflow.infra.drive``). ``Lanes`` is a bounded set of worker threads, so that a burst of coroutines waits for a free lane (on the event
loop, without blocking it) instead of opening ever more connections. A call borrows a free lane for its
duration. A transaction, a batch or an iterator *pins* one lane for its whole life: every call its task makes
inside it runs on that lane, in that lane's own ``contextvars`` context, so the blocking driver sees one thread
doing one unit of work, exactly as its synchronous API does (SQLite's transaction of the thread, TinyDB's lock
held by the thread that took it). A task started inside a transaction does not inherit its pin.

SQLite in WAL mode lets readers run beside the writer: reads borrow other lanes and run in parallel with a
pinned write transaction.

A coroutine cancelled while its call runs on a lane stops the call where the driver can stop it (SQLite: a wait
for its write lock, a statement other than a COMMIT; see ``SqliteDatabase.interrupt``), and the cancellation
propagates once the call has ended: a write it started has committed or not by then, and nothing of it runs on
behind the caller's back. A transaction cancelled inside its block is rolled back; one cancelled while its
COMMIT runs may have committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar, cast

from planflow.errors import ClosedError
from planflow.infra.backends import Core, Keys, adapted
from planflow.infra.drive import drive
from planflow.infra.shielding import finish_then_cancel, settled
from planflow.infra.sql.database import Interruptible
from planflow.migration_records import Migration, MigrationStatus

T = TypeVar("T")
P = TypeVar("P")

#: Lanes of a provider unless the config says otherwise (``pool_max_size``).
DEFAULT_LANES = 8


class _Lane:
    """One worker thread and its queue of calls."""

    def __init__(self, lanes: Lanes, number: int) -> None:
        self._lanes = lanes
        self._queue: queue.SimpleQueue[
            tuple[asyncio.Future[Any], contextvars.Context, Callable[[], Any]] | None
        ] = queue.SimpleQueue()
        self.pinned = False
        self.inflight = 0
        #: The future of the call running on the thread (None between calls), and the lock that makes "is this
        #: call still running" and "interrupt it" one step.
        self._running: asyncio.Future[Any] | None = None
        self._guard = threading.Lock()
        self._interrupted = False
        self._thread = threading.Thread(target=self._serve, name=f"planflow-lane-{number}", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        loop = self._lanes.loop
        while (item := self._queue.get()) is not None:
            future, context, call = item
            result: object = None
            error: BaseException | None = None
            self._running = future
            try:
                result = context.run(call)
            except BaseException as exc:  # handed to the awaiting coroutine
                error = exc
            with self._guard:
                self._running = None
                if self._interrupted:
                    self._interrupted = False
                    interruptible = self._lanes.interruptible
                    assert interruptible is not None
                    interruptible.settle(threading.get_ident())
            try:
                loop.call_soon_threadsafe(self._lanes.finished, self, future, result, error)
            except RuntimeError:  # the loop has closed: nobody waits for this call any more
                return

    def _interrupt(self, future: asyncio.Future[Any]) -> None:
        """Stop the call of ``future`` part way, if it still runs and the backend can stop it."""
        interruptible = self._lanes.interruptible
        if interruptible is None:
            return
        with self._guard:
            if self._running is future and self._thread.ident is not None:
                self._interrupted = True
                interruptible.interrupt(self._thread.ident)

    async def call(self, call: Callable[[], T], context: contextvars.Context) -> T:
        future: asyncio.Future[T] = self._lanes.loop.create_future()
        self.inflight += 1
        self._queue.put((future, context, call))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            if future.done():
                raise
            # A thread cannot be cancelled: the call is stopped where the backend can stop it (a wait for a lock,
            # a statement other than a COMMIT), and the cancellation propagates once the call has ended, its
            # outcome settled. Nothing it started runs on behind the caller's back.
            self._interrupt(future)
            await settled(future)
            raise

    def stop(self) -> None:
        self._queue.put(None)


class Pin:
    """A lane held by one task for a transaction, a batch or an iterator, with its own context."""

    def __init__(self, lanes: Lanes, lane: _Lane, owner: asyncio.Task[Any] | None) -> None:
        self.lanes = lanes
        self.lane = lane
        self.owner = owner
        self.context = contextvars.Context()
        self.depth = 0

    async def call(self, call: Callable[[], T]) -> T:
        return await self.lane.call(call, self.context)


_pin: contextvars.ContextVar[Pin | None] = contextvars.ContextVar("planflow_lane_pin", default=None)


class Lanes:
    """A bounded set of worker threads for one event loop (see the module docstring)."""

    def __init__(self, size: int) -> None:
        self.loop = asyncio.get_running_loop()
        #: What stops a call whose caller was cancelled, when the blocking backend can (set once it is open).
        self.interruptible: Interruptible | None = None
        self._free: asyncio.Queue[_Lane] = asyncio.Queue()
        self._lanes = [_Lane(self, number) for number in range(size)]
        for lane in self._lanes:
            self._free.put_nowait(lane)
        self._closed = False
        #: Whether point reads run on the event loop (see :meth:`read`): set for a store whose reads never wait.
        self.inline_reads = False

    def finished(
        self, lane: _Lane, future: asyncio.Future[Any], result: object, error: BaseException | None
    ) -> None:
        """On the loop: hand a call's outcome over, and free its lane once idle and unpinned."""
        lane.inflight -= 1
        if not future.done():  # a cancelled caller has gone
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
        if lane.inflight == 0 and not lane.pinned:
            self._free.put_nowait(lane)

    def current_pin(self) -> Pin | None:
        """The pin of the running task, if it holds one (a copy inherited by a child task does not count)."""
        pin = _pin.get()
        if pin is None or pin.lanes is not self or pin.owner is not asyncio.current_task():
            return None
        return pin

    async def call(self, call: Callable[[], T]) -> T:
        """Run ``call`` on the task's pinned lane, else on a free lane (waiting for one on the loop)."""
        pin = self.current_pin()
        if pin is not None:
            return await pin.call(call)
        if self._closed:
            raise ClosedError("the provider is closed")
        lane = await self._free.get()
        return await lane.call(call, contextvars.Context())

    async def pin(self) -> Pin:
        """The running task's pin, or a new one on a free lane; undo with :meth:`unpin`."""
        pin = self.current_pin()
        if pin is None:
            if self._closed:
                raise ClosedError("the provider is closed")
            lane = await self._free.get()
            lane.pinned = True
            pin = Pin(self, lane, asyncio.current_task())
            _pin.set(pin)
        pin.depth += 1
        return pin

    def unpin(self, pin: Pin) -> None:
        """Release one level of ``pin``; the lane returns to the free ones after the outermost."""
        pin.depth -= 1
        if pin.depth:
            return
        if _pin.get() is pin:
            _pin.set(None)
        pin.lane.pinned = False
        if pin.lane.inflight == 0:
            self._free.put_nowait(pin.lane)

    async def run(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work``, a coroutine of a blocking core (one that never suspends), to its end on a lane."""
        if self._closed and self.current_pin() is None:
            work.close()
            raise ClosedError("the provider is closed")
        return await self.call(partial(drive, work))

    async def read(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work``, a point read of a blocking core (one record by its key), at once on the event loop when
        :attr:`inline_reads` (a SQLite file in WAL mode: its readers never wait for a writer, and take no lock of
        this process), outside the task's transaction; else like :meth:`run`.

        A SQLite point read costs about 15 µs, less than handing it to a lane and back (the thread switches,
        about 50 µs on a busy two-core machine), and holds the loop no longer than a callback does; listings,
        iterators and writes, which may take longer or wait for the turn to write, always go to a lane.
        """
        if self.inline_reads and not self._closed and self.current_pin() is None:
            return drive(work)
        return await self.run(work)

    @asynccontextmanager
    async def pinned(self, manager: AbstractAsyncContextManager[T]) -> AsyncGenerator[T, None]:
        """``async with`` over a blocking core's context manager (a transaction, a batch), entered and left on one
        lane, which every call of the block's task runs on."""
        pin = await self.pin()
        try:
            try:
                value = await pin.call(partial(drive, manager.__aenter__()))
            except asyncio.CancelledError as exc:
                # Entered anyway (a thread is not interrupted): leave again at once, on the same lane, or the
                # transaction would stay open there, holding its locks.
                error = exc
                with suppress(Exception):
                    await finish_then_cancel(
                        pin.call(partial(drive, manager.__aexit__(type(error), error, None)))
                    )
                raise
            try:
                yield value
            except BaseException as exc:
                error = exc
                if not await finish_then_cancel(
                    pin.call(partial(drive, manager.__aexit__(type(error), error, error.__traceback__)))
                ):
                    raise
            else:
                await finish_then_cancel(pin.call(partial(drive, manager.__aexit__(None, None, None))))
        finally:
            self.unpin(pin)

    async def iterate(self, items: AsyncIterator[T]) -> AsyncIterator[T]:
        """The items of a blocking core's asynchronous iterator, each step on one pinned lane."""
        pin = await self.pin()
        done = object()
        try:
            while (item := await pin.call(partial(_step, items, done))) is not done:
                yield cast(T, item)
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                await pin.call(partial(drive, close()))
            self.unpin(pin)

    async def sliced(self, wait: Callable[..., Coroutine[Any, Any, bool]], timeout: float) -> bool:
        """``wait(timeout=...)`` (a blocking core's wait, such as ``wait_for_work``) as a series of waits of at
        most :data:`WAIT_SLICE` seconds, each on a lane borrowed for it: a waiting worker never holds one of the
        few lanes for its whole timeout. True as soon as one returns True; False once ``timeout`` has passed.
        A ``timeout`` that is not a number of seconds goes to ``wait`` as it is, to be refused there."""
        given = cast(object, timeout)  # a caller may pass anything
        if isinstance(given, bool) or not isinstance(given, int | float) or not 0 <= given < math.inf:
            return await self.run(wait(timeout=timeout))
        deadline = time.monotonic() + timeout
        piece = min(timeout, WAIT_SLICE)
        while True:
            if await self.run(wait(timeout=piece)):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            piece = min(remaining, WAIT_SLICE)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop every lane, once the calls still running on them (a cancelled caller's, say) are done."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while any(lane.inflight for lane in self._lanes) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for lane in self._lanes:
            lane.stop()


def _step(items: AsyncIterator[T], done: object) -> T | object:
    """The next item of ``items`` (a core's iterator, whose steps never suspend), or ``done`` after the last."""
    try:
        return drive(items.__anext__())
    except StopAsyncIteration:
        return done


#: Longest a waiting worker holds a lane: its wait is a series of blocking waits this long at most.
WAIT_SLICE = 0.05


class ThreadedKeys:
    """A blocking core's idempotency keys, claimed and recorded on the running task's pinned lane."""

    def __init__(self, keys: Keys, lanes: Lanes) -> None:
        self._keys = keys
        self._lanes = lanes

    async def claim(self, key: str, request: str) -> str | None:
        """See ``planflow.infra.sql.idempotency.TransactionKeys.claim``."""
        return await self._lanes.run(self._keys.claim(key, request))

    async def record(self, key: str, outcome: str) -> None:
        """See ``planflow.infra.sql.idempotency.TransactionKeys.record``."""
        await self._lanes.run(self._keys.record(key, outcome))


class ThreadedBackend:
    """The asynchronous API over a blocking core (SQLite's, TinyDB's): every call of the core runs on a lane."""

    def __init__(self, core: Core, lanes: Lanes, observer: Any = None) -> None:
        self.core = core
        self.driver = core.driver
        self.retry = core.retry
        self._lanes = lanes
        self.keys = None if core.keys is None else ThreadedKeys(core.keys, lanes)
        self.repositories = adapted(core, observer, lanes=lanes)
        database = getattr(core, "database", None)
        if isinstance(database, Interruptible):
            database.interruptible = True
            lanes.interruptible = database
        lanes.inline_reads = bool(getattr(database, "reads_never_wait", False))

    def transaction(self) -> AbstractAsyncContextManager[object]:
        """The core's unit of work, entered and left on one lane that every call of the block's task runs on."""
        return self._lanes.pinned(self.core.transaction())

    async def migrate(self) -> list[Migration]:
        """Apply pending migrations (on a lane)."""
        return await self._lanes.run(self.core.migrate())

    async def migration_status(self) -> list[MigrationStatus]:
        """Known migrations with their applied time (on a lane)."""
        return await self._lanes.run(self.core.migration_status())

    async def aclose(self) -> None:
        """Close the core on a lane, then stop the lanes."""
        try:
            await self._lanes.run(self.core.aclose())
        finally:
            await self._lanes.aclose()
