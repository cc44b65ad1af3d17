"""Running a core's coroutines to their end at once, on the calling thread: the synchronous API's engine.

The repositories and units of work of every driver are written once, as coroutines (see
``planflow.infra.sql.database``). Over connections whose methods never suspend (sqlite3, TinyDB, psycopg's
blocking connection), such a coroutine runs from its first statement to its result in a single ``send``:
:func:`drive` does that, with no event loop, no thread and no copy of the code. The generated synchronous
adapters (``planflow/infra/facades``) call it; :class:`SyncContext` and :func:`sync_iterator` do the same for a
core's context managers and iterators.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar, cast

T = TypeVar("T")


def drive(coroutine: Awaitable[T]) -> T:
    """Run ``coroutine`` (or another awaitable whose steps never suspend, such as an async generator's next
    step) to its end now and return its result (its exception propagates).

    Raises:
        RuntimeError: it tried to suspend, which only the asynchronous drivers may do (a bug).
    """
    running = cast(Coroutine[Any, Any, T], coroutine)
    try:
        running.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    running.close()
    raise RuntimeError("planflow: a synchronous call suspended; its driver is asynchronous")


class SyncContext(AbstractContextManager[T]):
    """A ``with`` block over an asynchronous context manager whose methods never suspend."""

    __slots__ = ("_inner",)

    def __init__(self, inner: AbstractAsyncContextManager[T]) -> None:
        self._inner = inner

    def __enter__(self) -> T:
        return drive(self._inner.__aenter__())

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return drive(self._inner.__aexit__(exc_type, exc, tb))


def sync_iterator(items: AsyncIterator[T]) -> Iterator[T]:
    """A plain iterator over an asynchronous one whose steps never suspend (closed when it is)."""
    try:
        while True:
            try:
                yield drive(items.__anext__())
            except StopAsyncIteration:
                return
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            drive(close())
