"""Opens the TinyDB driver: the add-on's ExecutionRepository on a journaled JSON file or in memory."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TypeVar

from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from planflow.config import PlanflowConfig
from planflow.errors import UnsupportedError
from planflow.infra.sql.migrations import Migration, MigrationStatus
from planflow.infra.tinydb.executions import TinyDbExecutionRepository
from planflow.infra.tinydb.journal import JournaledStorage

T = TypeVar("T")


class TinyDbBackend:
    """Serves only ``executions``; the SQL repositories are ``None`` (the Provider says so by name)."""

    driver = "tinydb"
    tasks = None
    workflows = None
    auth = None

    def __init__(self, db: TinyDB) -> None:
        self._db = db
        self.executions = TinyDbExecutionRepository(db)

    def transaction(self) -> AbstractContextManager[object]:
        """TinyDB has no transactions: group writes with ``provider.executions.batch()`` instead."""
        raise UnsupportedError(
            "the tinydb driver has no transactions; group writes with provider.executions.batch()"
        )

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Writes are already retried by the storage; run ``attempt`` once."""
        return attempt()

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
        return TinyDbBackend(TinyDB(storage=MemoryStorage))
    path = config.path or "planflow.json"
    return TinyDbBackend(TinyDB(path, storage=JournaledStorage, on_corrupt=config.tinydb_on_corrupt))
