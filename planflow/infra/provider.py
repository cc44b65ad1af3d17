"""The Provider factory: config -> driver -> core -> repositories typed only as Protocols.

A driver opens a *core* (its repositories written once as coroutines, its units of work and migrations); the
synchronous and the asynchronous API are the core seen through the adapters of ``planflow.infra.backends``
(see ``ARCHITECTURE.md``). Driver modules are imported when chosen, so a missing dependency of one driver
(psycopg, tinydb) fails only when that driver is asked for, with a ``ConfigError`` naming the extra to install.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from types import ModuleType, TracebackType
from typing import Any, Protocol, TypeVar

from planflow.config import ConfigSource, PlanflowConfig, resolve_config
from planflow.errors import ClosedError, ConfigError, PlanflowError
from planflow.events import Listener
from planflow.infra.backends import AsyncBackend, Core, Keys, SyncBackend
from planflow.infra.drive import drive
from planflow.infra.facades import AsyncRepositories, Repositories
from planflow.infra.inputs import check_id, dump_json
from planflow.infra.observe import Observer
from planflow.infra.sql.codec import loads
from planflow.infra.sql.database import OnRetry, retrying
from planflow.migration_records import Migration, MigrationStatus

T = TypeVar("T")
R = TypeVar("R")

#: driver -> (module with ``open_core``, pip extra, modules the driver needs)
DRIVER_MODULES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "sqlite": ("planflow.infra.sqlite.open", None, ("sqlite3", "_sqlite3")),
    "postgres": (
        "planflow.infra.postgres.open",
        "postgres",
        ("psycopg", "psycopg_pool", "psycopg_binary"),
    ),
    "tinydb": ("planflow.infra.tinydb.open", "tinydb", ("tinydb",)),
}


async def unit_of_work(
    transaction: Callable[[], AbstractAsyncContextManager[object]],
    keys: Keys | None,
    work: Callable[[R], T | Awaitable[T]],
    repositories: R,
    key: str | None,
) -> T:
    """One attempt of ``run_in_transaction``: ``work(repositories)`` inside a transaction, its idempotency key
    claimed first and its result recorded last, in the same transaction. Written once for both APIs: the
    synchronous one drives it (its work returns a value), the asynchronous one awaits it (its work a
    coroutine)."""
    async with transaction():
        if key is not None and keys is not None:
            recorded = await keys.claim(key, "run_in_transaction")
            if recorded is not None:
                replayed: T = loads(recorded)
                return replayed
        result = work(repositories)
        outcome: T = await result if inspect.isawaitable(result) else result  # pyright: ignore[reportAssignmentType]
        if key is not None and keys is not None:
            await keys.record(key, dump_json(outcome, "the result of the unit of work"))
        return outcome


class _Store:
    """What both providers hold: the config, the observer, whether closed."""

    def __init__(self, config: PlanflowConfig, driver: str, observer: Observer | None) -> None:
        self.config = config
        self._driver = driver
        self._observer = observer
        self._closed = False

    @property
    def driver(self) -> str:
        """``sqlite``, ``postgres`` or ``tinydb``."""
        return self._driver

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the provider is closed")

    def _on_retry(self) -> OnRetry | None:
        return None if self._observer is None else self._observer.retry

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.driver} {self.config.location}>"


def _pool_stats(core: Core) -> dict[str, int] | None:
    stats = getattr(core.database, "pool_stats", None)
    if stats is None:
        return None
    numbers: dict[str, int] = stats()
    return dict(numbers)


async def _blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)


class Provider(Repositories, _Store):
    """An open store: repositories, units of work, migrations. Use it as a context manager or ``close()`` it."""

    def __init__(
        self, backend: SyncBackend, config: PlanflowConfig, observer: Observer | None = None
    ) -> None:
        Repositories.__init__(self, backend.repositories, backend.driver)
        _Store.__init__(self, config, backend.driver, observer)
        self._backend = backend

    def pool_stats(self) -> dict[str, int] | None:
        """The connection pool's numbers (psycopg_pool's ``get_stats()``: ``pool_size``, ``pool_available``,
        ``requests_waiting`` and counters), or ``None`` for a driver without a pool (SQLite, TinyDB)."""
        return _pool_stats(self._backend.core)

    @contextmanager
    def transaction(self) -> Generator[Repositories, None, None]:
        """A unit of work across repositories: commits both or neither.

        Every repository call made inside the block by the same thread (or asyncio task) joins it
        (``tx.tasks`` and ``provider.tasks`` are the same); other threads and tasks are not in it. Nested use
        is a savepoint: an exception leaving the inner block undoes only the inner block's writes.

        Raises:
            UnsupportedError: the driver has no transactions (tinydb: use ``executions.batch()``).
            TransientError: the COMMIT failed and nothing was applied.
            CommitUnknownError: the connection was lost during COMMIT and whether it applied is unknown.
        """
        self._check_open()
        with self._backend.transaction():
            yield self

    def run_in_transaction(
        self, work: Callable[[Repositories], T], *, idempotency_key: str | None = None
    ) -> T:
        """Run ``work`` in a transaction, running it again from the start after a transient failure.

        ``work`` may run more than once, but its writes are applied exactly once: a unit whose COMMIT lost
        its connection is run again only if it did not commit. Keep side effects other than the
        repositories' out of it.

        Args:
            work: The unit of work; it gets the repositories and returns the unit's result.
            idempotency_key: Makes a retry of the whole call safe: a unit already committed with this key
                (within ``idempotency_window``, default a day) is not run again, and its result, as it was then,
                is returned. With a key, ``work`` must return a JSON value (None, a bool, a number, a str, or
                lists and str-keyed dicts of them), which is what a repeat returns.

        Raises:
            TransientError: the failure outlasted the retry budget (``config.retry``).
            CommitUnknownError: the outcome of a COMMIT could not be learned; the unit was not run again.
            ValidationError: an invalid key, or with a key, a result that is not a JSON value (nothing is
                committed).
        """
        key = None if idempotency_key is None else check_id(idempotency_key, "idempotency_key")
        self._check_open()
        core = self._backend.core

        def attempt() -> Coroutine[Any, Any, T]:
            return unit_of_work(core.transaction, core.keys, work, self, key)

        return drive(retrying(attempt, core.retry, _blocking_sleep, self._on_retry()))

    def migrate(self) -> list[Migration]:
        """Apply pending migrations; returns those applied."""
        self._check_open()
        return self._backend.migrate()

    def migration_status(self) -> list[MigrationStatus]:
        """Every known migration with its applied time (``None``: pending)."""
        self._check_open()
        return self._backend.migration_status()

    def close(self) -> None:
        """Close the store's connections; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            try:
                self._backend.close()
            finally:
                if self._observer is not None:
                    self._observer.close()

    def __enter__(self) -> Provider:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def note_ignored_settings(config: PlanflowConfig) -> None:
    """Log (INFO on ``planflow``) the settings ``config.driver`` ignores: ``read_url`` serves PostgreSQL only."""
    if config.read_url is not None and config.driver != "postgres":
        logging.getLogger("planflow").info(
            "read_url is ignored: the %s driver has no standbys (reads on standbys are for PostgreSQL)",
            config.driver,
            extra={"planflow_driver": config.driver},
        )


