"""What a driver opens (a *core*), and the synchronous and asynchronous APIs made over it.

Every driver opens a core: its repositories written once as coroutines, units of work, migrations (SQLite's and
PostgreSQL's :class:`~planflow.infra.sql.core.SqlCore`, TinyDB's :class:`~planflow.infra.tinydb.core.TinyDbCore`).
An API is a core seen through the generated adapters of ``planflow/infra/facades`` (see ``ARCHITECTURE.md``):

- :class:`SyncBackend`: the synchronous API over any core; each call's coroutine is driven to its end on the
  caller's thread (a core over a blocking driver never suspends; PostgreSQL's uses psycopg's blocking calls).
- :class:`AsyncBackend`: the asynchronous API over a core of real coroutines (PostgreSQL's asyncio pool): the
  checked core itself.
- ``ThreadedBackend`` (``planflow.infra.threaded``): the asynchronous API over a blocking core, run on worker
  threads.

Every API checks each call's arguments once, by the core's generated ``Checked*`` adapters; with an
:class:`~planflow.infra.observe.Observer` (listeners, telemetry), the generated ``Observed*`` adapters above
them report every call, refused ones too.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import Any, Protocol

from planflow.config import RetrySettings
from planflow.infra.drive import SyncContext, drive
from planflow.infra.facades import FACADES
from planflow.infra.registry import NAMES
from planflow.migration_records import Migration, MigrationStatus

#: Positions in a FACADES entry.
SYNC, CHECKED, THREADED, OBSERVED = range(4)


class Keys(Protocol):
    """Idempotency keys claimed and recorded in the current unit of work (``planflow.infra.sql.idempotency``)."""

    async def claim(self, key: str, request: str) -> str | None: ...
    async def record(self, key: str, outcome: str) -> None: ...


class Core(Protocol):
    """What a driver opens. Its repositories are attributes named as in ``planflow.infra.registry`` (``None``
    for those the driver does not serve), each implementing the repository's asynchronous Protocol."""

    driver: str
    retry: RetrySettings
    #: The SQL database (its pool, its hooks for listeners), or None (TinyDB).
    database: Any
    #: Idempotency keys of units of work, or None where there are no units of work (TinyDB).
    keys: Keys | None

    def transaction(self) -> AbstractAsyncContextManager[object]: ...
    async def migrate(self) -> list[Migration]: ...
    async def migration_status(self) -> list[MigrationStatus]: ...
    async def aclose(self) -> None: ...


def adapted(core: Core, observer: Any, *, lanes: Any = None, sync: bool = False) -> dict[str, object | None]:
    """The core's repositories as an API sees them, by name (``None`` for those the core does not serve): each
    behind its ``Checked*`` adapter; on worker threads (``Threaded*``) when ``lanes`` are given; reported by its
    ``Observed*`` adapter when there is an observer (refused and sliced calls as one call each); and driven on the
    caller's thread (``Sync*``) for the synchronous API."""
    repositories: dict[str, object | None] = {}
    for name in NAMES:
        repository: object | None = getattr(core, name, None)
        if repository is not None:
            facades = FACADES[name]
            repository = facades[CHECKED](repository)
            if lanes is not None:
                repository = facades[THREADED](repository, lanes)
            if observer is not None:
                repository = facades[OBSERVED](repository, observer)
            if sync:
                repository = facades[SYNC](repository)
        repositories[name] = repository
    return repositories


class SyncBackend:
    """The synchronous API over a core (see the module docstring)."""

    def __init__(self, core: Core, observer: Any = None) -> None:
        self.core = core
        self.driver = core.driver
        self.retry = core.retry
        self.repositories = adapted(core, observer, sync=True)

    def transaction(self) -> AbstractContextManager[object]:
        """The core's unit of work, entered and left on the caller's thread."""
        return SyncContext(self.core.transaction())

    def migrate(self) -> list[Migration]:
        """Apply pending migrations."""
        return drive(self.core.migrate())

    def migration_status(self) -> list[MigrationStatus]:
        """Known migrations with their applied time."""
        return drive(self.core.migration_status())

    def close(self) -> None:
        """Close the core's connections or files."""
        drive(self.core.aclose())


class AsyncBackend:
    """The asynchronous API over a core of coroutines that suspend (PostgreSQL's asyncio pool)."""

    def __init__(self, core: Core, observer: Any = None) -> None:
        self.core = core
        self.driver = core.driver
        self.retry = core.retry
        self.keys = core.keys
        self.repositories = adapted(core, observer)

    def transaction(self) -> AbstractAsyncContextManager[object]:
        """The core's unit of work, for the running task."""
        return self.core.transaction()

    async def migrate(self) -> list[Migration]:
        """Apply pending migrations."""
        return await self.core.migrate()

    async def migration_status(self) -> list[MigrationStatus]:
        """Known migrations with their applied time."""
        return await self.core.migration_status()

    async def aclose(self) -> None:
        """Close the core's connections."""
        await self.core.aclose()


__all__ = ["AsyncBackend", "Core", "Keys", "SyncBackend", "adapted"]
