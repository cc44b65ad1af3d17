"""SQLite connections: a pool of connections for a file, one shared connection for ``:memory:``.

Every connection runs in autocommit mode with WAL, ``foreign_keys=ON``, ``synchronous=NORMAL`` and a busy
timeout; units of work begin with ``BEGIN IMMEDIATE`` (writes) or ``BEGIN`` (consistent reads), so the write
lock is taken up front and never upgraded mid-transaction (an upgrade cannot wait and would fail at once).
SQLITE_BUSY left after the busy timeout surfaces as ``TransientError`` and the unit of work is retried.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Generator, Iterable
from contextlib import contextmanager
from pathlib import Path

from planflow.config import PlanflowConfig
from planflow.errors import ConfigError, DuplicateError, PlanflowError, TransientError, ValidationError
from planflow.infra.sql.database import Connection, Database, ForeignKeyViolation, Params, Row

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def translate(exc: sqlite3.Error) -> PlanflowError:
    """The planflow error for a sqlite3 exception (the caller chains the original)."""
    message = str(exc)
    code = getattr(exc, "sqlite_errorcode", None)
    if isinstance(exc, sqlite3.IntegrityError):
        if "FOREIGN KEY" in message:
            return ForeignKeyViolation(f"a referenced row does not exist ({message})")
        if "UNIQUE" in message or "PRIMARY KEY" in message:
            return DuplicateError(message)
        return ValidationError(f"rejected by the database: {message}")
    if (code is not None and code & 0xFF in _BUSY_CODES) or "locked" in message:
        return TransientError(f"SQLite database is busy: {message}")
    if "malformed JSON" in message:
        return ValidationError(f"rejected by the database: {message}")
    return PlanflowError(f"SQLite error: {message}")


class SqliteConnection(Connection):
    """A sqlite3 connection as the repositories see it."""

    __slots__ = ("_db", "raw")

    def __init__(self, raw: sqlite3.Connection, db: SqliteDatabase) -> None:
        self.raw = raw
        self._db = db

    def execute(self, sql: str, params: Params = ()) -> int:
        self._db.statements += 1
        try:
            return self.raw.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        self._db.statements += 1
        try:
            # fetchall: a RETURNING statement must run to completion before the transaction can commit.
            rows = self.raw.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return rows[0] if rows else None

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        self._db.statements += 1
        try:
            return self.raw.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        self._db.statements += 1
        try:
            self.raw.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def execute_script(self, script: str) -> None:
        # executescript() would COMMIT the caller's transaction first; run the statements one by one instead.
        statement = ""
        for line in script.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                self.execute(statement)
                statement = ""
        if statement.strip() and not all(
            part.strip().startswith("--") or not part.strip() for part in statement.splitlines()
        ):
            raise ValidationError(
                f"incomplete SQL statement at the end of a script: {statement.strip()[:80]!r}"
            )


class SqliteDatabase(Database):
    """A SQLite file (pooled connections) or ``:memory:`` (one connection shared under a lock)."""

    def __init__(self, config: PlanflowConfig) -> None:
        super().__init__(config.retry)
        self._config = config
        self._memory = config.is_memory
        self._path = config.path or "planflow.db"
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._shared_lock = threading.RLock()
        self._shared: sqlite3.Connection | None = None
        if self._memory:
            self._shared = self._open()
        else:
            self._create_file()
            self._release(self._open())

    def _create_file(self) -> None:
        path = Path(self._path)
        if not path.parent.is_dir():
            raise ConfigError(
                f"cannot open SQLite file {self._path!r}: folder {str(path.parent)!r} does not exist"
            )
        # Created here with 0600 so that a database of execution state is never world-readable; SQLite gives
        # its -wal and -shm files the same permissions.
        try:
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))
        except OSError as exc:
            raise ConfigError(f"cannot open SQLite file {self._path!r}: {exc.strerror}") from exc

    def _open(self) -> sqlite3.Connection:
        try:
            raw = sqlite3.connect(
                ":memory:" if self._memory else self._path,
                timeout=self._config.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=512,
            )
            raw.execute(f"PRAGMA busy_timeout = {int(self._config.busy_timeout * 1000)}")
            if not self._memory:
                raw.execute("PRAGMA journal_mode = WAL")
            raw.execute("PRAGMA synchronous = NORMAL")
            raw.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            error = translate(exc)
            if isinstance(error, TransientError):
                raise error from exc
            raise ConfigError(f"cannot open SQLite database {self._path!r}: {exc}") from exc
        return raw

    def _release(self, raw: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed and len(self._idle) < self._config.pool_max_size:
                self._idle.append(raw)
                return
        raw.close()

    @contextmanager
    def _connect(self) -> Generator[Connection, None, None]:
        if self._closed:
            raise PlanflowError("the provider is closed")
        if self._shared is not None:
            with self._shared_lock:
                yield SqliteConnection(self._shared, self)
            return
        with self._pool_lock:
            raw = self._idle.pop() if self._idle else None
        if raw is None:
            raw = self._open()
        try:
            yield SqliteConnection(raw, self)
        except BaseException:
            if raw.in_transaction:  # a failed rollback must not put a dirty connection back
                raw.close()
                raise
            self._release(raw)
            raise
        self._release(raw)

    def _begin(self, connection: Connection, *, write: bool) -> None:
        connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for raw in idle:
            raw.close()
        if self._shared is not None:
            with self._shared_lock:
                self._shared.close()