def driver_module(config: PlanflowConfig) -> ModuleType:
    """The module of ``config.driver``, imported now.

    Raises:
        ConfigError: a module the driver needs is missing, naming the extra that installs it.
    """
    module_name, extra, needs = DRIVER_MODULES[config.driver]
    hint = f"install it with: pip install 'planflow[{extra}]'" if extra else "this Python lacks it"
    if config.driver == "postgres":
        hint = (
            "install it with: pip install 'planflow[postgres-binary]' (or 'planflow[postgres]' beside a psycopg "
            "that finds libpq: psycopg[c], or a system libpq)"
        )
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if not missing and config.driver == "postgres":
            # psycopg is there but found no libpq to run on (no psycopg-binary, psycopg-c or system libpq).
            raise ConfigError(f"the postgres driver cannot load psycopg ({exc}); {hint}") from exc
        if missing not in needs:
            raise
        raise ConfigError(
            f"the {config.driver} driver needs the {missing!r} module, which is missing; {hint}"
        ) from exc


def open_provider(
    config: ConfigSource = None, *, listeners: Sequence[Listener] = (), telemetry: bool | None = None
) -> Provider:
    """Open a store and return its Provider.

    Args:
        config: a :class:`PlanflowConfig`, a mapping of settings, a URL, or ``None`` (environment, else the
            embedded default: a SQLite file ``planflow.db`` in the current directory).
        listeners: callables handed an event for every repository call, retry, conflict and pool wait (see
            ``planflow.events``). A listener that raises is logged and ignored.
        telemetry: report to OpenTelemetry (spans, metrics) through the globally configured tracer and meter
            providers; ``None``: as ``config.telemetry`` says (off by default). Needs the ``otel`` extra.
            Without listeners and telemetry the repositories are not wrapped at all.

    Raises:
        ConfigError: bad config, unknown driver, missing driver dependency (``opentelemetry-api`` for
            telemetry), a listener that is not callable, a refused login or a missing database.
        TransientError: the database stayed unreachable for ``connect_timeout`` seconds (nothing listening
            on the port: about one second).
        MigrationError: a migration failed or the schema is newer than the code (``auto_migrate`` on).
        ForeignStoreError: ``read_only``, and the store holds data but no planflow schema (left unchanged).
    """
    resolved = resolve_config(config)
    note_ignored_settings(resolved)
    check_listeners(listeners)
    core: Core = driver_module(resolved).open_core(resolved)
    observer: Observer | None = None
    try:
        observer = make_observer(resolved, core, listeners, telemetry)
        backend = SyncBackend(core, observer)
        if resolved.auto_migrate and not resolved.read_only:
            backend.migrate()
    except BaseException:
        drive(core.aclose())
        if observer is not None:
            observer.close()
        raise
    return Provider(backend, resolved, observer)


