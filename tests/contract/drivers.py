"""The stores the contract suites run on, in one table: :data:`STORES`.

Each row (a :class:`StoreSpec`) is one way of reaching a store: a driver variant (SQLite on a file or in memory,
PostgreSQL direct or through PgBouncer, TinyDB through a provider or its add-on repository used directly) through
one API (``sync``, or ``async``: the asynchronous API behind ``SyncOverAsync`` of tests/aio/adapter.py, so that
the same tests drive it), the pytest marks its tests carry, the suites it serves and its capabilities.

tests/contract/conftest.py runs every ``Test*`` class of tests/contract (each names its ``suite``) once per row
that serves that suite; nothing else binds a suite to a driver. A suite missing from a row is a gap of that
driver, said where the row is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast
from urllib.parse import quote

import pytest
from _pytest.mark import ParameterSet
from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from planflow import Provider, open_async_provider, open_provider
from planflow.infra.tinydb import CrashSafeJSONStorage, JournaledStorage, TinyDbExecutionRepository
from planflow.protocols import ExecutionRepository
from tests.aio.adapter import LoopThread, SyncOverAsync

#: Every suite of tests/contract, by the ``suite`` its class names.
SUITES = frozenset(
    {
        "auth",  # test_auth.py
        "blocking_under_asyncio",  # test_workflows.py: the blocking API called from asyncio tasks
        "claims",  # test_claims.py
        "concurrent_task_writes",  # test_workflows.py: another asyncio task writing during a transaction
        "executions",  # test_executions.py: the ``executions`` fixture, not ``provider``
        "history",  # test_history.py: tasks.history, workflows.history
        "hostile",  # test_hostile.py
        "idempotency",  # test_idempotency.py
        "metadata",  # test_metadata.py
        "retention",  # test_retention.py
        "streams",  # test_streams.py
        "tasks",  # test_tasks.py
        "transactions",  # test_workflows.py
        "workflow_control",  # test_history.py: workflows.cancel, resume, fork
        "workflows",  # test_workflows.py
    }
)

#: What the SQL drivers (SQLite, PostgreSQL) serve on both APIs.
SQL = frozenset(
    {
        "auth",
        "claims",
        "executions",
        "history",
        "hostile",
        "idempotency",
        "metadata",
        "retention",
        "streams",
        "tasks",
        "transactions",
        "workflow_control",
        "workflows",
    }
)

#: What TinyDB serves (the add-on's repository and the metadata), on both APIs.
TINYDB = frozenset({"executions", "metadata"})

#: What a store opens to: a provider, or the add-on's ExecutionRepository alone (``StoreSpec.repository_only``).
Store = Provider | ExecutionRepository
#: Opens a store for one test (``request`` reaches the fixtures it needs); closing the context closes the store.
Opener = Callable[[pytest.FixtureRequest], AbstractContextManager[Store]]


@dataclass(frozen=True)
class StoreSpec:
    """One driver variant through one API: how to open it, what its tests need and which suites it serves."""

    driver: str
    api: Literal["sync", "async"]
    open: Opener
    serves: frozenset[str]
    #: Marks of each of its tests: ``pytest.mark.postgres`` on every PostgreSQL server variant (``-m postgres``).
    marks: tuple[pytest.MarkDecorator, ...] = ()
    #: The store is one connection (SQLite ``:memory:``): another asyncio task of the thread cannot be kept out
    #: of a transaction by a connection of its own, so the blocking API refuses it (UnsupportedError).
    one_connection: bool = False
    #: Writers take turns on the whole store (SQLite): a blocking write waiting for another asyncio task's open
    #: transaction on the same thread could never get its turn, and is refused at once.
    one_writer: bool = False
    #: ``open`` yields an ExecutionRepository, not a Provider (only the ``executions`` suite can use it).
    repository_only: bool = False

    @property
    def id(self) -> str:
        """The test id of the variant, e.g. ``sqlite-file-sync``."""
        return f"{self.driver}-{self.api}"

    def param(self) -> ParameterSet:
        """This row as one value of the ``store`` fixture, with its marks."""
        return pytest.param(self, marks=self.marks, id=self.id)


# Openers -------------------------------------------------------------------------------------------------------


def through_fixture(name: str) -> Opener:
    """The provider (or repository) of the fixture ``name``, which opens and closes it."""

    def open_(request: pytest.FixtureRequest) -> AbstractContextManager[Store]:
        return nullcontext(cast(Store, request.getfixturevalue(name)))

    return open_


def tmp_file(request: pytest.FixtureRequest, name: str) -> Path:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return tmp_path / name


def synchronous(url_of: Callable[[pytest.FixtureRequest], str]) -> Opener:
    """``open_provider`` on the URL ``url_of`` returns."""

    @contextmanager
    def open_(request: pytest.FixtureRequest) -> Iterator[Store]:
        with open_provider(url_of(request)) as provider:
            yield provider

    return open_


def asynchronous(url_of: Callable[[pytest.FixtureRequest], str]) -> Opener:
    """``open_async_provider`` on the URL ``url_of`` returns, awaited on the module's event loop (the ``loop``
    fixture) behind ``SyncOverAsync``: the tests call it as they call a Provider, each call is awaited."""

    @contextmanager
    def open_(request: pytest.FixtureRequest) -> Iterator[Store]:
        loop: LoopThread = request.getfixturevalue("loop")
        with SyncOverAsync(loop.run(open_async_provider(url_of(request))), loop) as provider:
            yield cast(Provider, provider)

    return open_


def with_read_url(url: str) -> str:
    """``url`` with itself as its ``read_url`` (a setting of the query, percent-encoded)."""
    return f"{url}{'&' if '?' in url else '?'}read_url={quote(url, safe='')}"


def tinydb_repository(storage: type | None, **options: object) -> Opener:
    """The add-on's ``TinyDbExecutionRepository`` over a ``TinyDB`` of ``storage`` (``None``: in memory)."""

    @contextmanager
    def open_(request: pytest.FixtureRequest) -> Iterator[Store]:
        if storage is None:
            yield TinyDbExecutionRepository(TinyDB(storage=MemoryStorage))
            return
        with TinyDB(tmp_file(request, "planflow.json"), storage=storage, **options) as db:
            yield TinyDbExecutionRepository(db)

    return open_


