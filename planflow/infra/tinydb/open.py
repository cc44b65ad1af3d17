"""Opens the TinyDB driver's core: the add-on's ExecutionRepository on a journaled JSON file or in memory."""

from __future__ import annotations

from typing import cast

from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from planflow.config import PlanflowConfig
from planflow.errors import ConfigError, ForeignStoreError
from planflow.infra.execution_rules import EXECUTIONS, OCCURRENCES, TASKS
from planflow.infra.tinydb.core import TinyDbCore
from planflow.infra.tinydb.journal import JournaledStorage
from planflow.infra.tinydb.metadata import METADATA


def open_core(config: PlanflowConfig) -> TinyDbCore:
    """The TinyDB core: ``tinydb://memory`` in memory, else the journaled JSON file ``config.path``.

    With ``config.read_only`` the file is only read, as it is when opened (see
    :class:`~planflow.infra.tinydb.journal.JournaledStorage`): nothing is created, locked or compacted, every
    write raises :class:`~planflow.errors.ReadOnlyError`, and a file that is not a planflow store is refused.
    A store opened for writing is a planflow store from then on: planflow's tables go beside any others.

    Raises:
        ConfigError: ``read_only`` and there is no store at the path (or it is ``tinydb://memory``).
        ForeignStoreError: ``read_only`` and the file is not a planflow store: JSON that is not a TinyDB
            document, or one whose tables are none of planflow's. Nothing was changed.
        StoreLockedError: The file is open for writing in this process or another one.
        CorruptStoreError: The file or its journal cannot be decoded (and ``tinydb_on_corrupt`` is ``raise``,
            or the store is opened read-only).
    """
    if config.is_memory:
        if config.read_only:
            raise ConfigError("a tinydb://memory store cannot be opened read-only: it would always be empty")
        return TinyDbCore(TinyDB(storage=MemoryStorage), config.retry)
    path = config.path or "planflow.json"
    db = TinyDB(
        path, storage=JournaledStorage, on_corrupt=config.tinydb_on_corrupt, read_only=config.read_only
    )
    if config.read_only:
        _refuse_foreign(db)
    return TinyDbCore(db, config.retry)


#: The tables planflow keeps in a TinyDB store: a store holding tables, but none of these, is not planflow's.
PLANFLOW_TABLES = frozenset({TASKS.table, OCCURRENCES.table, EXECUTIONS.table, METADATA})


def _refuse_foreign(db: TinyDB) -> None:
    storage = cast("JournaledStorage", db.storage)
    tables = storage.table_names()
    if tables and PLANFLOW_TABLES.isdisjoint(tables):
        db.close()
        raise ForeignStoreError(
            f"{storage.path} is not a planflow store: it is a TinyDB document whose tables "
            f"({', '.join(sorted(tables))}) are none of planflow's ({', '.join(sorted(PLANFLOW_TABLES))}); it was "
            f"left untouched (planflow migrate --force adopts it)"
        )
