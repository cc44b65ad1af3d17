"""SQLite connections: a pool of connections for a file, one shared connection for ``:memory:``.

Every connection runs in autocommit mode with WAL, ``foreign_keys=ON``, ``synchronous=NORMAL`` and a busy
timeout; units of work begin with ``BEGIN IMMEDIATE`` (writes) or ``BEGIN`` (consistent reads), so the write
lock is taken up front and never upgraded mid-transaction (an upgrade cannot wait and would fail at once).
SQLITE_BUSY left after the busy timeout surfaces as ``TransientError`` and the unit of work is retried.
The writers of one process take turns on a lock of their own before they ask SQLite for its write lock: one
hands over to the next the moment it is done, where SQLite's busy handler would have them sleep and poll
(1, 2, 5, 10 ... ms). Writers in other processes still meet in SQLite's lock.

sqlite3 blocks; these coroutines never suspend. The synchronous API runs them on the caller's thread, the
asynchronous API on worker threads (``planflow.infra.threaded``).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from time import perf_counter
from typing import TypeVar

from planflow.config import PlanflowConfig
from planflow.errors import (
    ClosedError,
    ConfigError,
    DatabaseError,
    DuplicateError,
    PlanflowError,
    ReadOnlyError,
    TransientError,
    UnsupportedError,
    ValidationError,
)
from planflow.infra.sql.database import (
    Connection,
    Database,
    ForeignKeyViolation,
    Interrupted,
    Params,
    Row,
    StatementLog,
    Watcher,
    owner,
    statement_rows,
)

T = TypeVar("T")
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

#: Connections inherited from a parent process: kept referenced and never used or closed in the child.
_abandoned: list[object] = []


#: Extended result codes of constraint violations that name a duplicate key.
_DUPLICATE_CODES = frozenset({sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY})


def translate(exc: sqlite3.Error) -> PlanflowError:
    """The planflow error for a sqlite3 exception (the caller chains the original), by its result code."""
    message = str(exc)
    code: int = getattr(exc, "sqlite_errorcode", None) or 0
    if code == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
        return ForeignKeyViolation(f"a referenced row does not exist ({message})")
    if code in _DUPLICATE_CODES:
        return DuplicateError(message)
    if code & 0xFF == sqlite3.SQLITE_CONSTRAINT:
        return ValidationError(f"rejected by the database: {message}")
    if code & 0xFF == sqlite3.SQLITE_READONLY:
        return ReadOnlyError(f"the SQLite database is read-only: {message}")
    if code & 0xFF in _BUSY_CODES:
        return TransientError(f"SQLite database is busy: {message}")
    if code == sqlite3.SQLITE_INTERRUPT:
        return Interrupted(f"SQLite call interrupted: {message}")
    return DatabaseError(f"SQLite error: {message}")


class SqliteConnection(Connection):
    """A sqlite3 connection as the repositories see it."""

    __slots__ = ("_db", "changes", "raw", "writing")

    def __init__(self, raw: sqlite3.Connection, db: SqliteDatabase) -> None:
        self.raw = raw
        self._db = db
        #: ``raw.total_changes`` when the connection was lent: more when given back means it wrote.
        self.changes = 0
        #: Whether it holds this process's turn to write (given back with the connection).
        self.writing = False

    def _run(self, sql: str, call: Callable[[], T]) -> T:
        db = self._db
        if not db.log.timing():
            try:
                return call()
            except sqlite3.Error as exc:
                raise translate(exc) from exc
        started = perf_counter()
        try:
            result = call()
        except sqlite3.Error as exc:
            error = translate(exc)
            db.log.done(sql, started, None, error)
            raise error from exc
        db.log.done(sql, started, statement_rows(result))
        return result

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self._run(sql, lambda: self.raw.execute(sql, params).rowcount)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        # fetchall: a RETURNING statement must run to completion before the transaction can commit.
        rows = self._run(sql, lambda: self.raw.execute(sql, params).fetchall())
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        return self._run(sql, lambda: self.raw.execute(sql, params).fetchall())

    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        self._run(sql, lambda: self.raw.executemany(sql, rows))

    async def iterate(self, sql: str, params: Params = (), *, batch: int = 1000) -> AsyncIterator[list[Row]]:
        cursor = self._run(sql, lambda: self.raw.execute(sql, params))
        try:
            while rows := self._run(sql, lambda: cursor.fetchmany(batch)):
                yield rows
        finally:
            cursor.close()

    async def execute_script(self, script: str) -> None:
        # executescript() would COMMIT the caller's transaction first; run the statements one by one instead.
        statement = ""
        for line in script.splitlines(keepends=True):
            statement += line
            if sqlite3.complete_statement(statement):
                await self.execute(statement)
                statement = ""
        if statement.strip() and not all(
            part.strip().startswith("--") or not part.strip() for part in statement.splitlines()
        ):
            raise ValidationError(
                f"incomplete SQL statement at the end of a script: {statement.strip()[:80]!r}"
            )


#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"
#: How often a watcher looks at ``PRAGMA data_version`` for commits of other processes.
POLL_INTERVAL = 0.05
#: Pages in the WAL at which a checkpoint is due: SQLite's default autocheckpoint.
CHECKPOINT_PAGES = 1000
#: Writes of this process between the first checkpoints, before it has measured how many pages a write adds.
FIRST_CHECKPOINT_WRITES = 100
#: Size above which the WAL file is truncated when SQLite restarts it (after a large purge, say); below it the
#: file keeps its size and is overwritten from the start, which costs writes less than growing it again.
JOURNAL_SIZE_LIMIT = 64 * 1024 * 1024


class _Checkpoints:
    """When a write of this process runs a checkpoint (see ``SqliteDatabase.release``): after as many of its
    writes as add about :data:`CHECKPOINT_PAGES` pages to the WAL, a number learnt from each checkpoint (PASSIVE
    reports how many pages the WAL held). Writes of other processes make the WAL grow faster than this process's
    count says, so their checkpoints come sooner: never later than SQLite's own would. Counted without a lock:
    two threads counting at once may miss a write, which only delays a checkpoint by one.
    """

    __slots__ = ("every", "writes")

    def __init__(self) -> None:
        self.writes = 0
        self.every = FIRST_CHECKPOINT_WRITES

    def due(self) -> bool:
        """Count one write; whether a checkpoint is due after it."""
        self.writes += 1
        return self.writes >= self.every

    def done(self, pages: int) -> None:
        """A checkpoint found ``pages`` pages in the WAL (``-1``: none ran): aim the next one at the target."""
        if pages > 0:
            self.every = max(1, min(10 * CHECKPOINT_PAGES, CHECKPOINT_PAGES * self.writes // pages))
        self.writes = 0


class _SqliteWatcher(Watcher):
    """Wakes on this process's commits at once, and on other processes' within :data:`POLL_INTERVAL`.

    ``PRAGMA data_version`` changes, for a connection, whenever another connection (of any process) has
    committed; the watcher reads it on a connection of its own, every poll interval.
    """

    def __init__(self, db: SqliteDatabase, connection: SqliteConnection | None) -> None:
        self._db = db
        self._connection = connection
        self._version = self._data_version()

    def _data_version(self) -> int:
        if self._connection is None:
            return 0
        row = self._connection.raw.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    async def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        changes = self._db._changes  # pyright: ignore[reportPrivateUsage]
        with changes:
            generation = self._db._generation  # pyright: ignore[reportPrivateUsage]
        while (remaining := deadline - time.monotonic()) > 0:
            with changes:
                changes.wait(min(remaining, POLL_INTERVAL))
                if self._db._generation != generation:  # pyright: ignore[reportPrivateUsage]
                    return
            version = self._data_version()
            if version != self._version:
                self._version = version
                return


#: How often a wait for the turn to write looks whether its caller was cancelled (see ``SqliteDatabase.interrupt``).
STOP_POLL = 0.02


class _TurnLock:
    """This process's turn to write: handed to its waiters in the order they asked.

    ``threading.Lock`` lets the thread that releases it take it again before a waiter wakes, so one busy
    writer (a purge running batch after batch) could keep the others waiting for many turns in a row. Here a
    release hands the lock straight to the longest waiter, which holds it as it wakes.

    A thread never waits for a turn that it holds itself (through another asyncio task running on it, say, whose
    transaction is open across an ``await``): nothing could end that turn while it waited, so it is refused at
    once.
    """

    __slots__ = ("_guard", "_held", "_holder", "_waiters")

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._held = False
        #: The thread holding the turn, while it is held.
        self._holder: int | None = None
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self, timeout: float, stop: Callable[[], bool] | None = None) -> bool:
        """Take the turn within ``timeout`` seconds; False when it did not come.

        ``stop``, when given, is asked every :data:`STOP_POLL` seconds of the wait: true ends it (raising
        :class:`Interrupted`).

        Raises:
            UnsupportedError: this very thread holds the turn (another task of its event loop does).
            Interrupted: ``stop()`` became true while waiting.
        """
        me = threading.get_ident()
        with self._guard:
            if not self._held:
                self._held, self._holder = True, me
                return True
            if self._holder == me:
                raise UnsupportedError(
                    "a write of this SQLite database waits for a transaction that another asyncio task on this "
                    "thread holds open across an await: the synchronous API would block the event loop that task "
                    "needs to finish. In asyncio code use open_async_provider(), or do not await inside "
                    "provider.transaction()"
                )
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            slice_ = remaining if stop is None else min(remaining, STOP_POLL)
            if gate.acquire(timeout=max(slice_, 0)):
                self._holder = me
                return True
            if remaining <= slice_ or (stop is not None and stop()):
                break
        with self._guard:
            try:
                self._waiters.remove(gate)
            except ValueError:  # handed over as the wait ended: the turn is ours
                self._holder = me
                return True
        if stop is not None and stop():
            raise Interrupted(
                "the wait for this process's turn to write was stopped: its caller was cancelled"
            )
        return False

    def release(self) -> None:
        """End the turn: the longest waiter has it now, or nobody does."""
        with self._guard:
            self._holder = None
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


class _OwnedLock:
    """The lock of the one ``:memory:`` connection, held by a task or thread (see ``database.owner``).

    A thread's RLock would let a second asyncio task on the same thread into a transaction of the first;
    that task is refused instead (waiting would block the thread the first task needs to finish).
    """

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._owner: object = None
        self._thread: int | None = None
        self._count = 0

    def acquire(self) -> None:
        me, thread = owner(), threading.get_ident()
        with self._condition:
            while self._count and self._owner != me:
                if self._thread == thread:
                    raise UnsupportedError(
                        "the in-memory SQLite database is inside a transaction of another asyncio task on "
                        "this thread, and waiting for it would block the event loop it needs; in asyncio code "
                        "use open_async_provider(), else a database file (or one task at a time)"
                    )
                self._condition.wait()
            self._owner, self._thread = me, thread
            self._count += 1

    def release(self) -> None:
        with self._condition:
            self._count -= 1
            if not self._count:
                self._owner = self._thread = None
                self._condition.notify()


class SqliteDatabase(Database):
    """A SQLite file (pooled connections) or ``:memory:`` (one connection shared under a lock)."""

    def __init__(self, config: PlanflowConfig) -> None:
        super().__init__(config.retry, StatementLog("sqlite", config.slow_statement_ms))
        self._config = config
        self._memory = config.is_memory
        self.streams_in_transaction = not self._memory
        self._path = config.path or "planflow.db"
        self._wal = f"{self._path}-wal"
        self._checkpoints = _Checkpoints()
        #: Watchers waiting on this process's commits: a write wakes them only when there are any.
        self._watchers = 0
        # Idle connections, already wrapped: deque.pop and .append are atomic, so lending one takes no lock.
        self._idle: deque[SqliteConnection] = deque()
        self._closed = False
        self._changes = threading.Condition()
        self._generation = 0
        self._shared_lock = _OwnedLock()
        self._writer = _TurnLock()
        self._shared: SqliteConnection | None = None
        self.read_only = config.read_only
        #: A file in WAL mode (planflow opens every writable file so): a read takes no lock of this process and
        #: never waits for a writer, so the asynchronous API may run point reads on the event loop.
        self.reads_never_wait = not self._memory and not self.read_only
        # What interrupt() needs: the connection each thread uses, the threads asked to stop, and those committing.
        # Kept only when calls run on worker threads for asyncio callers (see interrupt()).
        self.interruptible = False
        self._interrupt_guard = threading.Lock()
        self._in_use: dict[int, SqliteConnection] = {}
        self._stopping: set[int] = set()
        self._committing: set[int] = set()
        if self._memory:
            self._shared = SqliteConnection(self._open(), self)
        else:
            if self.read_only:
                self._check_readable()
            else:
                self._create_file()
            self._put_back(SqliteConnection(self._open(), self))

    def _check_readable(self) -> None:
        """Refuse, opened read-only, a file that is missing or not a SQLite database (neither is changed)."""
        try:
            with open(self._path, "rb") as file:
                header = file.read(len(SQLITE_HEADER))
        except FileNotFoundError:
            raise ConfigError(
                f"no SQLite file at {self._path!r} (opened read-only, so none was created)"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read SQLite file {self._path!r}: {exc.strerror}") from exc
        if header and header != SQLITE_HEADER:
            raise ConfigError(
                f"{self._path!r} is not a SQLite database (it does not start with SQLite's header); it was left "
                "unchanged"
            )

    def _read_only_target(self) -> tuple[str, bool]:
        """What a read-only connection opens, and whether it is a URI.

        A database in rollback-journal mode, or in WAL mode with its ``-wal`` file present (another connection
        has it open, or a crash left it), is opened with ``mode=ro``. In WAL mode without a ``-wal`` file,
        ``mode=ro`` would create the ``-wal`` and ``-shm`` files and could not remove them; a read-write
        connection that never writes (``query_only``) removes them again when it closes, as the last one.
        """
        wal_mode = False
        with suppress(OSError), open(self._path, "rb") as file:
            header = file.read(20)
            wal_mode = len(header) == 20 and header[18] == header[19] == 2
        if wal_mode and not os.path.exists(self._wal):
            return self._path, False
        return f"{Path(self._path).absolute().as_uri()}?mode=ro", True

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
        target, uri = (":memory:" if self._memory else self._path), False
        if self.read_only and not self._memory:
            target, uri = self._read_only_target()
        try:
            raw = sqlite3.connect(
                target,
                timeout=self._config.busy_timeout,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=512,
                uri=uri,
            )
            raw.execute(f"PRAGMA busy_timeout = {int(self._config.busy_timeout * 1000)}")
            if self.read_only:
                # Read-only: no persistent setting (the journal mode) is changed, and no write gets through.
                raw.execute("PRAGMA query_only = ON")
            elif not self._memory:
                raw.execute("PRAGMA journal_mode = WAL")
                # Checkpoints are run by release(), after this process's turn to write is handed on; SQLite's
                # own would run inside COMMIT, with every other writer of the process waiting.
                raw.execute("PRAGMA wal_autocheckpoint = 0")
                raw.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            raw.execute("PRAGMA synchronous = NORMAL")
            raw.execute("PRAGMA foreign_keys = ON")
        except sqlite3.Error as exc:
            error = translate(exc)
            if isinstance(error, TransientError):
                raise error from exc
            raise ConfigError(f"cannot open SQLite database {self._path!r}: {exc}") from exc
        return raw

    def _put_back(self, connection: SqliteConnection) -> None:
        if not self._closed and len(self._idle) < self._config.pool_max_size:
            self._idle.append(connection)
            if not self._closed:
                return
            # close() ran meanwhile: it may have missed this one.
            with suppress(IndexError, ValueError):
                self._idle.remove(connection)
        connection.raw.close()

    async def acquire(self) -> Connection:
        if self._closed:
            raise ClosedError("the provider is closed")
        if self.interruptible:
            self._stop_if_asked()
        if self._shared is not None:
            self._shared_lock.acquire()
            connection = self._shared
        else:
            try:
                connection = self._idle.pop()
            except IndexError:
                connection = SqliteConnection(self._open(), self)
        connection.changes = connection.raw.total_changes
        if self.interruptible:
            self._in_use[threading.get_ident()] = connection
        return connection

    # Interrupting a call whose asyncio caller was cancelled ---------------------------------------------------

    def interrupt(self, thread: int) -> None:
        """Stop what ``thread`` does on this database where it can be stopped, because the asyncio caller it
        runs for was cancelled: a wait for this process's turn to write ends, a running statement other than a
        COMMIT is interrupted (SQLite then rolls back its unit of work), and no new connection is lent to the
        thread until :meth:`settle`. A COMMIT already running finishes. The call then ends with its outcome
        settled (applied or not), and is not retried.
        """
        with self._interrupt_guard:
            self._stopping.add(thread)
            connection = self._in_use.get(thread)
            if connection is not None and thread not in self._committing:
                connection.raw.interrupt()

    def settle(self, thread: int) -> None:
        """The interrupted call of ``thread`` has ended: the thread may work again."""
        with self._interrupt_guard:
            self._stopping.discard(thread)

    def _stop_if_asked(self) -> None:
        if threading.get_ident() in self._stopping:
            raise Interrupted("the call was stopped: its asyncio caller was cancelled")

    def _stopping_here(self) -> bool:
        return threading.get_ident() in self._stopping

    async def uninterrupted(self, work: Awaitable[T]) -> T:
        if not self.interruptible:
            return await work
        thread = threading.get_ident()
        with self._interrupt_guard:  # interrupt() sees the mark, or interrupted before the COMMIT began
            self._committing.add(thread)
        try:
            return await work
        finally:
            with self._interrupt_guard:
                self._committing.discard(thread)

    async def acquire_for_write(self) -> Connection:
        connection = await self.acquire()
        assert isinstance(connection, SqliteConnection)
        if self._shared is None:  # the one in-memory connection is already had by one at a time
            stop = self._stopping_here if self.interruptible else None
            try:
                turn = self._writer.acquire(self._config.busy_timeout, stop)
            except BaseException:
                await self.release(connection)
                raise
            if not turn:
                await self.release(connection)
                raise TransientError(
                    f"SQLite database is busy: another writer of this process held it for busy_timeout="
                    f"{self._config.busy_timeout}s"
                )
            connection.writing = True
        return connection

    async def release(self, connection: Connection) -> None:
        assert isinstance(connection, SqliteConnection)
        if self.interruptible:
            thread = threading.get_ident()
            if self._in_use.get(thread) is connection:
                del self._in_use[thread]
        wrote = connection.raw.total_changes != connection.changes and not connection.raw.in_transaction
        if connection.writing:
            connection.writing = False
            self._writer.release()
        if wrote:
            if self._watchers:
                self._wrote()
            if self._shared is None and self._checkpoints.due():
                self._checkpoint(connection)
        if self._shared is not None:
            self._shared_lock.release()
            return
        if connection.raw.in_transaction:  # a failed rollback must not put a dirty connection back
            connection.raw.close()
        else:
            self._put_back(connection)

    async def begin_on(self, connection: Connection, *, write: bool, resolvable: bool) -> None:
        await connection.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def _checkpoint(self, connection: SqliteConnection) -> None:
        """Copy the WAL into the database (see :class:`_Checkpoints` for when).

        PASSIVE: it waits for no reader or writer, and a writer of this process may write meanwhile. One that
        cannot finish (a reader still needs old pages) copies what it can; the next one does the rest.
        """
        try:
            row = connection.raw.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:  # busy or interrupted: try again after the next write
            return
        self._checkpoints.done(-1 if row is None else int(row[1]))

    def _wrote(self) -> None:
        """A connection of this process committed a write: wake the watchers at once."""
        with self._changes:
            self._generation += 1
            self._changes.notify_all()

    @asynccontextmanager
    async def watch(self) -> AsyncGenerator[Watcher, None]:
        connection = None if self._memory else SqliteConnection(self._open(), self)
        with self._changes:
            self._watchers += 1
        try:
            yield _SqliteWatcher(self, connection)
        finally:
            with self._changes:
                self._watchers -= 1
            if connection is not None:
                connection.raw.close()

    async def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def aclose(self) -> None:
        self._closed = True
        if self._idle and not self._memory and not self.read_only:
            # What SQLite recommends before a connection closes: refresh the statistics the planner uses, where
            # the connection's queries showed them stale (cheap when nothing changed).
            with suppress(sqlite3.Error):
                self._idle[0].raw.execute("PRAGMA optimize")
        while self._idle:
            with suppress(IndexError):
                self._idle.pop().raw.close()
        if self._shared is not None:
            self._shared_lock.acquire()
            try:
                self._shared.raw.close()
            finally:
                self._shared_lock.release()

    def after_fork(self) -> None:
        # SQLite forbids carrying a connection across fork(): the child's copies would believe they hold
        # locks that stayed with the parent. They are kept referenced (so never closed by the collector) and
        # never used; the child opens its own. The in-memory database is the child's private copy, so it
        # keeps it, with a fresh lock (another thread may have held the old one at the fork).
        self._shared_lock = _OwnedLock()
        self._writer = _TurnLock()
        _abandoned.extend(self._idle)
        self._idle = deque()
