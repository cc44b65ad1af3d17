"""The synchronous API: the asynchronous core run to its end, at once, on the caller's thread.

The repositories and units of work are coroutines (see ``planflow.infra.sql.database``). Over connections
whose methods never suspend (sqlite3, psycopg's blocking connection), such a coroutine runs from its first
statement to its result in a single ``send``: :func:`drive` does that, with no event loop, no thread and no
copy of the code. :func:`sync_facade` turns an object of coroutine methods into one of plain methods, method for
method, typed as the synchronous Protocol it mirrors.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from types import TracebackType
from typing import Any, TypeVar, cast

T = TypeVar("T")
P = TypeVar("P")


def drive(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to its end now and return its result (its exception propagates).

    Raises:
        RuntimeError: the coroutine tried to suspend, which only the asynchronous drivers may do (a bug).
    """
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coroutine.close()
    raise RuntimeError("planflow: a synchronous call suspended; its driver is asynchronous")


class SyncContext(AbstractContextManager[T]):
    """A ``with`` block over an asynchronous context manager whose methods never suspend."""

    __slots__ = ("_inner",)

    def __init__(self, inner: AbstractAsyncContextManager[T]) -> None:
        self._inner = inner

    def __enter__(self) -> T:
        return drive(self._inner.__aenter__())  # pyright: ignore[reportArgumentType]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return drive(self._inner.__aexit__(exc_type, exc, tb))  # pyright: ignore[reportArgumentType]


def sync_iterator(items: AsyncIterator[T]) -> Iterator[T]:
    """A plain iterator over an asynchronous one whose steps never suspend."""
    try:
        while True:
            try:
                yield drive(items.__anext__())  # pyright: ignore[reportArgumentType]
            except StopAsyncIteration:
                return
    finally:
        close = getattr(items, "aclose", None)
        if close is not None:
            drive(close())


_facade_classes: dict[tuple[type, type], type] = {}


def public_methods(protocol: type) -> list[str]:
    """The public methods a Protocol declares."""
    return [
        name
        for name, member in vars(protocol).items()
        if not name.startswith("_") and inspect.isfunction(member)
    ]


def _facade_method(
    impl: Callable[..., Any], name: str, protocol_member: Callable[..., Any]
) -> Callable[..., Any]:
    """A plain method calling ``impl`` (a core method) and returning what the synchronous API returns."""
    if inspect.iscoroutinefunction(impl):

        def method(self: Any, *args: object, **kwargs: object) -> object:
            # drive(), inlined: this runs for every call of the synchronous API.
            coroutine = impl(self._core, *args, **kwargs)
            try:
                coroutine.send(None)
            except StopIteration as stop:
                return stop.value
            coroutine.close()
            raise RuntimeError("planflow: a synchronous call suspended; its driver is asynchronous")

    elif inspect.isasyncgenfunction(impl) or getattr(impl, "__planflow_iterator__", False):

        def method(self: Any, *args: object, **kwargs: object) -> object:
            return sync_iterator(impl(self._core, *args, **kwargs))

    else:  # an asynchronous context manager (a batch, a transaction)

        def method(self: Any, *args: object, **kwargs: object) -> object:
            return SyncContext(impl(self._core, *args, **kwargs))

    method.__name__ = method.__qualname__ = name
    method.__doc__ = protocol_member.__doc__
    method.__signature__ = inspect.signature(protocol_member)  # pyright: ignore[reportFunctionMemberAccess]
    return method


def sync_facade(core: object, protocol: type[P]) -> P:
    """``core``'s coroutine methods as the plain methods of ``protocol`` (its docstrings and signatures).

    The class is made once per (core class, protocol) pair; each call costs one frame more than the core's.
    """
    key = (type(core), protocol)
    cls = _facade_classes.get(key)
    if cls is None:
        members: dict[str, object] = {
            "__slots__": ("_core",),
            "__doc__": protocol.__doc__,
            "__init__": _init,
            "__repr__": lambda self: f"<{protocol.__name__} of {self._core!r}>",  # pyright: ignore[reportUnknownLambdaType, reportUnknownMemberType]
        }
        for name in public_methods(protocol):
            members[name] = _facade_method(getattr(type(core), name), name, vars(protocol)[name])
        cls = _facade_classes[key] = type(f"Sync{protocol.__name__}", (), members)
    return cast(P, cls(core))


