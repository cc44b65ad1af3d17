"""A SQL driver's backend: its database, the repositories written once over it, and its migrator.

The backend is asynchronous like everything under ``planflow.infra.sql``; the asynchronous API uses it as it is
(PostgreSQL), the synchronous API through :class:`SyncSqlBackend`, which drives it on the caller's thread.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager, AbstractContextManager

from planflow.config import RetrySettings
from planflow.errors import ForeignStoreError
from planflow.infra.drive import SyncContext, drive, sync_facade
from planflow.infra.sql.auth import SqlAuthRepository
from planflow.infra.sql.database import Connection, Database, Interruptible
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.executions import SqlExecutionRepository
from planflow.infra.sql.idempotency import IdempotencyKeys, TransactionKeys
from planflow.infra.sql.metadata import SqlMetadataRepository
from planflow.infra.sql.migrations import MigrationSql, Migrator
from planflow.infra.sql.tasks import SqlTaskRepository
from planflow.infra.sql.workflows import SqlWorkflowRepository
from planflow.protocols import (
    AuthRepository,
    ExecutionRepository,
    MetadataRepository,
    TaskRepository,
    WorkflowRepository,
)
from planflow.schema import Migration, MigrationStatus


class SqlBackend:
    """Everything a provider needs from a SQL driver, as coroutines."""

    def __init__(
        self, database: Database, dialect: Dialect, migration_sql: MigrationSql, idempotency_window: float
    ) -> None:
        self.driver = dialect.name
        self.database = database
        keys = IdempotencyKeys(database, dialect, idempotency_window)
        #: Idempotency keys of ``run_in_transaction``, claimed in the current transaction.
        self.keys = TransactionKeys(keys, database)
        self.tasks = SqlTaskRepository(database, dialect, keys)
        self.workflows = SqlWorkflowRepository(database, dialect, keys)
        self.auth = SqlAuthRepository(database, dialect)
        self.executions = SqlExecutionRepository(database, dialect)
        self.metadata = SqlMetadataRepository(database, dialect)
        self._migrator = Migrator(database, dialect, migration_sql)

    @property
    def retry(self) -> RetrySettings:
        """The backoff of transient failures."""
        return self.database.retry

    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A unit of work joined by every repository call of the task or thread; nested use is a savepoint."""
        return self.database.transaction()

    async def sleep(self, seconds: float) -> None:
        """Wait between attempts of a unit of work."""
        await self.database.sleep(seconds)

    async def migrate(self) -> list[Migration]:
        """Apply pending migrations."""
        return await self._migrator.migrate()

    async def migration_status(self) -> list[MigrationStatus]:
        """Known migrations with their applied time."""
        return await self._migrator.status()

    async def refuse_foreign(self, location: str) -> None:
        """Refuse a store that holds tables but no planflow schema (what a read-only provider must not adopt).

        Raises:
            ForeignStoreError: naming the store, a few of its tables, and ``planflow migrate --force``.
        """
        tables = await self._migrator.foreign_tables()
        if tables:
            raise ForeignStoreError(
                f"the {self.driver} store {location} holds tables ({', '.join(tables)}) but no planflow schema; "
                "it was left unchanged. To create planflow's tables beside them, run: planflow migrate --force "
                "--db URL",
                location=location,
                tables=tuple(tables),
            )

    async def aclose(self) -> None:
        """Close every connection."""
        await self.database.aclose()


class SyncSqlBackend:
    """A :class:`SqlBackend` for the synchronous API: every call driven to its end on the caller's thread."""

    def __init__(self, core: SqlBackend) -> None:
        self.core = core
        self.driver = core.driver
        self.retry = core.retry
        self.tasks: TaskRepository = sync_facade(core.tasks, TaskRepository)
        self.workflows: WorkflowRepository = sync_facade(core.workflows, WorkflowRepository)
        self.auth: AuthRepository = sync_facade(core.auth, AuthRepository)
        self.executions: ExecutionRepository = sync_facade(core.executions, ExecutionRepository)
        self.metadata: MetadataRepository = sync_facade(core.metadata, MetadataRepository)
        self.keys = SyncKeys(core.keys)

    def interruptible(self) -> Interruptible | None:
        """The database, made to track what each thread does so that a call can be stopped part way, where it
        can be (SQLite: ``SqliteDatabase.interrupt``); ``None`` where it cannot. For the asynchronous API over
        this backend's worker threads."""
        database = self.core.database
        if not isinstance(database, Interruptible):
            return None
        database.interruptible = True
        return database

    def transaction(self) -> AbstractContextManager[object]:
        """See :meth:`SqlBackend.transaction`."""
        return SyncContext(self.core.transaction())

    def migrate(self) -> list[Migration]:
        """Apply pending migrations."""
        return drive(self.core.migrate())

    def migration_status(self) -> list[MigrationStatus]:
        """Known migrations with their applied time."""
        return drive(self.core.migration_status())

    def close(self) -> None:
        """Close every connection."""
        drive(self.core.aclose())


class SyncKeys:
    """:class:`TransactionKeys` for the synchronous API."""

    def __init__(self, keys: TransactionKeys) -> None:
        self._keys = keys

    def claim(self, key: str, request: str) -> str | None:
        """See :meth:`TransactionKeys.claim`."""
        return drive(self._keys.claim(key, request))

    def record(self, key: str, outcome: str) -> None:
        """See :meth:`TransactionKeys.record`."""
        drive(self._keys.record(key, outcome))