def check_listeners(listeners: Sequence[Listener]) -> None:
    """Refuse listeners that cannot be called, before anything opens.

    Raises:
        ConfigError: one of them is not callable (or ``listeners`` is a single callable, not a sequence).
    """
    if callable(listeners) or isinstance(listeners, str | bytes):
        raise ConfigError("listeners must be a sequence of callables (listeners=[my_listener])")
    for listener in listeners:
        if not callable(listener):
            raise ConfigError(f"a listener must be callable, got {type(listener).__name__}")


def make_observer(
    config: PlanflowConfig, core: Core, listeners: Sequence[Listener], telemetry: bool | None
) -> Observer | None:
    """The observer of a provider with ``listeners`` and telemetry, told of the database's retries and pool
    waits; ``None`` when there is nothing to tell.

    Raises:
        ConfigError: telemetry is asked for and ``opentelemetry-api`` is missing.
    """
    every = list(listeners)
    database = core.database
    closers: list[Callable[[], None]] = []
    if config.telemetry if telemetry is None else telemetry:
        try:
            from planflow.infra.otel import OpenTelemetryListener
        except ImportError as exc:
            raise ConfigError(
                "telemetry needs the opentelemetry-api package; install it with: pip install 'planflow[otel]'"
            ) from exc
        otel = OpenTelemetryListener(config, getattr(database, "pool_stats", None))
        every.append(otel)
        closers.append(otel.close)
    if not every:
        return None
    observer = Observer(core.driver, every)
    observer.closers.extend(closers)
    if database is not None:
        database.on_retry = observer.retry
        if hasattr(database, "on_pool_wait"):
            database.on_pool_wait = observer.pool_wait
    return observer


