"""Listeners of a provider, and the wrapper that reports every repository call to them.

The wrapper is made by introspection of the repository Protocols (every public method, by the kind its return
annotation declares: a coroutine, an iterator or a context manager), so a method added to a Protocol is
reported with no edit here. It wraps the asynchronous repositories; the synchronous API drives the wrapped
coroutines like any other (``planflow.infra.drive``). TinyDB's synchronous repositories are plain methods,
wrapped by :func:`observed_sync` the same way.

A provider opened without listeners and without telemetry gets its repositories unwrapped: nothing here runs.
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
from planflow.infra.drive import protocol_class, public_methods
from planflow.models import Page

P = TypeVar("P")
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


# Asynchronous repositories -----------------------------------------------------------------------------------


class _Observed:
    __slots__ = ("observer", "repo_name", "target")

    def __init__(self, target: object, repository: str, observer: Observer) -> None:
        self.target = target
        self.repo_name = repository
        self.observer = observer

    def __repr__(self) -> str:
        return f"<observed {self.target!r}>"


def _async_call(name: str) -> Callable[..., Any]:
    async def method(self: _Observed, *args: object, **kwargs: object) -> object:
        started = perf_counter()
        try:
            result = await getattr(self.target, name)(*args, **kwargs)
        except BaseException as exc:
            self.observer.operation(self.repo_name, name, started, None, exc)
            raise
        self.observer.operation(self.repo_name, name, started, result, None)
        return result

    return method


async def _observed_items(
    items: AsyncIterator[object], observer: Observer, repository: str, name: str, started: float
) -> AsyncIterator[object]:
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


def _async_iterator(name: str) -> Callable[..., Any]:
    def method(self: _Observed, *args: object, **kwargs: object) -> AsyncIterator[object]:
        started = perf_counter()
        try:
            items = getattr(self.target, name)(*args, **kwargs)  # checks its arguments now
        except BaseException as exc:
            self.observer.operation(self.repo_name, name, started, None, exc)
            raise
        return _observed_items(items, self.observer, self.repo_name, name, started)

    method.__planflow_iterator__ = True  # pyright: ignore[reportFunctionMemberAccess]
    return method


class _ObservedContext(AbstractAsyncContextManager[object]):
    """An asynchronous context manager (a batch) reported when its block ends."""

    __slots__ = ("_inner", "_name", "_observed", "_started")

    def __init__(self, inner: AbstractAsyncContextManager[object], observed: _Observed, name: str) -> None:
        self._inner = inner
        self._observed = observed
        self._name = name
        self._started = 0.0

    async def __aenter__(self) -> object:
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
        observed = self._observed
        observed.observer.operation(observed.repo_name, self._name, self._started, None, error)


def _async_context(name: str) -> Callable[..., Any]:
    def method(self: _Observed, *args: object, **kwargs: object) -> AbstractAsyncContextManager[object]:
        return _ObservedContext(getattr(self.target, name)(*args, **kwargs), self, name)

    return method


_async_classes: dict[type, type] = {}
_ASYNC_MAKERS = {"call": _async_call, "iterator": _async_iterator, "context": _async_context}


def observed(target: object, protocol: type[P], repository: str, observer: Observer) -> P:
    """``target`` (an asynchronous repository) with every method of ``protocol`` reported to ``observer``."""
    cls = protocol_class(protocol, _ASYNC_MAKERS, _Observed, "Observed", _async_classes)
    return cast(P, cls(target, repository, observer))


__all__ = ["Observer", "observed", "public_methods", "rows_of"]
