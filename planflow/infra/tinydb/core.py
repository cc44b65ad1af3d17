"""The TinyDB driver's core: the add-on's ExecutionRepository and the store's metadata, as coroutines."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager

from tinydb import TinyDB

from planflow.config import RetrySettings
from planflow.errors import UnsupportedError
from planflow.infra.tinydb.executions import TinyDbExecutions
from planflow.infra.tinydb.metadata import TinyDbMetadata
from planflow.migration_records import Migration, MigrationStatus


class TinyDbCore:
    """The TinyDB driver's core (see ``planflow.infra.backends.Core``): serves only ``executions`` and
    ``metadata``; the SQL repositories are ``None`` (the provider says so by name). Its coroutines never suspend."""

    driver = "tinydb"
    tasks = None
    workflows = None
    auth = None
    #: No SQL database: no pool, no retries to report.
    database = None
    #: No transactions, so no idempotency keys of units of work.
    keys = None

    def __init__(self, db: TinyDB, retry: RetrySettings | None = None) -> None:
        self._db = db
        self.retry = retry or RetrySettings()
        self.executions = TinyDbExecutions(db)
        self.metadata = TinyDbMetadata(db, self.executions.locked)

    def transaction(self) -> AbstractAsyncContextManager[object]:
        """TinyDB has no transactions: group writes with ``provider.executions.batch()`` instead."""
        raise UnsupportedError(
            "the tinydb driver has no transactions; group writes with provider.executions.batch()"
        )

    async def migrate(self) -> list[Migration]:
        """A TinyDB store has no schema to migrate."""
        return []

    async def migration_status(self) -> list[MigrationStatus]:
        """A TinyDB store has no migrations."""
        return []

    async def aclose(self) -> None:
        """Close the store: fold its journal into the file and release its lock."""
        self._db.close()