class _AsyncAPI(Protocol):
    """What an AsyncProvider is made over: ``AsyncBackend`` (PostgreSQL) or ``ThreadedBackend`` (the others)."""

    core: Core
    driver: str
    repositories: dict[str, object | None]

    @property
    def keys(self) -> Keys | None: ...
    def transaction(self) -> AbstractAsyncContextManager[object]: ...
    async def migrate(self) -> list[Migration]: ...
    async def migration_status(self) -> list[MigrationStatus]: ...
    async def aclose(self) -> None: ...


class AsyncProvider(AsyncRepositories, _Store):
    """An open store for asyncio programs: the :class:`Provider`'s API, every method awaited.

    Use it with ``async with`` or ``await provider.aclose()``. It belongs to the event loop that opened it.
    """

    def __init__(self, backend: _AsyncAPI, config: PlanflowConfig, observer: Observer | None = None) -> None:
        AsyncRepositories.__init__(self, backend.repositories, backend.driver)
        _Store.__init__(self, config, backend.driver, observer)
        self._backend = backend

    def pool_stats(self) -> dict[str, int] | None:
        """See :meth:`Provider.pool_stats`."""
        return _pool_stats(self._backend.core)

    @asynccontextmanager
    async def transaction(self) -> AsyncGenerator[AsyncRepositories, None]:
        """A unit of work across repositories, for the running task (see :meth:`Provider.transaction`).

        Every repository call the task awaits inside the block joins it; other tasks, and tasks it starts,
        are not in it. Nested use is a savepoint. A task cancelled inside the block rolls it back; one
        cancelled while its COMMIT runs may have committed (the COMMIT finishes before the cancellation
        propagates).
        """
        self._check_open()
        async with self._backend.transaction():
            yield self

    async def run_in_transaction(
        self, work: Callable[[AsyncRepositories], Awaitable[T]], *, idempotency_key: str | None = None
    ) -> T:
        """Await ``work`` in a transaction, again from the start after a transient failure, with the commit
        rules and the ``idempotency_key`` of :meth:`Provider.run_in_transaction` (applied exactly once,
        ``CommitUnknownError``). A cancelled call may have committed: retry it with the same key."""
        key = None if idempotency_key is None else check_id(idempotency_key, "idempotency_key")
        self._check_open()
        backend = self._backend

        def attempt() -> Coroutine[Any, Any, T]:
            return unit_of_work(backend.transaction, backend.keys, work, self, key)

        import asyncio  # here: importing planflow should not import asyncio for the synchronous API

        return await retrying(attempt, backend.core.retry, asyncio.sleep, self._on_retry())

    async def migrate(self) -> list[Migration]:
        """Apply pending migrations; returns those applied."""
        self._check_open()
        return await self._backend.migrate()

    async def migration_status(self) -> list[MigrationStatus]:
        """Every known migration with its applied time (``None``: pending)."""
        self._check_open()
        return await self._backend.migration_status()

    async def aclose(self) -> None:
        """Close the store's connections; closing twice is harmless."""
        if not self._closed:
            self._closed = True
            try:
                await self._backend.aclose()
            finally:
                if self._observer is not None:
                    self._observer.close()

    async def __aenter__(self) -> AsyncProvider:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


