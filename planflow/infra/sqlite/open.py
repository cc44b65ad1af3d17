"""Opens the SQLite driver's core."""

from __future__ import annotations

from planflow.config import PlanflowConfig
from planflow.infra.drive import drive
from planflow.infra.sql.core import SqlCore
from planflow.infra.sqlite.database import SqliteDatabase
from planflow.infra.sqlite.dialect import MIGRATION_SQL, SQLITE


def open_core(config: PlanflowConfig) -> SqlCore:
    """The SQLite core for ``config.path`` (a file, created with mode 0600, or ``:memory:``); sqlite3 blocks, so
    its coroutines never suspend.

    Raises:
        ConfigError: the file cannot be opened (or, ``read_only``, does not exist).
        ForeignStoreError: opened ``read_only``, the file holds tables but no planflow schema.
    """
    core = SqlCore(SqliteDatabase(config), SQLITE, MIGRATION_SQL, config.idempotency_window)
    if config.read_only:
        try:
            drive(core.refuse_foreign(config.location))
        except BaseException:
            drive(core.aclose())
            raise
    return core
