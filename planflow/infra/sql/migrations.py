"""Numbered SQL migrations, applied once each and recorded with a checksum.

Files are ``migrations/<driver>/NNNN_name.sql`` (inside the wheel: ``planflow/migrations/<driver>/``). All
pending files apply in one transaction that holds the driver's migration lock (SQLite: the write lock of
``BEGIN IMMEDIATE``; Postgres: an advisory lock), so processes starting together apply each file once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from planflow.errors import MigrationError, SchemaTooNewError
from planflow.infra.sql.codec import now
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
from planflow.migration_records import Migration, MigrationStatus

TABLE = "planflow_migrations"
logger = logging.getLogger("planflow.migrations")
_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migrations_dir(driver: str) -> Traversable:
    """Where the migration files of ``driver`` are: inside the installed package, else the source tree."""
    packaged = resources.files("planflow") / "migrations" / driver
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "migrations" / driver


def load_migrations(driver: str) -> list[Migration]:
    """The migration files of ``driver`` in version order.

    Raises:
        MigrationError: a misnamed file, or versions that are not 1, 2, 3 ... without gaps.
    """
    found: list[Migration] = []
    for entry in migrations_dir(driver).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(
                f"{driver} migrations must be numbered 1, 2, 3 ...; found {migration.version} at {expected}"
            )
    return found


@dataclass(frozen=True, slots=True)
class MigrationSql:
    """A driver's statements for the runner: take the migration lock, create and find the record table, and
    name the first few tables (and views) of the store, whoever made them; and for a script that applies
    migrations by hand, how it begins its transaction and writes the time of applying."""

    lock: str
    create_table: str
    table_exists: str
    some_tables: str
    begin: str
    now: str


#: Records an applied migration (the runner binds these values; a script spells them out).
RECORD = f"INSERT INTO {TABLE} (version, name, checksum, applied_at) VALUES (?, ?, ?, ?)"


def migration_script(migrations: list[Migration], sql: MigrationSql) -> str:
    """The SQL that applies ``migrations`` and records them, as ``migrate`` would, in one transaction: for a
    person to review, or to run by hand (``psql -f``, ``sqlite3 file.db < script.sql``).

    Names and checksums are spelled out as literals: they come from the migration files (``NNNN_name.sql``,
    lowercase letters, digits and underscores; hex digits), never from input.
    """
    lines = [
        "-- planflow migrations, to be applied in one transaction (as 'planflow migrate' does)",
        f"{sql.begin};",
    ]
    if sql.lock:
        lines.append(f"{sql.lock};")
    lines.append(sql.create_table.rstrip().rstrip(";") + ";")
    for migration in migrations:
        lines += ["", f"-- {migration.version:04d}_{migration.name}.sql (sha256 {migration.checksum})"]
        lines.append(migration.sql.strip())
        values = f"{migration.version}, '{migration.name}', '{migration.checksum}', {sql.now}"
        lines.append(RECORD.replace("?, ?, ?, ?", values) + ";")
    lines += ["", "COMMIT;", ""]
    return "\n".join(lines)


class Migrator:
    """Applies and reports the migrations of one database."""

    def __init__(self, database: Database, dialect: Dialect, sql: MigrationSql) -> None:
        self._db = database
        self._dialect = dialect
        self._sql = sql
        self.migrations = load_migrations(dialect.name)

    @property
    def code_version(self) -> int:
        """The newest schema version this code knows."""
        return self.migrations[-1].version if self.migrations else 0

    async def _applied(self, conn: Connection) -> dict[int, tuple[str, str, datetime]]:
        rows = await conn.fetch_all(
            f"SELECT version, name, checksum, applied_at FROM {TABLE} ORDER BY version"
        )
        return {int(r[0]): (r[1], r[2], self._dialect.load_ts(r[3])) for r in rows}

    def _check(self, applied: dict[int, tuple[str, str, datetime]]) -> None:
        newest = max(applied, default=0)
        if newest > self.code_version:
            raise SchemaTooNewError(
                f"database schema version {newest} is newer than this planflow's version {self.code_version}; "
                "upgrade planflow",
                database_version=newest,
                code_version=self.code_version,
            )
        for migration in self.migrations:
            record = applied.get(migration.version)
            if record is not None and record[1] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name}.sql was edited after it was applied "
                    f"(checksum {record[1][:12]}... in the database, {migration.checksum[:12]}... on disk)"
                )

    async def _read_applied(self) -> dict[int, tuple[str, str, datetime]]:
        async def work(conn: Connection) -> dict[int, tuple[str, str, datetime]]:
            exists = await conn.fetch_one(self._sql.table_exists)
            return await self._applied(conn) if exists else {}

        return await self._db.run(work, write=False)

    async def foreign_tables(self) -> list[str]:
        """The first tables of a store that holds tables but no planflow schema (``[]`` for planflow's own
        stores and for empty ones). Reads only."""

        async def work(conn: Connection) -> list[str]:
            if await conn.fetch_one(self._sql.table_exists):
                return []
            return [str(row[0]) for row in await conn.fetch_all(self._sql.some_tables)]

        return await self._db.read(work)

    async def migrate(self) -> list[Migration]:
        """Apply every pending migration in one locked transaction; return those applied (none: no-op).

        The versions are read first without any lock, so that opening an up-to-date store never waits for
        another writer; the migration lock is taken only when something is pending.

        Raises:
            SchemaTooNewError: the database is newer than the code (both versions named).
            MigrationError: an applied file was edited, or a migration failed (nothing of it is kept).
        """
        applied = await self._read_applied()
        self._check(applied)
        if all(m.version in applied for m in self.migrations):
            return []

        async def work(conn: Connection) -> list[Migration]:
            if self._sql.lock:
                await conn.execute(self._sql.lock)
            await conn.execute_script(self._sql.create_table)
            applied = await self._applied(conn)
            self._check(applied)
            done: list[Migration] = []
            for migration in self.migrations:
                if migration.version in applied:
                    continue
                try:
                    await conn.execute_script(migration.sql)
                except Exception as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name}.sql failed: {exc}"
                    ) from exc
                await conn.execute(
                    RECORD,
                    [migration.version, migration.name, migration.checksum, self._dialect.ts_param(now())],
                )
                done.append(migration)
            return done

        # Idempotent: a run again after a lost COMMIT reads what was applied and applies only the rest.
        done = await self._db.run(work, idempotent=True)
        for migration in done:
            logger.info(
                "applied migration %04d_%s",
                migration.version,
                migration.name,
                extra={"planflow_migration": migration.version, "planflow_driver": self._dialect.name},
            )
        return done

    async def status(self) -> list[MigrationStatus]:
        """Every known migration with its applied time, ``None`` when pending.

        Raises:
            SchemaTooNewError, MigrationError: as for :meth:`migrate`.
        """
        applied = await self._read_applied()
        self._check(applied)
        return [
            MigrationStatus(
                m.version, m.name, applied[m.version][2] if m.version in applied else None, m.checksum
            )
            for m in self.migrations
        ]
