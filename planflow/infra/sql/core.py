"""A SQL driver's core: its database, the repositories written once over it, and its migrator.

The core is asynchronous like everything under ``planflow.infra.sql``; the APIs are made over it by
``planflow.infra.backends`` (the synchronous one drives its coroutines on the caller's thread).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from planflow.config import RetrySettings
from planflow.errors import ForeignStoreError
from planflow.infra.sql.auth import SqlAuthRepository
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.executions import SqlExecutionRepository
from planflow.infra.sql.history import PartitionedHistory
from planflow.infra.sql.idempotency import IdempotencyKeys, TransactionKeys
from planflow.infra.sql.metadata import SqlMetadataRepository
from planflow.infra.sql.migrations import MigrationSql, Migrator
from planflow.infra.sql.tasks import SqlTaskRepository
from planflow.infra.sql.workflows import SqlWorkflowRepository
from planflow.migration_records import Migration, MigrationStatus


class SqlCore:
    """Everything a provider needs from a SQL driver, as coroutines (see ``planflow.infra.backends.Core``)."""

    def __init__(
        self,
        database: Database,
        dialect: Dialect,
        migration_sql: MigrationSql,
        idempotency_window: float,
        partitions: PartitionedHistory | None = None,
    ) -> None:
        self.driver = dialect.name
        self.database = database
        keys = IdempotencyKeys(database, dialect, idempotency_window)
        #: Idempotency keys of ``run_in_transaction``, claimed in the current transaction.
        self.keys = TransactionKeys(keys, database)
        self.tasks = SqlTaskRepository(database, dialect, keys)
        self.workflows = SqlWorkflowRepository(database, dialect, keys, partitions)
        self._partitions = partitions
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

    async def migrate(self) -> list[Migration]:
        """Apply pending migrations; then, where the history is partitioned, create its partitions ahead."""
        done = await self._migrator.migrate()
        if self._partitions is not None:
            await self._partitions.ensure_ahead()
        return done

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
