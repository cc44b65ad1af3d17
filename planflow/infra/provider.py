"""The Provider factory: config -> driver -> repositories typed only as Protocols.

Driver modules are imported when chosen, so a missing dependency of one driver (psycopg, tinydb) fails only
when that driver is asked for, with a ``ConfigError`` naming the extra to install.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Generator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AbstractContextManager,
    asynccontextmanager,
    contextmanager,
)
from types import ModuleType, TracebackType
from typing import Any, Generic, Protocol, TypeVar, cast

from planflow.config import ConfigSource, PlanflowConfig, RetrySettings, resolve_config
from planflow.errors import ClosedError, ConfigError, PlanflowError, UnsupportedError
from planflow.events import Listener
from planflow.infra.drive import coroutine_view, drive, sync_facade
from planflow.infra.inputs import check_optional_id, dump_json
from planflow.infra.observe import Observer, observed
from planflow.infra.sql.codec import loads
from planflow.infra.sql.database import retrying
from planflow.protocols import (
    AsyncAuthRepository,
    AsyncExecutionRepository,
    AsyncMetadataRepository,
    AsyncTaskRepository,
    AsyncWorkflowRepository,
    AuthRepository,
    ExecutionRepository,
    MetadataRepository,
    TaskRepository,
    WorkflowRepository,
)
from planflow.schema import Migration, MigrationStatus

T = TypeVar("T")
TR = TypeVar("TR")
WR = TypeVar("WR")
AR = TypeVar("AR")
ER = TypeVar("ER")
MR = TypeVar("MR")

#: driver -> (module with ``open_backend``, pip extra, modules the driver needs)
DRIVER_MODULES: dict[str, tuple[str, str | None, tuple[str, ...]]] = {
    "sqlite": ("planflow.infra.sqlite.backend", None, ("sqlite3", "_sqlite3")),
    "postgres": (
        "planflow.infra.postgres.backend",
        "postgres",
        ("psycopg", "psycopg_pool", "psycopg_binary"),
    ),
    "tinydb": ("planflow.infra.tinydb.backend", "tinydb", ("tinydb",)),
}


TR_co = TypeVar("TR_co", covariant=True)
WR_co = TypeVar("WR_co", covariant=True)
AR_co = TypeVar("AR_co", covariant=True)
ER_co = TypeVar("ER_co", covariant=True)
MR_co = TypeVar("MR_co", covariant=True)


class Serves(Protocol[TR_co, WR_co, AR_co, ER_co, MR_co]):
    """A backend's driver name, retry settings and repositories (``None`` for those it does not serve)."""

    driver: str
    retry: RetrySettings

    @property
    def tasks(self) -> TR_co | None: ...
    @property
    def workflows(self) -> WR_co | None: ...
    @property
    def auth(self) -> AR_co | None: ...
    @property
    def executions(self) -> ER_co | None: ...
    @property
    def metadata(self) -> MR_co | None: ...


class Keys(Protocol):
    """Idempotency keys claimed and recorded inside the current transaction (see ``planflow.infra.sql.idempotency``)."""

    def claim(self, key: str, request: str) -> str | None: ...
    def record(self, key: str, outcome: str) -> None: ...


class AsyncKeys(Protocol):
    """:class:`Keys` for the asynchronous API."""

    async def claim(self, key: str, request: str) -> str | None: ...
    async def record(self, key: str, outcome: str) -> None: ...


class Backend(
    Serves[TaskRepository, WorkflowRepository, AuthRepository, ExecutionRepository, MetadataRepository],
    Protocol,
):
    """What a driver hands the synchronous Provider."""

    @property
    def keys(self) -> Keys | None: ...

    def transaction(self) -> AbstractContextManager[object]: ...
    def migrate(self) -> list[Migration]: ...
    def migration_status(self) -> list[MigrationStatus]: ...
    def close(self) -> None: ...