# The table -----------------------------------------------------------------------------------------------------

POSTGRES = (pytest.mark.postgres,)
#: The PgBouncer variant runs against a private cluster and bouncer (tests/faults/bouncer.py): it is a fault
#: test (``-m faults``), not one of the shared server's (``-m postgres`` never selected it).
FAULTS = (pytest.mark.faults,)

STORES: tuple[StoreSpec, ...] = (
    # The synchronous API ---------------------------------------------------------------------------------------
    StoreSpec(
        "sqlite-file",
        "sync",
        through_fixture("sqlite_file_provider"),
        SQL | {"blocking_under_asyncio"},
        one_writer=True,
    ),
    StoreSpec(
        "sqlite-memory",
        "sync",
        through_fixture("sqlite_memory_provider"),
        SQL | {"blocking_under_asyncio"},
        one_connection=True,
        one_writer=True,
    ),
    # Only a server lets another asyncio task write while a transaction is open on the thread.
    StoreSpec(
        "postgres",
        "sync",
        through_fixture("postgres_provider"),
        SQL | {"blocking_under_asyncio", "concurrent_task_writes"},
        marks=POSTGRES,
    ),
    # Reads outside transactions on a second pool (read_url) that names the same server, as a standby would be
    # named: the suites that read state through the routing of planflow.infra.postgres.standbys (a server not in
    # recovery is always fresh; lag and failures are proven on a private standby in
    # tests/faults/test_standby_reads.py). Not the add-on's executions, the metadata or the hostile inputs: their
    # reads take the same path as the tasks' and workflows', and refused input never reaches a connection.
    StoreSpec(
        "postgres-read-url",
        "sync",
        synchronous(lambda request: with_read_url(str(request.getfixturevalue("postgres_url")))),
        SQL - {"executions", "metadata", "hostile"},
        marks=POSTGRES,
    ),
    # Each test on a database of its own behind PgBouncer in transaction-pooling mode (tests/faults/bouncer.py).
    StoreSpec(
        "pgbouncer",
        "sync",
        through_fixture("bounced_provider"),
        SQL | {"blocking_under_asyncio", "concurrent_task_writes"},
        marks=FAULTS,
    ),
    # TinyDB serves only the add-on's executions and the metadata: through a provider (a journaled file, or in
    # memory), and the executions also through the add-on's repository used directly, on each storage.
    StoreSpec("tinydb-memory", "sync", synchronous(lambda _: "tinydb://memory"), TINYDB),
    StoreSpec(
        "tinydb-file",
        "sync",
        synchronous(lambda request: f"tinydb:///{tmp_file(request, 'planflow.json')}"),
        TINYDB,
    ),
    StoreSpec(
        "tinydb-repository-memory",
        "sync",
        tinydb_repository(None),
        frozenset({"executions"}),
        repository_only=True,
    ),
    StoreSpec(
        "tinydb-repository-crash-safe-file",
        "sync",
        tinydb_repository(CrashSafeJSONStorage),
        frozenset({"executions"}),
        repository_only=True,
    ),
    StoreSpec(
        "tinydb-repository-journaled-file",
        "sync",
        tinydb_repository(JournaledStorage),
        frozenset({"executions"}),
        repository_only=True,
    ),
    # No size floor: a write compacts whenever the journal has grown as large as the file.
    StoreSpec(
        "tinydb-repository-journaled-file-compacting-often",
        "sync",
        tinydb_repository(JournaledStorage, compact_after=0),
        frozenset({"executions"}),
        repository_only=True,
    ),
    # The asynchronous API: no blocking_under_asyncio or concurrent_task_writes (suites of the blocking API) ---
    StoreSpec(
        "sqlite-file",
        "async",
        asynchronous(lambda request: f"sqlite:///{tmp_file(request, 'async.db')}"),
        SQL,
    ),
    StoreSpec("sqlite-memory", "async", asynchronous(lambda _: "sqlite://:memory:"), SQL),
    StoreSpec(
        "postgres",
        "async",
        asynchronous(lambda request: str(request.getfixturevalue("postgres_url"))),
        SQL,
        marks=POSTGRES,
    ),
    StoreSpec("tinydb-memory", "async", asynchronous(lambda _: "tinydb://memory"), TINYDB),
    StoreSpec(
        "tinydb-file",
        "async",
        asynchronous(lambda request: f"tinydb:///{tmp_file(request, 'async.json')}"),
        TINYDB,
    ),
)


def stores_serving(suite: str) -> list[StoreSpec]:
    """The rows of :data:`STORES` that serve ``suite``, in table order."""
    if suite not in SUITES:
        raise ValueError(f"unknown contract suite {suite!r}: add it to SUITES in tests/contract/drivers.py")
    return [spec for spec in STORES if suite in spec.serves]


def _check_table() -> None:
    ids = [spec.id for spec in STORES]
    assert len(set(ids)) == len(ids), f"two rows of STORES share an id: {ids}"
    for spec in STORES:
        assert spec.serves <= SUITES, f"{spec.id} serves unknown suites {sorted(spec.serves - SUITES)}"
        assert not spec.repository_only or spec.serves == {"executions"}, f"{spec.id} has no provider"


_check_table()
