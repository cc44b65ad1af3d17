"""Opens the PostgreSQL driver."""

from __future__ import annotations

from planflow.config import PlanflowConfig
from planflow.infra.postgres.database import PostgresDatabase
from planflow.infra.postgres.dialect import MIGRATION_SQL, POSTGRES
from planflow.infra.sql.backend import SqlBackend


def open_backend(config: PlanflowConfig) -> SqlBackend:
    """A PostgreSQL backend for ``config.url``, its pool open and its server checked.

    Raises:
        ConfigError: the URL is invalid, the login is refused or the database does not exist.
        TransientError: the server stayed unreachable for ``config.connect_timeout`` seconds.
    """
    return SqlBackend(PostgresDatabase(config), POSTGRES, MIGRATION_SQL)
