"""Listeners of a provider, and what reports every repository call to them.

The generated ``Observed*`` adapters (``planflow/infra/facades``) wrap a core's repositories and report each
call to the provider's :class:`Observer`: a coroutine when it returns or raises, an iterator
(:meth:`Observer.items`) when it ends, a context manager (:meth:`Observer.context`) when its block ends. Both
APIs see the same wrapped core. A provider opened without listeners and without telemetry gets its
repositories unwrapped: nothing here runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import fields
from time import perf_counter
from types import TracebackType
from typing import Any, TypeVar, cast

from planflow.errors import ConflictError
from planflow.events import ConflictEvent, Event, Listener, OperationEvent, PoolWaitEvent, RetryEvent
from planflow.models import Page

P = TypeVar("P")
T = TypeVar("T")
logger = logging.getLogger("planflow.observe")


def rows_of(result: object) -> int | None:
    """How many records ``result`` holds (see :attr:`OperationEvent.rows`)."""
    # By exact type first: this runs after every observed call, and most results are a list or one record.
    kind = type(result)
    if kind in _ONE_RECORD:
        return 1
    if kind is list or kind is dict or kind is tuple:
        return len(cast(Sequence[object], result))
    if result is None or kind is bool:
        return None
    if kind is int:
        return cast(int, result)
    if isinstance(result, Page):
        return len(cast(Page[object], result).items)
    if isinstance(result, list | dict | tuple | int):
        return len(cast(Sequence[object], result)) if not isinstance(result, int) else int(result)
    _ONE_RECORD.add(kind)
    return 1


#: Result types found to be one record (a model): the next result of such a type is counted at once.
_ONE_RECORD: set[type] = set()


def _setter(name: str) -> Callable[[object, object], None]:
    descriptor: Any = vars(OperationEvent)[name]
    setter: Callable[[object, object], None] = descriptor.__set__
    return setter


# A frozen dataclass's __init__ sets each field through object.__setattr__, about a microsecond for seven:
# too much for every observed call (a SQLite point read takes about ten). The slots are filled directly
# instead; the event is the same frozen dataclass.
_new_event = object.__new__
_set_repository, _set_method, _set_driver, _set_duration, _set_rows, _set_outcome, _set_error = (
    _setter(f.name) for f in fields(OperationEvent)
)


def operation_event(  # noqa: PLR0917 - positional: it runs after every observed call
    repository: str, method: str, driver: str, duration: float, rows: int | None, error: str | None
) -> OperationEvent:
    """``OperationEvent(...)``, made faster (see above)."""
    event = _new_event(OperationEvent)
    _set_repository(event, repository)
    _set_method(event, method)
    _set_driver(event, driver)
    _set_duration(event, duration)
    _set_rows(event, rows)
    _set_outcome(event, "ok" if error is None else "error")
    _set_error(event, error)
    return event


class Observer:
    """The listeners of one provider, each shielded from the others and from the caller."""

    __slots__ = ("closers", "driver", "listeners")

    def __init__(self, driver: str, listeners: Iterable[Listener]) -> None:
        self.driver = driver
        self.listeners = tuple(listeners)
        #: Called when the provider closes (telemetry stops observing its pool).
        self.closers: list[Callable[[], None]] = []

    def emit(self, event: Event) -> None:
        """Hand ``event`` to every listener; one that raises is logged and skipped."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception as exc:
                logger.warning(
                    "a planflow listener (%r) raised %s on %s; ignored",
                    listener,
                    type(exc).__name__,
                    type(event).__name__,
                    exc_info=True,
                    extra={"planflow_driver": self.driver, "planflow_event": type(event).__name__},
                )

    def operation(
        self, repository: str, method: str, started: float, result: object, error: BaseException | None
    ) -> None:
        """Report a call that began at ``started`` (``perf_counter``) and returned ``result`` or raised ``error``."""
        duration = perf_counter() - started
        if error is None:
            self.emit(operation_event(repository, method, self.driver, duration, rows_of(result), None))
            return
        self.emit(operation_event(repository, method, self.driver, duration, None, type(error).__name__))
        if isinstance(error, ConflictError):
            self.emit(ConflictEvent(repository, method, self.driver, error.expected, error.actual))

    def items(self, repository: str, method: str, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """The items of the iterator ``make()`` returns, the whole iteration reported as one call (its rows: the
        items taken). ``make`` runs now, so that its arguments are refused at once."""
        started = perf_counter()
        try:
            items = make()
        except BaseException as exc:
            self.operation(repository, method, started, None, exc)
            raise
        return _observed_items(items, self, repository, method, started)

    def context(
        self, repository: str, method: str, inner: AbstractAsyncContextManager[T]
    ) -> AbstractAsyncContextManager[T]:
        """``inner`` (a batch), reported as one call when its block ends."""
        return _ObservedContext(inner, self, repository, method)

    def retry(self, attempt: int, delay: float, cause: BaseException) -> None:
        """Report a transient failure about to be retried (see ``planflow.infra.sql.database.retrying``)."""
        self.emit(RetryEvent(self.driver, attempt, delay, type(cause).__name__))

    def pool_wait(self, duration: float) -> None:
        """Report a wait for a pooled connection."""
        self.emit(PoolWaitEvent(self.driver, duration))

    def close(self) -> None:
        """Run the closers (once)."""
        closers, self.closers = self.closers, []
        for close in closers:
            try:
                close()
            except Exception:
                logger.warning("closing a planflow telemetry hook failed; ignored", exc_info=True)


async def _observed_items(
    items: AsyncIterator[T], observer: Observer, repository: str, name: str, started: float
) -> AsyncIterator[T]:
    count = 0
    try:
        async for item in items:
            count += 1
            yield item
    except GeneratorExit:  # the caller stopped early: what it took is the result
        observer.operation(repository, name, started, count, None)
        raise
    except BaseException as exc:
        observer.operation(repository, name, started, None, exc)
        raise
    finally:
        # Closed at once, as the caller would have closed it: it may hold a connection or a worker thread.
        close = getattr(items, "aclose", None)
        if close is not None:
            await close()
    observer.operation(repository, name, started, count, None)


class _ObservedContext(AbstractAsyncContextManager[T]):
    """An asynchronous context manager (a batch) reported when its block ends."""

    __slots__ = ("_inner", "_name", "_observer", "_repository", "_started")

    def __init__(
        self, inner: AbstractAsyncContextManager[T], observer: Observer, repository: str, name: str
    ) -> None:
        self._inner = inner
        self._observer = observer
        self._repository = repository
        self._name = name
        self._started = 0.0

    async def __aenter__(self) -> T:
        self._started = perf_counter()
        try:
            return await self._inner.__aenter__()
        except BaseException as exc:
            self._report(exc)
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        try:
            swallowed = await self._inner.__aexit__(exc_type, exc, tb)
        except BaseException as error:
            self._report(error)
            raise
        self._report(None if swallowed else exc)
        return swallowed

    def _report(self, error: BaseException | None) -> None:
        self._observer.operation(self._repository, self._name, self._started, None, error)


__all__ = ["Observer", "rows_of"]
