"""A SQL driver's backend: its database, the repositories written once over it, and its migrator."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from planflow.infra.sql.auth import SqlAuthRepository
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.executions import SqlExecutionRepository
from planflow.infra.sql.metadata import SqlMetadataRepository
from planflow.infra.sql.migrations import Migration, MigrationSql, MigrationStatus, Migrator
from planflow.infra.sql.tasks import SqlTaskRepository
from planflow.infra.sql.workflows import SqlWorkflowRepository

T = TypeVar("T")


class SqlBackend:
    """Everything a Provider needs from a SQL driver."""

    def __init__(self, database: Database, dialect: Dialect, migration_sql: MigrationSql) -> None:
        self.driver = dialect.name
        self.database = database
        self.tasks = SqlTaskRepository(database, dialect)
        self.workflows = SqlWorkflowRepository(database, dialect)
        self.auth = SqlAuthRepository(database, dialect)
        self.executions = SqlExecutionRepository(database, dialect)
        self.metadata = SqlMetadataRepository(database, dialect)
        self._migrator = Migrator(database, dialect, migration_sql)

    def transaction(self) -> AbstractContextManager[Connection]:
        """A unit of work joined by every repository call on this thread; nested use is a savepoint."""
        return self.database.transaction()

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Call ``attempt`` again while it fails transiently (bounded, jittered backoff)."""
        return self.database.retrying(attempt)

    def migrate(self) -> list[Migration]:
        """Apply pending migrations."""
        return self._migrator.migrate()

    def migration_status(self) -> list[MigrationStatus]:
        """Known migrations with their applied time."""
        return self._migrator.status()

    def close(self) -> None:
        """Close every connection."""
        self.database.close()