class Serving(Generic[TR, WR, AR, ER, MR]):
    """The repositories of a provider, by name; one the driver does not serve raises ``UnsupportedError``."""

    def __init__(self, backend: Any, config: PlanflowConfig, observer: Observer | None = None) -> None:
        self._backend = backend
        self._tasks, self._workflows, self._auth = backend.tasks, backend.workflows, backend.auth
        self._executions, self._metadata = backend.executions, backend.metadata
        self.config = config
        self._closed = False
        self._observer = observer

    @property
    def driver(self) -> str:
        """``sqlite``, ``postgres`` or ``tinydb``."""
        driver: str = self._backend.driver
        return driver

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the provider is closed")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.driver} {self.config.location}>"

    def pool_stats(self) -> dict[str, int] | None:
        """The connection pool's numbers (psycopg_pool's ``get_stats()``: ``pool_size``, ``pool_available``,
        ``requests_waiting`` and counters), or ``None`` for a driver without a pool (SQLite, TinyDB)."""
        stats = getattr(_database(self._backend), "pool_stats", None)
        if stats is None:
            return None
        numbers: dict[str, int] = stats()
        return dict(numbers)

    def _unserved(self, name: str) -> UnsupportedError:
        served = [repo for repo in ("tasks", "workflows", "auth", "executions") if getattr(self, f"_{repo}")]
        what = (
            "the PlanFlow add-on's task definitions, occurrences and executions"
            if served == ["executions"]
            else ""
        )
        return UnsupportedError(
            f"the {self.driver} driver does not serve the {name} repository: it serves only "
            f"{', '.join(served) or 'nothing'}{f' ({what})' if what else ''}; for {name}, open a store of the sqlite "
            "driver (sqlite:///path/to.db: stdlib sqlite3, no server) or of the postgres driver "
            "(postgresql://user:pw@host/db)"
        )

    @property
    def tasks(self) -> TR:
        """Task execution states."""
        if self._tasks is None:
            raise self._unserved("tasks")
        return self._tasks

    @property
    def workflows(self) -> WR:
        """Workflow execution states."""
        if self._workflows is None:
            raise self._unserved("workflows")
        return self._workflows

    @property
    def auth(self) -> AR:
        """Users and API keys."""
        if self._auth is None:
            raise self._unserved("auth")
        return self._auth

    @property
    def executions(self) -> ER:
        """The add-on's task definitions, occurrences and executions."""
        if self._executions is None:
            raise self._unserved("executions")
        return self._executions

    @property
    def metadata(self) -> MR:
        """Facts about the store itself, such as an unfinished ``planflow copy`` into it."""
        if self._metadata is None:
            raise self._unserved("metadata")
        return self._metadata


class Repositories(
    Serving[TaskRepository, WorkflowRepository, AuthRepository, ExecutionRepository, MetadataRepository]
):
    """The repositories of a provider; what ``provider.transaction()`` yields."""


async def _blocking_sleep(seconds: float) -> None:
    time.sleep(seconds)


class Provider(Repositories):
    """An open store: repositories, units of work, migrations. Use it as a context manager or ``close()`` it."""

    _backend: Backend

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
        key = check_optional_id(idempotency_key, "idempotency_key")

        async def attempt() -> T:
            with self.transaction() as tx:
                keys = self._backend.keys
                if key is None or keys is None:
                    return work(tx)
                recorded = keys.claim(key, "run_in_transaction")
                if recorded is not None:
                    replayed: T = loads(recorded)
                    return replayed
                result = work(tx)
                keys.record(key, dump_json(result, "the result of the unit of work"))
                return result

        return drive(retrying(attempt, self._backend.retry, _blocking_sleep, _on_retry(self._observer)))

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
    check_listeners(listeners)
    opener: Callable[[PlanflowConfig], Backend] = driver_module(resolved).open_backend
    backend = opener(resolved)
    observer: Observer | None = None
    try:
        observer = make_observer(resolved, backend, listeners, telemetry)
        if observer is not None:
            _observe_sync(backend, observer)
        if resolved.auto_migrate and not resolved.read_only:
            backend.migrate()
    except BaseException:
        backend.close()
        if observer is not None:
            observer.close()
        raise
    return Provider(backend, resolved, observer)


#: Repository name -> (synchronous Protocol, asynchronous Protocol).
REPOSITORY_PROTOCOLS: dict[str, tuple[type[Any], type[Any]]] = {
    "tasks": (TaskRepository, AsyncTaskRepository),
    "workflows": (WorkflowRepository, AsyncWorkflowRepository),
    "auth": (AuthRepository, AsyncAuthRepository),
    "executions": (ExecutionRepository, AsyncExecutionRepository),
    "metadata": (MetadataRepository, AsyncMetadataRepository),
}


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


def _database(backend: Any) -> Any:
    """The SQL database under a backend (sync, async or threaded), or None (TinyDB)."""
    while True:
        if hasattr(backend, "database"):
            return backend.database
        inner = getattr(backend, "core", None) or getattr(backend, "blocking", None)
        if inner is None:
            return None
        backend = inner


def make_observer(
    config: PlanflowConfig, backend: Any, listeners: Sequence[Listener], telemetry: bool | None
) -> Observer | None:
    """The observer of a provider with ``listeners`` and telemetry, told of the database's retries and pool
    waits; ``None`` when there is nothing to tell.

    Raises:
        ConfigError: telemetry is asked for and ``opentelemetry-api`` is missing.
    """
    every = list(listeners)
    database = _database(backend)
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
    observer = Observer(backend.driver, every)
    observer.closers.extend(closers)
    if database is not None:
        database.on_retry = observer.retry
        if hasattr(database, "on_pool_wait"):
            database.on_pool_wait = observer.pool_wait
    return observer


def _on_retry(observer: Observer | None) -> Callable[[int, float, BaseException], None] | None:
    return None if observer is None else observer.retry


