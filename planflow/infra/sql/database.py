"""Units of work, savepoints, retries and commit outcomes, written once for every SQL driver and both APIs.

The code is written as coroutines, and so are the repositories over it. The asynchronous API awaits them on
psycopg's asynchronous connections. The synchronous API runs the very same coroutines over connections whose
methods never suspend (sqlite3, psycopg's blocking connection): :func:`planflow.infra.drive.drive` runs each to
its end at once, on the caller's thread. We chose this over generating the synchronous code from the
asynchronous one (psycopg's ``tools/async_to_sync.py`` with a CI check that the output is current) because
there is then nothing to generate, check or let drift: one function is both; and over a sans-I/O core driven
by two runners (h11) because the repositories stay ordinary code that awaits its statements, typed end to
end by pyright. What differs between the two APIs is only the I/O each driver plugs in.

Every repository operation runs in :meth:`Database.run` or :meth:`Database.read`: outside an explicit
``provider.transaction()`` it is its own unit of work, retried as a whole on a :class:`TransientError`; inside
one it joins it (writes under a savepoint, so a failed operation leaves the caller's transaction usable).

Transactions belong to the context that opened them (``contextvars``) and to its owner, the asyncio task or
else the thread: two tasks on one thread never share one, and a task (or a thread handed a copy of the
context) started inside a transaction does not join it.

A unit of work is applied once or not at all. When the connection is lost while COMMIT is in flight the
client cannot know whether it was applied: the driver learns it where it can (PostgreSQL: from the
commit token that the unit wrote when it began) and retries only a unit that did not commit, else raises
:class:`CommitUnknownError`. A SQLite commit happens in this process: when COMMIT returns or raises, its
outcome is known, so a failed SQLite unit is always safe to run again.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any, Literal, Protocol, TypeVar, cast, runtime_checkable

from planflow.config import RetrySettings
from planflow.errors import CommitUnknownError, PlanflowError, ReadOnlyError, TransientError, ValidationError

T = TypeVar("T")
Row = Sequence[Any]
Params = Sequence[object]

retry_logger = logging.getLogger("planflow.retry")


class ForeignKeyViolation(ValidationError):  # noqa: N818 - a violation, raised as a ValidationError
    """A write referenced a missing row; the repository that knows the columns names which one."""


class WaitedTooLongError(TransientError):
    """A transient failure whose own wait (a pool's timeout) was the budget: raised at once, not retried."""


class ConnectionLostError(TransientError):
    """The connection broke (server restart, failover, a killed backend): what was in flight is in doubt."""


class Interrupted(PlanflowError):  # noqa: N818 - what happened, not a kind of failure
    """A blocking call stopped because the asyncio caller it ran for was cancelled (never retried; the caller
    sees its cancellation, not this)."""


@runtime_checkable
class Interruptible(Protocol):
    """A database whose blocking calls can be stopped part way, for asyncio callers that are cancelled while
    their call runs on a worker thread (SQLite's; see ``SqliteDatabase.interrupt``)."""

    #: Set true to have the database track what each thread does (off for the synchronous API: it costs).
    interruptible: bool

    def interrupt(self, thread: int) -> None:
        """Stop, where it can be stopped, the call running on ``thread``."""
        ...

    def settle(self, thread: int) -> None:
        """The call of ``thread`` has ended: let the thread work again."""
        ...


class Connection(ABC):
    """One open connection inside a unit of work, as the repositories see it.

    SQL uses ``?`` placeholders; drivers whose library wants another style convert it. Driver exceptions are
    translated to planflow errors here.
    """

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abstractmethod
    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """Run a query; return its first row or ``None``."""

    @abstractmethod
    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query; return all rows."""

    @abstractmethod
    def iterate(self, sql: str, params: Params = (), *, batch: int = 1000) -> AsyncIterator[list[Row]]:
        """Run a query; its rows in lists of at most ``batch``, fetched as they are asked for.

        Inside a unit of work only: the rows stream through the unit's connection while it lasts.
        """

    @abstractmethod
    async def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter row, in as few round trips as the driver allows."""

    @abstractmethod
    async def execute_script(self, script: str) -> None:
        """Run a script of several statements without parameters (migrations)."""


async def statement(connection: Connection, sql: str, params: Params, result: Result) -> Any:
    """Run one statement on ``connection``; by ``result`` its first row (or None), all its rows, or its count."""
    if result == "one":
        return await connection.fetch_one(sql, params)
    if result == "all":
        return await connection.fetch_all(sql, params)
    return await connection.execute(sql, params)


def statement_rows(result: object) -> int | None:
    """The row count a driver call returned, for the statement log: rows fetched (a list, one row as a tuple, no
    row as None), rows changed (an int, or a cursor's ``rowcount``); None where the driver does not know it."""
    if result is None:
        return 0
    if isinstance(result, list):
        return len(cast(list[object], result))
    if isinstance(result, tuple):
        return 1
    count = result if isinstance(result, int) else getattr(result, "rowcount", -1)
    return count if isinstance(count, int) and count >= 0 else None


#: Longest statement text a log message shows (the ``planflow_sql`` field holds all of it).
SHOWN_SQL = 500


class StatementLog:
    """How a driver logs its statements: DEBUG each (its duration and row count), WARNING the slow ones.

    Only the SQL text is logged, never a bound value. While neither applies (DEBUG off for the driver's logger,
    no ``slow_statement_ms``), :meth:`timing` is false and a statement costs one check: it is not timed.
    """

    __slots__ = ("driver", "logger", "slow")

    def __init__(self, driver: str, slow_statement_ms: float | None) -> None:
        self.driver = driver
        self.logger = logging.getLogger(f"planflow.{driver}")
        #: Seconds above which a statement is logged as slow, or None.
        self.slow = None if slow_statement_ms is None else slow_statement_ms / 1000

    def timing(self) -> bool:
        """Whether statements are to be timed and reported now (the logger's level may change at any time)."""
        return self.slow is not None or self.logger.isEnabledFor(logging.DEBUG)

    def done(self, sql: str, started: float, rows: int | None, error: BaseException | None = None) -> None:
        """Report a statement that began at ``started`` (``perf_counter``): slow, or at DEBUG."""
        elapsed = perf_counter() - started
        slow = self.slow is not None and elapsed > self.slow
        level = logging.WARNING if slow else logging.DEBUG
        if not self.logger.isEnabledFor(level):
            return
        text = " ".join(sql.split())
        shown = text if len(text) <= SHOWN_SQL else text[:SHOWN_SQL] + "..."
        extra = {
            "planflow_driver": self.driver,
            "planflow_duration_ms": elapsed * 1000,
            "planflow_rows": rows,
            "planflow_sql": text,
            "planflow_error": None if error is None else type(error).__name__,
        }
        outcome = "" if error is None else f", failed ({type(error).__name__})"
        if slow:
            assert self.slow is not None
            self.logger.warning(
                "slow statement: %.3f ms (slow_statement_ms=%g)%s: %s",
                elapsed * 1000,
                self.slow * 1000,
                outcome,
                shown,
                extra=extra,
            )
        else:
            self.logger.debug(
                "statement: %.3f ms, %s row(s)%s: %s",
                elapsed * 1000,
                "?" if rows is None else rows,
                outcome,
                shown,
                extra=extra,
            )


class Watcher(ABC):
    """Waits for writes to the database (see :meth:`Database.watch`)."""

    @abstractmethod
    async def wait(self, seconds: float) -> None:
        """Return after at most ``seconds``, or sooner once the database may have changed."""


Work = Callable[[Connection], Awaitable[T]]
#: What a one-statement write returns: its first row, all its rows, or how many rows it changed.
Result = Literal["one", "all", "count"]
Sleep = Callable[[float], Awaitable[None]]


#: Told of each retry: the attempt that failed (from 1), the delay before the next, and the failure.
OnRetry = Callable[[int, float, BaseException], None]


async def retrying(
    attempt: Callable[[], Awaitable[T]],
    settings: RetrySettings,
    sleep: Sleep,
    on_retry: OnRetry | None = None,
    *,
    failed: TransientError | None = None,
) -> T:
    """Await ``attempt()`` until it does not raise :class:`TransientError`, with jittered exponential backoff.

    Attempt ``n`` (from 1) that fails sleeps a random time up to ``min(max_delay, base_delay * 2**(n-1))``.
    A :class:`WaitedTooLongError` already waited its budget and is raised at once. Each retry is logged
    (WARNING on ``planflow.retry``) and handed to ``on_retry``. ``failed``: the caller made the first attempt
    itself (the frequent calls do, without this machinery), and it failed so.

    Raises:
        TransientError: the last attempt failed; the message says how many were made.
    """
    number, error = 1, failed
    while True:
        if error is None:
            try:
                return await attempt()
            except WaitedTooLongError:
                raise
            except TransientError as exc:
                error = exc
        if number == settings.max_attempts:
            raise TransientError(f"gave up after {number} attempts: {error}") from error
        delay = random.uniform(0, min(settings.max_delay, settings.base_delay * 2 ** (number - 1)))
        retry_logger.warning(
            "retrying after a transient failure (attempt %d of %d, in %.3fs): %s",
            number,
            settings.max_attempts,
            delay,
            error,
            extra={
                "planflow_attempt": number,
                "planflow_delay": delay,
                "planflow_cause": type(error).__name__,
            },
        )
        if on_retry is not None:
            on_retry(number, delay, error)
        await sleep(delay)
        number, error = number + 1, None


def owner() -> object:
    """Who is running: the current asyncio task, or else the current thread."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        # _get_running_loop() answers None outside an event loop, where current_task() would raise (which costs
        # more than the rest of this function on every call of the synchronous API).
        loop = asyncio._get_running_loop()  # pyright: ignore[reportPrivateUsage]
        if loop is not None:
            task = asyncio.current_task(loop)
            if task is not None:
                return task
    return threading.get_ident()


@dataclass(slots=True, eq=False)
class Transaction:
    """An open unit of work: its connection, who owns it, and what the driver needs to learn its outcome."""

    database: Database
    connection: Connection
    owner: object
    ticket: object | None
    savepoints: int = 0
    write: bool = True


@dataclass(slots=True, eq=False)
class Frame:
    """What :meth:`Database.begin` returns: the transaction, and the savepoint when it was nested."""

    transaction: Transaction
    savepoint: str | None = None
    done: bool = field(default=False)


#: The transactions open in this context, one per database at most (usually none).
_ambient: ContextVar[tuple[Transaction, ...]] = ContextVar("planflow_transactions", default=())

#: Every open database, told when the process forks (see ``Database.after_fork``).
_open: weakref.WeakSet[Database] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for database in list(_open):
        database.after_fork()


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class Database(ABC):
    """A pool of connections with planflow's transaction semantics. See the module docstring."""

    #: Whether ``execute_many`` is best handed parameter rows built as it asks for them: true where a server
    #: runs the rows already sent while the client builds the next (a pipeline), false in process.
    streams_parameters = False
    #: Whether a unit of work that writes with a single statement may run that statement in autocommit mode:
    #: true where the outcome of an autocommitted statement is always known to the client (SQLite, in
    #: process); false where a lost reply would leave it in doubt (a server), so that the unit runs in a
    #: transaction whose outcome can be learned.
    autocommit_single_statement = True
    #: Whether :meth:`stream` may hold a read transaction on a connection of its own while rows are consumed:
    #: false where the store is one shared connection (SQLite ``:memory:``), which then reads all rows at once.
    streams_in_transaction = True
    #: Opened ``read_only``: every unit of work that writes is refused (the engine refuses them too).
    read_only = False

    def __init__(self, retry: RetrySettings, log: StatementLog | None = None) -> None:
        self.retry = retry
        #: How statements are logged (DEBUG each, WARNING the slow ones).
        self.log = log or StatementLog("sql", None)
        #: Told of retries and pool waits when the provider has listeners (see ``planflow.infra.observe``).
        self.on_retry: OnRetry | None = None
        _open.add(self)

    # What a driver supplies ------------------------------------------------------------------------------

    @abstractmethod
    async def acquire(self) -> Connection:
        """Lend a connection in autocommit mode; give it back with :meth:`release`."""

    @abstractmethod
    async def release(self, connection: Connection) -> None:
        """Take back a connection lent by :meth:`acquire` (a broken one is discarded)."""

    @abstractmethod
    async def begin_on(self, connection: Connection, *, write: bool, resolvable: bool) -> object | None:
        """Begin a transaction on ``connection``; return what :meth:`committed` needs to learn its outcome.

        ``write`` transactions take the write lock where the engine has one (SQLite). ``resolvable`` ones
        prepare for a COMMIT that could lose its reply (PostgreSQL records a commit token).
        """

    async def committed(self, ticket: object, lost: ConnectionLostError) -> bool:
        """Whether the transaction of ``ticket``, whose COMMIT lost its connection, was committed.

        Raises:
            CommitUnknownError: the outcome cannot be learned (the default: the driver cannot tell).
        """
        raise CommitUnknownError(f"the connection was lost while COMMIT was in flight: {lost}") from lost

    @abstractmethod
    def watch(self) -> AbstractAsyncContextManager[Watcher]:
        """A :class:`Watcher` for the duration of the block (``wait_for_work`` waits with it)."""

    @abstractmethod
    async def sleep(self, seconds: float) -> None:
        """Wait between attempts (blocking for the synchronous API, ``asyncio.sleep`` for the async one)."""

    async def uninterrupted(self, work: Awaitable[T]) -> T:
        """Await ``work`` (a COMMIT) to its end even when the caller is cancelled meanwhile, then let the
        cancellation through: what was sent is applied or not, and the server, not the cancellation, decides.
        Calls that cannot be cancelled part way (blocking ones) simply await it."""
        return await work

    @abstractmethod
    async def aclose(self) -> None:
        """Close every connection."""

    @abstractmethod
    def after_fork(self) -> None:
        """In a child process after ``fork()``: forget the parent's connections without using or closing them
        (closing them politely would end the parent's sessions); open new ones on first use."""

    # Shared ---------------------------------------------------------------------------------------------

    def refuse_writes(self) -> None:
        """Raise :class:`ReadOnlyError` when the database was opened ``read_only``."""
        if self.read_only:
            raise ReadOnlyError(
                "this provider was opened read-only (read_only): it never writes; open the store without "
                "read_only to write to it"
            )

    def current(self) -> Transaction | None:
        """The transaction of this database that the running task or thread opened in this context, if any."""
        for tx in _ambient.get():
            if tx.database is self:
                return tx if tx.owner == owner() else None
        return None

    @property
    def in_transaction(self) -> bool:
        """True inside a unit of work of this database opened by the running task or thread."""
        return self.current() is not None

    async def read(self, work: Work[T]) -> T:
        """Run reads: in the current transaction if there is one, else in autocommit mode, retried as a whole
        on :class:`TransientError` (a connection lost to a server restart, a busy SQLite file)."""
        tx = self.current()
        if tx is not None:
            return await work(tx.connection)
        return await retrying(lambda: self._autocommit_read(work), self.retry, self.sleep, self.on_retry)

    async def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """One row of a query run like :meth:`read`."""
        tx = self.current()
        if tx is not None:
            return await tx.connection.fetch_one(sql, params)
        # The first attempt without the machinery of retrying(): a point read is the most frequent call.
        connection = await self.acquire_for_read()
        try:
            return await connection.fetch_one(sql, params)
        except WaitedTooLongError:
            raise
        except TransientError as exc:
            failed = exc
        finally:
            await self.release(connection)
        return await retrying(
            lambda: self._fetch_one_once(sql, params), self.retry, self.sleep, self.on_retry, failed=failed
        )

    async def _fetch_one_once(self, sql: str, params: Params) -> Row | None:
        connection = await self.acquire_for_read()
        try:
            return await connection.fetch_one(sql, params)
        finally:
            await self.release(connection)

    async def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """All rows of a query run by :meth:`read`."""

        async def work(connection: Connection) -> list[Row]:
            return await connection.fetch_all(sql, params)

        return await self.read(work)

    async def stream(self, sql: str, params: Params = (), *, batch: int = 1000) -> AsyncIterator[list[Row]]:
        """The rows of one query in lists of ``batch``, fetched as they are asked for, from one snapshot.

        Outside a transaction the query runs in a read-only one of its own, on a connection held while the
        rows are consumed (and not made the caller's transaction: the caller's writes meanwhile are units of
        their own). A failure after rows were handed out is raised, not retried.
        """
        tx = self.current()
        if tx is not None or not self.streams_in_transaction:
            rows = (
                await tx.connection.fetch_all(sql, params)
                if tx is not None
                else await self.fetch_all(sql, params)
            )
            for start in range(0, len(rows), batch):
                yield rows[start : start + batch]
            return
        connection = await self.acquire_for_read()
        try:
            await self.begin_on(connection, write=False, resolvable=False)
            try:
                async for rows in connection.iterate(sql, params, batch=batch):
                    yield rows
            finally:
                await self._rollback_quietly(connection)
        finally:
            await self.release(connection)

    async def write(
        self,
        sql: str,
        params: Params,
        *,
        result: Result,
        reread: Work[Any] | None = None,
        evident: bool = False,
        idempotent: bool = False,
    ) -> Any:
        """Run one writing statement as a unit of work of its own (joining the current one, if any).

        Returns, by ``result``: the statement's first row (``"one"``, ``None`` when it matched nothing), all its
        rows (``"all"``), or how many rows it changed (``"count"``). Should the reply be lost after the statement
        committed, ``reread`` reads what the caller would have got instead (the row as stored now, or a count).

        Where the outcome of an autocommitted statement is always known (SQLite) it simply runs in autocommit
        mode. PostgreSQL runs it in autocommit mode too, with a commit token inserted by the same statement, so
        that a lost reply can be resolved. ``evident`` says the write's effect shows in the rows themselves, so
        that ``reread`` alone tells whether it applied and what it returned (a claim marks the rows it took with
        its worker and lease end); ``idempotent`` that running it twice changes nothing more than once (an
        upsert of the same values by key), so that a lost reply is simply followed by running it again: neither
        needs a token.
        """
        self.refuse_writes()
        return await self.run(
            lambda connection: statement(connection, sql, params, result), single_statement=True
        )

    async def run(
        self, work: Work[T], *, write: bool = True, single_statement: bool = False, idempotent: bool = False
    ) -> T:
        """Run ``work`` as a unit of work, retried as a whole on :class:`TransientError` when outermost.

        Args:
            work: what to run on the connection.
            write: whether it writes (SQLite then takes the write lock up front; Postgres reads the
                commit token so that a lost COMMIT can be resolved).
            single_statement: ``work`` writes with one statement, and what follows that statement only reads
                its outcome. Where the engine knows the outcome of an autocommitted statement
                (``autocommit_single_statement``), it then runs without BEGIN and COMMIT.
            idempotent: running ``work`` twice changes nothing more than once (it checks its own effect, as
                the migrator does), so a COMMIT that lost its reply may simply be run again.

        Raises:
            TransientError: the failure outlasted ``retry.max_attempts``.
            CommitUnknownError: the connection was lost during COMMIT and the outcome could not be learned.
        """
        if write:
            self.refuse_writes()
        tx = self.current()
        if tx is not None:
            return await self._in_savepoint(tx, work) if write else await work(tx.connection)
        if single_statement and self.autocommit_single_statement:

            def attempt() -> Awaitable[T]:
                return self._autocommit(work)
        else:

            def attempt() -> Awaitable[T]:
                return self._unit(work, write, not idempotent)

        # The first attempt without the machinery of retrying(): these are the most frequent calls.
        try:
            return await attempt()
        except WaitedTooLongError:
            raise
        except TransientError as exc:
            failed = exc
        return await retrying(attempt, self.retry, self.sleep, self.on_retry, failed=failed)

    async def acquire_for_write(self) -> Connection:
        """A connection for a unit of work that writes (SQLite takes this process's turn to write with it)."""
        return await self.acquire()

    async def acquire_for_read(self, *, grouped: bool = False) -> Connection:
        """A connection for reads outside a unit of work (PostgreSQL: a standby's, where one may serve them).

        ``grouped``: for a :meth:`read` of several statements, which by default gets its connection as a write
        would (SQLite then takes this process's turn to write: no write of the process comes in between).
        """
        return await (self.acquire_for_write() if grouped else self.acquire())

    async def _autocommit(self, work: Work[T]) -> T:
        connection = await self.acquire_for_write()
        try:
            return await work(connection)
        finally:
            await self.release(connection)

    async def _autocommit_read(self, work: Work[T]) -> T:
        connection = await self.acquire_for_read(grouped=True)
        try:
            return await work(connection)
        finally:
            await self.release(connection)

    async def _unit(self, work: Work[T], write: bool, resolvable: bool) -> T:
        frame = await self.begin(write=write, resolvable=resolvable)
        try:
            result = await work(frame.transaction.connection)
        except BaseException as exc:
            await self.end(frame, exc)
            raise
        await self.end(frame, None)
        return result

    async def _in_savepoint(self, tx: Transaction, work: Work[T]) -> T:
        name = await self._savepoint(tx)
        try:
            result = await work(tx.connection)
        except BaseException:
            await self._undo_savepoint(tx, name)
            raise
        await tx.connection.execute(f"RELEASE SAVEPOINT {name}")
        return result

    async def _savepoint(self, tx: Transaction) -> str:
        tx.savepoints += 1
        name = f"planflow_sp{tx.savepoints}"
        await tx.connection.execute(f"SAVEPOINT {name}")
        return name

    @staticmethod
    async def _undo_savepoint(tx: Transaction, name: str) -> None:
        # A connection lost meanwhile fails these too; the original error is what the caller must see, and
        # the transaction is then doomed anyway.
        with suppress(Exception):
            await tx.connection.execute(f"ROLLBACK TO SAVEPOINT {name}")
            await tx.connection.execute(f"RELEASE SAVEPOINT {name}")

    async def begin(self, *, write: bool = True, resolvable: bool = True) -> Frame:
        """Open a unit of work (nested in the current one as a savepoint); close it with :meth:`end`.

        ``resolvable``: should its COMMIT lose its reply, learn the outcome rather than raise
        :class:`CommitUnknownError` (write units only; a read-only unit is always safe to run again).
        """
        if write:
            self.refuse_writes()
        tx = self.current()
        if tx is not None:
            return Frame(tx, await self._savepoint(tx))
        connection = await (self.acquire_for_write() if write else self.acquire_for_read())
        try:
            ticket = await self.begin_on(connection, write=write, resolvable=write and resolvable)
        except BaseException:
            await self.release(connection)
            raise
        tx = Transaction(self, connection, owner(), ticket, write=write)
        _ambient.set((*_ambient.get(), tx))
        return Frame(tx)

    async def end(self, frame: Frame, error: BaseException | None) -> None:
        """Close what :meth:`begin` opened: commit it (or release its savepoint), or with ``error`` undo it.

        Raises:
            TransientError: the COMMIT failed and the unit was not applied (it may be run again).
            CommitUnknownError: the COMMIT lost its connection and the outcome could not be learned.
        """
        if frame.done:
            return
        frame.done = True
        tx = frame.transaction
        if frame.savepoint is not None:
            if error is None:
                await tx.connection.execute(f"RELEASE SAVEPOINT {frame.savepoint}")
            else:
                await self._undo_savepoint(tx, frame.savepoint)
            return
        # Set, not reset with a token: the unit may have begun in a copy of this context (a worker thread).
        _ambient.set(tuple(other for other in _ambient.get() if other is not tx))
        try:
            if error is None:
                await self.uninterrupted(self._commit(tx))
            else:
                await self._rollback_quietly(tx.connection)
        finally:
            await self.release(tx.connection)

    async def send_commit(self, tx: Transaction) -> None:
        """Send COMMIT for ``tx`` (a driver may learn what it needs of the commit in the same round trip)."""
        await tx.connection.execute("COMMIT")

    async def _commit(self, tx: Transaction) -> None:
        try:
            await self.send_commit(tx)
        except ConnectionLostError as lost:
            # A read-only unit, or one safe to run twice, has nothing to learn: it may simply run again.
            if tx.ticket is None or not await self.committed(tx.ticket, lost):
                raise
        except BaseException:
            # SQLite keeps the transaction open when COMMIT fails (a deferred foreign key, say).
            await self._rollback_quietly(tx.connection)
            raise

    @staticmethod
    async def _rollback_quietly(connection: Connection) -> None:
        # The original error matters more than a failed rollback (a lost connection fails both).
        with suppress(Exception):
            await connection.execute("ROLLBACK")

    @asynccontextmanager
    async def transaction(self, *, write: bool = True) -> AsyncGenerator[Connection, None]:
        """A unit of work: commits when the block ends, rolls back on an exception; nested use is a savepoint."""
        frame = await self.begin(write=write)
        try:
            yield frame.transaction.connection
        except BaseException as exc:
            await self.end(frame, exc)
            raise
        await self.end(frame, None)
