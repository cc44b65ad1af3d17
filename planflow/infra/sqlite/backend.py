"""Opens the SQLite driver."""

from __future__ import annotations

from planflow.config import PlanflowConfig
from planflow.infra.drive import drive
from planflow.infra.sql.backend import SqlBackend, SyncSqlBackend
from planflow.infra.sqlite.database import SqliteDatabase
from planflow.infra.sqlite.dialect import MIGRATION_SQL, SQLITE


def open_core(config: PlanflowConfig) -> SqlBackend:
    """The SQLite backend for ``config.path`` (a file, created with mode 0600, or ``:memory:``)."""
    return SqlBackend(SqliteDatabase(config), SQLITE, MIGRATION_SQL, config.idempotency_window)


def open_backend(config: PlanflowConfig) -> SyncSqlBackend:
    """The SQLite backend of the synchronous API.

    Raises:
        ForeignStoreError: opened ``read_only``, the file holds tables but no planflow schema.
    """
    core = open_core(config)
    if config.read_only:
        try:
            drive(core.refuse_foreign(config.location))
        except BaseException:
            drive(core.aclose())
            raise
    return SyncSqlBackend(core)