def _observe_sync(backend: Any, observer: Observer) -> None:
    """Report every call of the synchronous backend's repositories to ``observer``.

    A SQL backend's repositories are coroutines under a synchronous facade: the coroutines are wrapped, and
    the facade made again over them. TinyDB's are plain methods: seen as coroutines, wrapped the same way.
    """
    core = getattr(backend, "core", None)
    for name, (sync_protocol, async_protocol) in REPOSITORY_PROTOCOLS.items():
        if core is not None:
            target = getattr(core, name, None)
        elif (target := getattr(backend, name, None)) is not None:
            target = coroutine_view(target, async_protocol)
        if target is not None:
            wrapped: object = observed(target, async_protocol, name, observer)
            setattr(backend, name, sync_facade(wrapped, sync_protocol))


def _observe_async(backend: Any, observer: Observer) -> None:
    """Report every call of the asynchronous backend's repositories to ``observer``."""
    for name, (_, async_protocol) in REPOSITORY_PROTOCOLS.items():
        target = getattr(backend, name, None)
        if target is not None:
            setattr(backend, name, observed(target, async_protocol, name, observer))


class AsyncBackend(
    Serves[
        AsyncTaskRepository,
        AsyncWorkflowRepository,
        AsyncAuthRepository,
        AsyncExecutionRepository,
        AsyncMetadataRepository,
    ],
    Protocol,
):
    """What a driver hands the AsyncProvider: the asynchronous twin of :class:`Backend`."""

    @property
    def keys(self) -> AsyncKeys | None: ...

    def transaction(self) -> AbstractAsyncContextManager[object]: ...
    async def migrate(self) -> list[Migration]: ...
    async def migration_status(self) -> list[MigrationStatus]: ...
    async def aclose(self) -> None: ...


class AsyncRepositories(
    Serving[
        AsyncTaskRepository,
        AsyncWorkflowRepository,
        AsyncAuthRepository,
        AsyncExecutionRepository,
        AsyncMetadataRepository,
    ]
):
    """The repositories of an async provider; what ``async with provider.transaction()`` yields."""


class AsyncProvider(AsyncRepositories):
    """An open store for asyncio programs: the :class:`Provider`'s API, every method awaited.

    Use it with ``async with`` or ``await provider.aclose()``. It belongs to the event loop that opened it.
    """

    _backend: AsyncBackend

    @asynccontextmanager
    async def transaction(self) -> AsyncGenerator[AsyncRepositories, None]:
        """A unit of work across repositories, for the running task (see :meth:`Provider.transaction`).

        Every repository call the task awaits inside the block joins it; other tasks, and tasks it starts,
        are not in it. Nested use is a savepoint. A task cancelled inside the block rolls it back.
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
        key = check_optional_id(idempotency_key, "idempotency_key")

        async def attempt() -> T:
            async with self.transaction() as tx:
                keys = self._backend.keys
                if key is None or keys is None:
                    return await work(tx)
                recorded = await keys.claim(key, "run_in_transaction")
                if recorded is not None:
                    replayed: T = loads(recorded)
                    return replayed
                result = await work(tx)
                await keys.record(key, dump_json(result, "the result of the unit of work"))
                return result

        import asyncio  # here: importing planflow should not import asyncio for the synchronous API

        return await retrying(attempt, self._backend.retry, asyncio.sleep, _on_retry(self._observer))

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


ASYNC_PROTOCOLS: dict[str, type] = {
    "tasks": AsyncTaskRepository,
    "workflows": AsyncWorkflowRepository,
    "auth": AsyncAuthRepository,
    "executions": AsyncExecutionRepository,
    "metadata": AsyncMetadataRepository,
}


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
    check_listeners(listeners)
    module = driver_module(resolved)
    backend: AsyncBackend
    if resolved.driver == "postgres":
        backend = await module.open_async_backend(resolved)
    else:
        from planflow.infra.threaded import Lanes, ThreadedBackend

        lanes = Lanes(resolved.pool_max_size)
        try:
            blocking: Backend = await lanes.call(lambda: module.open_backend(resolved))
        except BaseException:
            await lanes.aclose()
            raise
        backend = cast(AsyncBackend, ThreadedBackend(blocking, lanes, ASYNC_PROTOCOLS))
    observer: Observer | None = None
    try:
        observer = make_observer(resolved, backend, listeners, telemetry)
        if observer is not None:
            _observe_async(backend, observer)
        if resolved.auto_migrate and not resolved.read_only:
            await backend.migrate()
    except BaseException:
        await backend.aclose()
        if observer is not None:
            observer.close()
        raise
    return AsyncProvider(backend, resolved, observer)


__all__ = [
    "AsyncBackend",
    "AsyncProvider",
    "AsyncProviderOpening",
    "AsyncRepositories",
    "Backend",
    "PlanflowError",
    "Provider",
    "Repositories",
    "Serving",
    "open_async_provider",
    "open_provider",
]
