"""The asynchronous API over a blocking driver (SQLite, TinyDB): its calls run on worker threads.

``Lanes`` is a bounded set of worker threads, so that a burst of coroutines waits for a free lane (on the event
loop, without blocking it) instead of opening ever more connections. A call borrows a free lane for its
duration. A transaction, a batch or an iterator *pins* one lane for its whole life: every call its task makes
inside it runs on that lane, in that lane's own ``contextvars`` context, so the blocking driver sees one thread
doing one unit of work, exactly as its synchronous API does (SQLite's transaction of the thread, TinyDB's lock
held by the thread that took it). A task started inside a transaction does not inherit its pin.

SQLite in WAL mode lets readers run beside the writer: reads borrow other lanes and run in parallel with a
pinned write transaction.

A coroutine cancelled while its call runs on a lane does not stop the call (a thread cannot be interrupted):
the cancellation propagates once the call has ended, so a write it started has committed or not by then, and
nothing of it runs on behind the caller's back. A transaction cancelled inside its block is rolled back; one
cancelled while its COMMIT runs may have committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import queue
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, suppress
from functools import partial
from typing import Any, TypeVar, cast

from planflow.config import RetrySettings
from planflow.errors import ClosedError
from planflow.infra.inputs import check_timeout
from planflow.infra.shielding import finish_then_cancel, settled
from planflow.infra.sql.database import Interruptible
from planflow.schema import Migration, MigrationStatus

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

    @asynccontextmanager
    async def pinned(self, enter: Callable[[], AbstractContextManager[T]]) -> AsyncGenerator[T, None]:
        """``async with`` over a blocking context manager made by ``enter``, entered and left on one lane."""
        pin = await self.pin()
        try:
            manager = await pin.call(enter)
            try:
                value = await pin.call(manager.__enter__)
            except asyncio.CancelledError as exc:
                # The lane enters anyway (a thread is not interrupted); leave again right after, on the same
                # lane, or the transaction would stay open there, holding its locks.
                error = exc
                with suppress(Exception):
                    await finish_then_cancel(pin.call(lambda: manager.__exit__(type(error), error, None)))
                raise
            try:
                yield value
            except BaseException as exc:
                error = exc
                if not await finish_then_cancel(
                    pin.call(lambda: manager.__exit__(type(error), error, error.__traceback__))
                ):
                    raise
            else:
                await finish_then_cancel(pin.call(lambda: manager.__exit__(None, None, None)))
        finally:
            self.unpin(pin)

    async def iterate(self, items: Iterator[T]) -> AsyncIterator[T]:
        """The items of a blocking iterator, each step on one pinned lane."""
        pin = await self.pin()
        done = object()
        try:
            while (item := await pin.call(lambda: next(items, done))) is not done:
                yield cast(T, item)
            await pin.call(lambda: _close(items))
        finally:
            self.unpin(pin)

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop every lane, once the calls still running on them (a cancelled caller's, say) are done."""
        self._closed = True
        deadline = time.monotonic() + timeout
        while any(lane.inflight for lane in self._lanes) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        for lane in self._lanes:
            lane.stop()


def _close(items: Iterator[Any]) -> None:
    close = getattr(items, "close", None)
    if close is not None:
        close()


def threaded_facade(target: object, protocol: type[P], lanes: Lanes) -> P:
    """``target``'s blocking methods as the coroutine methods of the asynchronous ``protocol``, on ``lanes``.

    Methods the Protocol declares as iterators or context managers become asynchronous ones, pinned to a lane.
    """
    members: dict[str, object] = {"__doc__": protocol.__doc__}
    for name, member in vars(protocol).items():
        if name.startswith("_") or not inspect.isfunction(member):
            continue
        returns = str(inspect.signature(member).return_annotation)
        members[name] = _threaded_method(target, name, returns, lanes, member)
    cls = type(f"Threaded{protocol.__name__}", (), members)
    return cast(P, cls())


