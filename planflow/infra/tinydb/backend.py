"""Opens the TinyDB driver: the add-on's ExecutionRepository on a journaled JSON file or in memory."""

from __future__ import annotations

from contextlib import AbstractContextManager

from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from planflow.config import PlanflowConfig, RetrySettings
from planflow.errors import UnsupportedError
from planflow.infra.tinydb.executions import TinyDbExecutionRepository
from planflow.infra.tinydb.journal import JournaledStorage
from planflow.infra.tinydb.metadata import TinyDbMetadataRepository
from planflow.schema import Migration, MigrationStatus


class TinyDbBackend:
    """Serves only ``executions``; the SQL repositories are ``None`` (the Provider says so by name)."""

    driver = "tinydb"
    tasks = None
    workflows = None
    auth = None
    #: No transactions, so no idempotency keys of units of work.
    keys = None

    def __init__(self, db: TinyDB, retry: RetrySettings | None = None) -> None:
        self._db = db
        self.retry = retry or RetrySettings()
        self.executions = TinyDbExecutionRepository(db)
        self.metadata = TinyDbMetadataRepository(db, self.executions.batch)

    def transaction(self) -> AbstractContextManager[object]:
        """TinyDB has no transactions: group writes with ``provider.executions.batch()`` instead."""
        raise UnsupportedError(
            "the tinydb driver has no transactions; group writes with provider.executions.batch()"
        )

    def migrate(self) -> list[Migration]:
        """A TinyDB store has no schema to migrate."""
        return []

    def migration_status(self) -> list[MigrationStatus]:
        """A TinyDB store has no migrations."""
        return []

    def close(self) -> None:
        """Close the store: fold its journal into the file and release its lock."""
        self._db.close()


def open_backend(config: PlanflowConfig) -> TinyDbBackend:
    """A TinyDB backend: ``tinydb://memory`` in memory, else the journaled JSON file ``config.path``.

    Raises:
        StoreLockedError: The file is open in this process or another one.
        CorruptStoreError: The file or its journal cannot be decoded (and ``tinydb_on_corrupt`` is ``raise``).
    """
    if config.is_memory:
        return TinyDbBackend(TinyDB(storage=MemoryStorage), config.retry)
    path = config.path or "planflow.json"
    return TinyDbBackend(
        TinyDB(path, storage=JournaledStorage, on_corrupt=config.tinydb_on_corrupt), config.retry
    )
