"""Fresh databases for the benchmarks: one SQLite file or one Postgres schema per implementation and workload.

The schema always comes from planflow's own migrations (opening a provider); the raw and SQLAlchemy variants
then connect to the same file or schema.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from benchmarks.stores.base import PLANFLOW, RAW, SQLALCHEMY, TaskStore
from planflow import Provider, open_provider

if TYPE_CHECKING:
    from sqlalchemy import Engine

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
_counter = itertools.count()


class BenchDatabase(ABC):
    """One fresh database holding planflow's schema."""

    driver: str
    #: The planflow URL of this database.
    url: str

    @abstractmethod
    def open_provider(self) -> Provider:
        """A planflow provider on this database (its first opening creates the schema)."""

    @abstractmethod
    def _raw_store(self) -> TaskStore:
        """The hand-written driver code's store on this database."""

    @abstractmethod
    def _engine(self) -> Engine:
        """A SQLAlchemy engine on this database."""

    def open_store(self, implementation: str) -> TaskStore:
        """An implementation's store on this database."""
        if implementation == PLANFLOW:
            from benchmarks.stores.planflow_store import PlanflowStore

            return PlanflowStore(self.open_provider())
        if implementation == RAW:
            return self._raw_store()
        if implementation == SQLALCHEMY:
            from benchmarks.stores.orm import OrmStore

            return OrmStore(self._engine())
        raise ValueError(f"unknown implementation {implementation!r}")

    @abstractmethod
    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        """Run one untimed housekeeping statement (``?`` placeholders) in autocommit mode."""

    @abstractmethod
    def maintain(self) -> None:
        """Untimed housekeeping after seeding and between write runs, so every run starts alike."""

    @abstractmethod
    def drop(self) -> None:
        """Delete the database."""


class DatabaseFactory(ABC):
    """Creates :class:`BenchDatabase` objects of one driver."""

    driver: str

    @abstractmethod
    def create(self, label: str) -> BenchDatabase:
        """A new, migrated, empty database."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Remove what the factory left behind."""


class SqliteDatabase(BenchDatabase):
    """A SQLite file in WAL mode."""

    driver = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        open_provider(self.url).close()

    def open_provider(self) -> Provider:
        return open_provider(self.url)

    def _raw_store(self) -> TaskStore:
        from benchmarks.stores.raw_sqlite import RawSqliteStore

        return RawSqliteStore(str(self.path))

    def _engine(self) -> Engine:
        from benchmarks.stores.orm import sqlite_engine

        return sqlite_engine(str(self.path))

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        import sqlite3

        conn = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        try:
            conn.execute(sql, params)
        finally:
            conn.close()

    def maintain(self) -> None:
        self.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def drop(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)


class SqliteFactory(DatabaseFactory):
    """SQLite files in a private temporary folder."""

    driver = "sqlite"

    def __init__(self, workdir: str | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="planflow-bench-", dir=workdir))

    def create(self, label: str) -> BenchDatabase:
        return SqliteDatabase(self.folder / f"{label}-{next(_counter)}.db")

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with a libpq ``options`` parameter making ``schema`` the search path."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}', safe='')}"


class PostgresDatabase(BenchDatabase):
    """A schema of its own in the benchmark's Postgres database, created here and dropped afterwards."""

    driver = "postgres"

    def __init__(self, base_url: str, schema: str) -> None:
        import psycopg
        from psycopg.sql import SQL, Identifier

        self.base_url = base_url
        self.schema = schema
        self.url = with_search_path(base_url, schema)
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(SQL("CREATE SCHEMA {}").format(Identifier(schema)))
        open_provider(self.url).close()

    def open_provider(self) -> Provider:
        return open_provider(self.url)

    def _raw_store(self) -> TaskStore:
        from benchmarks.stores.raw_postgres import RawPostgresStore

        return RawPostgresStore(self.base_url, self.schema)

    def _engine(self) -> Engine:
        from benchmarks.stores.orm import postgres_engine

        return postgres_engine(self.base_url, self.schema)

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        import psycopg

        with psycopg.connect(self.base_url, autocommit=True, options=f"-csearch_path={self.schema}") as conn:
            conn.execute(sql.replace("?", "%s").encode(), params)

    def maintain(self) -> None:
        self.execute("VACUUM ANALYZE task_states")

    def drop(self) -> None:
        import psycopg
        from psycopg.sql import SQL, Identifier

        with psycopg.connect(self.base_url, autocommit=True) as conn:
            conn.execute(SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(Identifier(self.schema)))


class PostgresFactory(DatabaseFactory):
    """Schemas named ``pfbench_<pid>_<n>`` in one Postgres database."""

    driver = "postgres"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._created: list[PostgresDatabase] = []

    def create(self, label: str) -> BenchDatabase:
        database = PostgresDatabase(self.base_url, f"pfbench_{os.getpid()}_{next(_counter)}")
        self._created.append(database)
        return database

    def close(self) -> None:
        for database in self._created:
            database.drop()
        self._created.clear()


def postgres_problem(url: str) -> str | None:
    """Why the Postgres benchmarks cannot run against ``url`` (``None``: they can)."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'planflow[bench]')"
    try:
        import planflow.infra.postgres.open  # noqa: F401  # pyright: ignore[reportUnusedImport]
    except ImportError as exc:
        return f"planflow's Postgres driver is not importable yet ({exc})"
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"cannot connect to {url}: {exc}".strip()
    return None
