"""Connection and transaction handling shared by the SQL drivers.

A driver subclasses :class:`Database` with how to get a connection, how to begin one kind of transaction and
how to translate its exceptions; everything else (units of work, savepoints, the ambient transaction of a
thread, retries with backoff) is written here once.

Every repository operation runs in ``Database.run``: outside an explicit ``provider.transaction()`` it is its
own unit of work, retried as a whole on a transient failure; inside one it joins it under a savepoint, so a
failed operation leaves the caller's transaction usable and the caller decides about the whole.
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Generator, Iterable, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar

from planflow.config import RetrySettings
from planflow.errors import TransientError, ValidationError

T = TypeVar("T")
Row = Sequence[Any]
Params = Sequence[object]


class ForeignKeyViolation(ValidationError):  # noqa: N818 - a violation, raised as a ValidationError
    """A write referenced a missing row; the repository that knows the columns names which one."""


class WaitedTooLongError(TransientError):
    """A transient failure whose own wait (a pool's timeout) was the budget: raised at once, not retried."""


class Connection(ABC):
    """One open connection inside a unit of work, as the repositories see it.

    SQL uses ``?`` placeholders; drivers whose library wants another style convert it. Driver exceptions are
    translated to planflow errors here.
    """

    @abstractmethod
    def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; return the number of rows it changed."""

    @abstractmethod
    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """Run a query; return its first row or ``None``."""

    @abstractmethod
    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """Run a query; return all rows."""

    @abstractmethod
    def execute_many(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per parameter row, in as few round trips as the driver allows."""

    @abstractmethod
    def execute_script(self, script: str) -> None:
        """Run a script of several statements without parameters (migrations)."""


@dataclass(slots=True)
class _Transaction:
    connection: Connection
    depth: int = 0


class Database(ABC):
    """A pool of connections with planflow's transaction semantics. See the module docstring."""

    #: Whether ``execute_many`` is best handed parameter rows built as it asks for them: true where a server
    #: runs the rows already sent while the client builds the next (a pipeline), false in process.
    streams_parameters = False

    def __init__(self, retry: RetrySettings) -> None:
        self.retry = retry
        self._local = threading.local()
        #: Statements run through this database; a diagnostic the tests use to prove query counts.
        self.statements = 0

    # What a driver supplies ------------------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> AbstractContextManager[Connection]:
        """Lend a connection in autocommit mode for the duration of the block."""

    @abstractmethod
    def _begin(self, connection: Connection, *, write: bool) -> None:
        """Begin a transaction: ``write`` ones take the write lock where the engine has one (SQLite)."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection."""

    # Shared ---------------------------------------------------------------------------------------------

    def _current(self) -> _Transaction | None:
        tx: _Transaction | None = getattr(self._local, "tx", None)
        return tx

    @property
    def in_transaction(self) -> bool:
        """True when this thread is inside a unit of work of this database."""
        return self._current() is not None

    def read(self, work: Callable[[Connection], T]) -> T:
        """Run reads: in this thread's transaction if there is one, else in autocommit mode, retried as a
        whole on :class:`TransientError` (a connection lost to a server restart, a busy SQLite file)."""
        tx = self._current()
        if tx is not None:
            return work(tx.connection)
        return self.retrying(lambda: self._autocommit(work))

    def fetch_one(self, sql: str, params: Params = ()) -> Row | None:
        """One row of a query run by :meth:`read`."""
        return self.read(lambda conn: conn.fetch_one(sql, params))

    def fetch_all(self, sql: str, params: Params = ()) -> list[Row]:
        """All rows of a query run by :meth:`read`."""
        return self.read(lambda conn: conn.fetch_all(sql, params))

    @contextmanager
    def transaction(self, *, write: bool = True) -> Generator[Connection, None, None]:
        """A unit of work: commits when the block ends, rolls back on an exception; nested use is a savepoint."""
        tx = self._current()
        if tx is not None:
            tx.depth += 1
            name = f"planflow_sp{tx.depth}"
            tx.connection.execute(f"SAVEPOINT {name}")
            try:
                yield tx.connection
            except BaseException:
                tx.connection.execute(f"ROLLBACK TO SAVEPOINT {name}")
                tx.connection.execute(f"RELEASE SAVEPOINT {name}")
                raise
            else:
                tx.connection.execute(f"RELEASE SAVEPOINT {name}")
            finally:
                tx.depth -= 1
            return
        with self._connect() as connection:
            self._begin(connection, write=write)
            self._local.tx = _Transaction(connection)
            try:
                yield connection
            except BaseException:
                self._local.tx = None
                self._rollback_quietly(connection)
                raise
            self._local.tx = None
            try:
                connection.execute("COMMIT")
            except BaseException:
                # SQLite keeps the transaction open when COMMIT fails (a deferred foreign key, say).
                self._rollback_quietly(connection)
                raise

    @staticmethod
    def _rollback_quietly(connection: Connection) -> None:
        # The original error matters more than a failed rollback (a lost connection fails both).
        with suppress(Exception):
            connection.execute("ROLLBACK")

    def run(self, work: Callable[[Connection], T], *, write: bool = True, atomic: bool = False) -> T:
        """Run ``work`` as a unit of work, retried as a whole on :class:`TransientError` when outermost.

        Args:
            work: what to run on the connection.
            write: whether it writes (SQLite then takes the write lock up front).
            atomic: ``work`` is atomic by itself (of its statements at most one writes, and what follows
                that write only explains its outcome); outside a transaction it then runs in autocommit mode,
                saving the BEGIN and COMMIT round trips.

        A connection lost after the server committed but before the reply arrived looks like a failure: the
        retry then applies the unit a second time (a version bumped twice, usage merged twice). The window is a
        network round trip wide; callers who cannot tolerate it use ``expected_version`` on their writes.

        Raises:
            TransientError: the failure outlasted ``retry.max_attempts``.
        """
        if self._current() is not None:
            with self.transaction(write=write) as connection:
                return work(connection)
        if atomic:
            return self.retrying(lambda: self._autocommit(work))
        return self.retrying(lambda: self._once(work, write))

    def _autocommit(self, work: Callable[[Connection], T]) -> T:
        with self._connect() as connection:
            return work(connection)

    def _once(self, work: Callable[[Connection], T], write: bool) -> T:
        with self.transaction(write=write) as connection:
            return work(connection)

    def retrying(self, attempt: Callable[[], T]) -> T:
        """Call ``attempt`` until it does not raise :class:`TransientError`, with jittered exponential backoff."""
        settings = self.retry
        for number in range(1, settings.max_attempts + 1):
            try:
                return attempt()
            except WaitedTooLongError:
                raise
            except TransientError as exc:
                if number == settings.max_attempts:
                    raise TransientError(f"gave up after {number} attempts: {exc}") from exc
                ceiling = min(settings.max_delay, settings.base_delay * 2 ** (number - 1))
                time.sleep(random.uniform(0, ceiling))
        raise AssertionError("unreachable")  # pragma: no cover