def _threaded_method(
    target: object, name: str, returns: str, lanes: Lanes, member: Callable[..., Any]
) -> Callable[..., Any]:
    method = getattr(target, name)
    if returns.startswith("AsyncIterator"):

        def iterator(self: object, *args: object, **kwargs: object) -> AsyncIterator[object]:
            # Made here, on the loop: that checks the arguments at once and does no I/O (a blocking iterator
            # reads at its first step, which runs on the lane).
            return lanes.iterate(method(*args, **kwargs))

        wrapper: Callable[..., Any] = iterator
    elif "ContextManager" in returns:

        def manager(self: object, *args: object, **kwargs: object) -> Any:
            return lanes.pinned(lambda: method(*args, **kwargs))

        wrapper = manager
    else:

        async def coroutine(self: object, *args: object, **kwargs: object) -> object:
            return await lanes.call(lambda: method(*args, **kwargs))

        wrapper = coroutine
    wrapper.__name__ = wrapper.__qualname__ = name
    wrapper.__doc__ = member.__doc__
    wrapper.__signature__ = inspect.signature(member)  # pyright: ignore[reportFunctionMemberAccess]
    return wrapper


#: Longest a waiting worker holds a lane: its wait is a series of blocking waits this long at most.
WAIT_SLICE = 0.05


def _sliced_wait(tasks: Any, lanes: Lanes) -> Callable[..., Any]:
    async def wait_for_work(filter: object = None, *, timeout: object) -> bool:
        seconds = check_timeout(timeout, "timeout")
        deadline = time.monotonic() + seconds
        piece = min(seconds, WAIT_SLICE)  # the first slice checks the filter, on the lane
        while True:
            if await lanes.call(partial(tasks.wait_for_work, filter, timeout=piece)):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            piece = min(remaining, WAIT_SLICE)

    wait_for_work.__doc__ = tasks.wait_for_work.__doc__
    return wait_for_work


class ThreadedKeys:
    """The blocking backend's idempotency keys, on the running task's pinned lane."""

    def __init__(self, keys: Any, lanes: Lanes) -> None:
        self._keys = keys
        self._lanes = lanes

    async def claim(self, key: str, request: str) -> str | None:
        """See ``planflow.infra.sql.idempotency.TransactionKeys.claim``."""
        recorded: str | None = await self._lanes.call(partial(self._keys.claim, key, request))
        return recorded

    async def record(self, key: str, outcome: str) -> None:
        """See ``planflow.infra.sql.idempotency.TransactionKeys.record``."""
        await self._lanes.call(partial(self._keys.record, key, outcome))


class ThreadedBackend:
    """The asynchronous backend of a blocking one (see the module docstring)."""

    def __init__(self, blocking: Any, lanes: Lanes, protocols: dict[str, type]) -> None:
        self._blocking = blocking
        #: The blocking backend, for what the provider attaches to its database (listeners).
        self.blocking = blocking
        self._lanes = lanes
        self.driver: str = blocking.driver
        self.retry: RetrySettings = blocking.retry
        for name, protocol in protocols.items():
            target = getattr(blocking, name)
            setattr(self, name, None if target is None else threaded_facade(target, protocol, lanes))
        tasks = getattr(self, "tasks", None)
        if tasks is not None:
            tasks.wait_for_work = _sliced_wait(blocking.tasks, lanes)
        #: Idempotency keys of units of work, claimed on the transaction's pinned lane.
        self.keys = None if blocking.keys is None else ThreadedKeys(blocking.keys, lanes)
        interruptible = getattr(blocking, "interruptible", None)
        if interruptible is not None:
            lanes.interruptible = interruptible()

    # A lane is one of a bounded few: a worker waiting for work must not hold one for its whole timeout.

    def transaction(self) -> Any:
        """The blocking backend's transaction, entered and left on one pinned lane."""
        return self._lanes.pinned(self._blocking.transaction)

    async def sleep(self, seconds: float) -> None:
        """Wait on the event loop."""
        await asyncio.sleep(seconds)

    async def migrate(self) -> list[Migration]:
        """Apply pending migrations (on a lane)."""
        result: list[Migration] = await self._lanes.call(self._blocking.migrate)
        return result

    async def migration_status(self) -> list[MigrationStatus]:
        """Known migrations with their applied time (on a lane)."""
        result: list[MigrationStatus] = await self._lanes.call(self._blocking.migration_status)
        return result

    async def aclose(self) -> None:
        """Close the blocking backend on a lane, then stop the lanes."""
        try:
            await self._lanes.call(self._blocking.close)
        finally:
            await self._lanes.aclose()