class AsyncProviderOpening(Coroutine[Any, Any, AsyncProvider], AbstractAsyncContextManager[AsyncProvider]):
    """What :func:`open_async_provider` returns: await it for the provider, or use it with ``async with``.

    Nothing happens until it is awaited or entered, and it opens one provider at most: as aiosqlite's
    ``connect()`` and asyncpg's ``create_pool()`` do, both ``async with open_async_provider(url) as p`` (closed
    when the block ends) and ``p = await open_async_provider(url)`` (closed by ``await p.aclose()``) work. It is
    a coroutine too, so ``asyncio.run``, ``create_task`` and ``wait_for`` take it as they took the coroutine
    that ``open_async_provider`` used to be.
    """

    __slots__ = ("_open", "_provider", "_running")

    def __init__(self, opener: Callable[[], Awaitable[AsyncProvider]]) -> None:
        self._open = opener
        self._provider: AsyncProvider | None = None
        self._running: Coroutine[Any, Any, AsyncProvider] | None = None

    async def _opened(self) -> AsyncProvider:
        if self._provider is None:
            self._provider = await self._open()
        return self._provider

    def _coroutine(self) -> Coroutine[Any, Any, AsyncProvider]:
        if self._running is None:
            self._running = self._opened()
        return self._running

    def __await__(self) -> Generator[Any, None, AsyncProvider]:
        return self._coroutine().__await__()

    def send(self, value: Any, /) -> Any:
        """Advance the opening (the coroutine protocol, for event loops)."""
        return self._coroutine().send(value)

    def throw(self, typ: Any, val: Any = None, tb: TracebackType | None = None, /) -> Any:
        """Raise an exception inside the opening (the coroutine protocol, for event loops)."""
        return self._coroutine().throw(typ, val, tb)

    def close(self) -> None:
        """Abandon an opening that was started and not finished (the coroutine protocol)."""
        if self._running is not None:
            self._running.close()

    async def __aenter__(self) -> AsyncProvider:
        return await self._opened()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._provider is not None:
            await self._provider.aclose()


def open_async_provider(
    config: ConfigSource = None, *, listeners: Sequence[Listener] = (), telemetry: bool | None = None
) -> AsyncProviderOpening:
    """Open a store for asyncio programs: ``async with open_async_provider(url) as provider`` or
    ``provider = await open_async_provider(url)`` (the arguments as for :func:`open_provider`).

    PostgreSQL runs on psycopg's asyncio connections and pool, with no thread. SQLite and TinyDB block, so their
    calls run on a bounded set of worker threads (``pool_max_size`` of them), never on the event loop.

    Returns:
        An :class:`AsyncProviderOpening`: awaited, the open :class:`AsyncProvider`; entered with ``async with``,
        the same, closed when the block ends.

    Raises:
        As :func:`open_provider`, when awaited or entered.
    """
    return AsyncProviderOpening(lambda: _open_async(config, listeners, telemetry))


async def _open_async(
    config: ConfigSource, listeners: Sequence[Listener], telemetry: bool | None
) -> AsyncProvider:
    resolved = resolve_config(config)
    note_ignored_settings(resolved)
    check_listeners(listeners)
    module = driver_module(resolved)
    backend: _AsyncAPI
    observer: Observer | None = None
    if resolved.driver == "postgres":
        core: Core = await module.open_async_core(resolved)
        try:
            observer = make_observer(resolved, core, listeners, telemetry)
        except BaseException:
            await core.aclose()
            raise
        backend = AsyncBackend(core, observer)
    else:
        from functools import partial

        from planflow.infra.threaded import Lanes, ThreadedBackend

        lanes = Lanes(resolved.pool_max_size)
        try:
            core = await lanes.call(partial(module.open_core, resolved))
        except BaseException:
            await lanes.aclose()
            raise
        try:
            observer = make_observer(resolved, core, listeners, telemetry)
        except BaseException:
            await lanes.run(core.aclose())
            await lanes.aclose()
            raise
        backend = ThreadedBackend(core, lanes, observer)
    try:
        if resolved.auto_migrate and not resolved.read_only:
            await backend.migrate()
    except BaseException:
        await backend.aclose()
        if observer is not None:
            observer.close()
        raise
    return AsyncProvider(backend, resolved, observer)


__all__ = [
    "AsyncProvider",
    "AsyncProviderOpening",
    "AsyncRepositories",
    "PlanflowError",
    "Provider",
    "Repositories",
    "open_async_provider",
    "open_provider",
    "unit_of_work",
]
