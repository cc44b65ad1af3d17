"""Opens the PostgreSQL driver's core, for the synchronous API (blocking psycopg) or the asynchronous one."""

from __future__ import annotations

from planflow.config import PlanflowConfig
from planflow.infra.drive import drive
from planflow.infra.postgres.database import PostgresDatabase
from planflow.infra.postgres.dialect import MIGRATION_SQL, POSTGRES
from planflow.infra.postgres.io import ASYNCIO, BLOCKING
from planflow.infra.postgres.partitions import HistoryPartitions
from planflow.infra.sql.core import SqlCore


def open_core(config: PlanflowConfig) -> SqlCore:
    """The PostgreSQL core for ``config.url`` over blocking connections, its pool open and its server checked.

    Raises:
        ConfigError: the URL is invalid, the login is refused or the database does not exist.
        TransientError: the server stayed unreachable for ``config.connect_timeout`` seconds (a port where
            nothing listens: about one second).
        ForeignStoreError: opened ``read_only``, the schema holds tables but no planflow schema.
    """
    database = drive(PostgresDatabase(config, BLOCKING).open())
    return drive(_opened(_core(database, config), config))


async def open_async_core(config: PlanflowConfig) -> SqlCore:
    """The same over psycopg's asyncio connections and pool, opened on the running event loop."""
    database = await PostgresDatabase(config, ASYNCIO).open()
    return await _opened(_core(database, config), config)


def _core(database: PostgresDatabase, config: PlanflowConfig) -> SqlCore:
    partitions = HistoryPartitions(database, config.history_partition)
    return SqlCore(database, POSTGRES, MIGRATION_SQL, config.idempotency_window, partitions)


async def _opened(core: SqlCore, config: PlanflowConfig) -> SqlCore:
    """``core``, after refusing a foreign schema when it is opened read-only (closed when refused)."""
    if config.read_only:
        try:
            await core.refuse_foreign(config.location)
        except BaseException:
            await core.aclose()
            raise
    return core
