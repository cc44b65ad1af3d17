"""The asynchronous API behind the synchronous one's shape, so that the contract suites run on it unchanged.

An event loop runs in a thread of its own. Every thread of a test talks to it through a *channel*: one asyncio
task on the loop that awaits the thread's calls one after the other, so that a test thread is one task (its
transactions, opened with ``async with`` inside that task, see every call it makes, as in a real program).
``run_in_transaction(work)`` awaits the real ``AsyncProvider.run_in_transaction`` with a coroutine that runs
the blocking ``work`` on a helper thread and awaits the helper's calls in the transaction's own task.

Nothing of planflow is replaced: every call a test makes is a call of the asynchronous API, awaited on a loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from types import SimpleNamespace, TracebackType
from typing import Any, TypeVar

from planflow import AsyncProvider

T = TypeVar("T")
Request = tuple[Callable[[], Awaitable[Any]], concurrent.futures.Future[Any]]


class LoopThread:
    """An event loop running in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="test-event-loop", daemon=True)
        self._thread.start()

    def run(self, coroutine: Awaitable[T]) -> T:
        """Run ``coroutine`` on the loop from another thread and wait for its result."""
        return asyncio.run_coroutine_threadsafe(_awaited(coroutine), self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class Channel:
    """One task on the loop awaiting one thread's calls, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.requests: asyncio.Queue[Request] = asyncio.run_coroutine_threadsafe(_new_queue(), loop).result()
        asyncio.run_coroutine_threadsafe(self._start(), loop).result()

    async def _start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            factory, reply = await self.requests.get()
            await answer(factory, reply)

    def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        reply: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self.requests.put_nowait, (factory, reply))
        return reply.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)


async def _new_queue() -> asyncio.Queue[Request]:
    return asyncio.Queue()


async def answer(factory: Callable[[], Awaitable[Any]], reply: concurrent.futures.Future[Any]) -> None:
    try:
        result = await factory()
    except BaseException as exc:
        reply.set_exception(exc)
    else:
        reply.set_result(result)


class NestedChannel:
    """Calls of a helper thread, awaited by the task that started it (see ``SyncOverAsync.run_in_transaction``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.requests: asyncio.Queue[Request] = asyncio.Queue()

    def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        reply: concurrent.futures.Future[T] = concurrent.futures.Future()
        self.loop.call_soon_threadsafe(self.requests.put_nowait, (factory, reply))
        return reply.result()


class _Repository:
    """One repository of the async provider, called from a test thread."""

    def __init__(self, adapter: SyncOverAsync, name: str) -> None:
        self._adapter = adapter
        self._name = name

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            target = getattr(getattr(self._adapter.async_provider, self._name), method)
            probe = self._adapter.call(lambda: _start(target, args, kwargs))
            kind, value = probe
            if kind == "iterator":
                return self._adapter.iterate(value)
            if kind == "manager":
                return _Manager(self._adapter, value)
            return value

        return call


async def _start(
    target: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[str, Any]:
    result = target(*args, **kwargs)
    if isinstance(result, AsyncIterator):
        return "iterator", result
    if isinstance(result, AbstractAsyncContextManager):
        return "manager", result
    return "value", await result


class _Manager:
    """``with`` over an asynchronous context manager, entered and left in the calling thread's task."""

    def __init__(
        self, adapter: SyncOverAsync, inner: AbstractAsyncContextManager[Any], *, yields: Any = None
    ) -> None:
        self._adapter = adapter
        self._inner = inner
        self._yields = yields

    def __enter__(self) -> Any:
        entered = self._adapter.call(self._inner.__aenter__)
        return entered if self._yields is None else self._yields

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return self._adapter.call(lambda: self._inner.__aexit__(exc_type, exc, tb))


class SyncOverAsync:
    """A ``Provider``-shaped view of an :class:`AsyncProvider` (see the module docstring)."""

    #: A callback the provider calls on the event loop (``purge``'s progress) cannot call this view back: the
    #: loop would wait for itself.
    reentrant_callbacks = False

    def __init__(self, async_provider: AsyncProvider, loop: LoopThread) -> None:
        self.async_provider = async_provider
        self._loop = loop
        self._local = threading.local()
        self._channels: list[Channel] = []
        self.config = async_provider.config
        self.driver = async_provider.driver
        # What the contract suites' statement counter looks for.
        backend: Any = async_provider._backend  # pyright: ignore[reportPrivateUsage]
        database = getattr(backend, "database", None) or getattr(
            getattr(getattr(backend, "_blocking", None), "core", None), "database", None
        )
        self._backend = SimpleNamespace(core=SimpleNamespace(database=database))
        for name in ("tasks", "workflows", "auth", "executions", "metadata"):
            setattr(self, name, _Repository(self, name))
        for name in ("tasks", "workflows", "auth", "executions", "metadata"):
            try:
                getattr(async_provider, name)
            except Exception as exc:
                self._unserved(name, exc)

    def _unserved(self, name: str, exc: Exception) -> None:
        class Unserved:
            def __getattr__(self, _: str) -> Any:
                raise exc

        setattr(self, name, Unserved())

    def _channel(self) -> Channel | NestedChannel:
        channel = getattr(self._local, "channel", None)
        if channel is None:
            channel = self._local.channel = Channel(self._loop.loop)
            self._channels.append(channel)
        return channel

    def call(self, factory: Callable[[], Awaitable[T]]) -> T:
        return self._channel().call(factory)

    def iterate(self, items: AsyncIterator[T]) -> Iterator[T]:
        try:
            while True:
                try:
                    yield self.call(items.__anext__)
                except StopAsyncIteration:
                    return
        finally:
            close = getattr(items, "aclose", None)
            if close is not None:
                self.call(close)

    def transaction(self) -> _Manager:
        # What the block gets is this view (the async provider's repositories, called from this thread's task).
        return _Manager(self, self.async_provider.transaction(), yields=self)

    def run_in_transaction(self, work: Callable[[Any], T], *, idempotency_key: str | None = None) -> T:
        adapter = self

        async def awaited(tx: Any) -> T:
            return await serve_while(work, adapter, self._local)

        return self.call(
            lambda: self.async_provider.run_in_transaction(awaited, idempotency_key=idempotency_key)
        )

    def migrate(self) -> Any:
        return self.call(self.async_provider.migrate)

    def migration_status(self) -> Any:
        return self.call(self.async_provider.migration_status)

    def close(self) -> None:
        self._loop.run(self.async_provider.aclose())
        for channel in self._channels:
            channel.close()

    def __enter__(self) -> SyncOverAsync:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<async {self.async_provider!r}>"


async def serve_while(work: Callable[[Any], T], adapter: SyncOverAsync, local: threading.local) -> T:
    """Run blocking ``work(adapter)`` on a helper thread; await its calls in this task until it returns."""
    loop = asyncio.get_running_loop()
    nested = NestedChannel(loop)
    done: asyncio.Future[T] = loop.create_future()

    def helper() -> None:
        local.channel = nested
        try:
            result = work(adapter)
        except BaseException as exc:
            loop.call_soon_threadsafe(done.set_exception, exc)
        else:
            loop.call_soon_threadsafe(done.set_result, result)

    threading.Thread(target=helper, daemon=True).start()
    while True:
        request = asyncio.ensure_future(nested.requests.get())
        finished, _ = await asyncio.wait({request, done}, return_when=asyncio.FIRST_COMPLETED)
        if request in finished:
            await answer(*request.result())
            continue
        request.cancel()
        return done.result()