def _init(self: Any, core: object) -> None:
    self._core = core


# The other way: a plain object seen as coroutines (to wrap it once, asynchronously, and drive it back) ------


class AsyncContext(AbstractAsyncContextManager[T]):
    """An ``async with`` block over a plain context manager."""

    __slots__ = ("_inner",)

    def __init__(self, inner: AbstractContextManager[T]) -> None:
        self._inner = inner

    async def __aenter__(self) -> T:
        return self._inner.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        return self._inner.__exit__(exc_type, exc, tb)


async def async_iterator(items: Iterator[T]) -> AsyncIterator[T]:
    """An asynchronous iterator over a plain one (its steps never suspend)."""
    try:
        for item in items:
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()


def _coroutine_call(name: str) -> Callable[..., Any]:
    async def method(self: Any, *args: object, **kwargs: object) -> object:
        return getattr(self._core, name)(*args, **kwargs)

    return method


def _coroutine_iterator(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: object, **kwargs: object) -> object:
        return async_iterator(iter(getattr(self._core, name)(*args, **kwargs)))

    method.__planflow_iterator__ = True  # pyright: ignore[reportFunctionMemberAccess]
    return method


def _coroutine_context(name: str) -> Callable[..., Any]:
    def method(self: Any, *args: object, **kwargs: object) -> object:
        return AsyncContext(getattr(self._core, name)(*args, **kwargs))

    return method


_COROUTINE_MAKERS = {"call": _coroutine_call, "iterator": _coroutine_iterator, "context": _coroutine_context}


class _CoroutineView:
    __slots__ = ("_core",)

    def __init__(self, core: object) -> None:
        self._core = core


def protocol_class(
    protocol: type,
    makers: dict[str, Callable[[str], Callable[..., Any]]],
    base: type,
    prefix: str,
    cache: dict[type, type],
) -> type:
    """A subclass of ``base`` with a method per public method of ``protocol`` (made once per protocol, kept in
    ``cache``): ``makers[kind_of(member)](name)``, named and documented as the Protocol's."""
    cls = cache.get(protocol)
    if cls is None:
        members: dict[str, object] = {"__slots__": (), "__doc__": protocol.__doc__}
        for name in public_methods(protocol):
            member = vars(protocol)[name]
            method = makers[kind_of(member)](name)
            method.__name__ = method.__qualname__ = name
            method.__doc__ = member.__doc__
            members[name] = method
        cls = cache[protocol] = type(f"{prefix}{protocol.__name__}", (base,), members)
    return cls


_coroutine_classes: dict[type, type] = {}


def coroutine_view(plain: object, protocol: type[P]) -> P:
    """``plain``'s methods (those of ``protocol``, a Protocol of coroutines) as coroutines that never suspend.

    The inverse of :func:`sync_facade`: code written once for the asynchronous core (an observer, say) can then
    wrap a repository of plain methods (TinyDB's), and :func:`sync_facade` make it plain again.
    """
    cls = protocol_class(protocol, _COROUTINE_MAKERS, _CoroutineView, "Coroutines", _coroutine_classes)
    return cast(P, cls(plain))


def kind_of(member: Callable[..., Any]) -> str:
    """What a Protocol method returns: ``"iterator"``, ``"context"`` (a context manager) or ``"call"``."""
    returns = str(inspect.signature(member).return_annotation)
    if "Iterator" in returns:
        return "iterator"
    if "ContextManager" in returns:
        return "context"
    return "call"
