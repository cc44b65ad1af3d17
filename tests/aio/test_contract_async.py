"""The contract suites on the asynchronous API: every driver, through ``SyncOverAsync`` (see adapter.py).

The same test classes as the synchronous API's, unchanged: each test's calls are awaited on an event loop,
PostgreSQL on psycopg's asyncio pool, SQLite and TinyDB on planflow's worker lanes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from planflow import open_async_provider
from tests.aio.adapter import LoopThread, SyncOverAsync
from tests.contract.auth import AuthRepositoryContract
from tests.contract.claims import ClaimContract
from tests.contract.executions import ExecutionRepositoryContract
from tests.contract.hostile import HostileInputContract
from tests.contract.idempotency import IdempotencyContract
from tests.contract.metadata import MetadataRepositoryContract
from tests.contract.retention import RetentionContract
from tests.contract.streams import StreamContract
from tests.contract.tasks import TaskRepositoryContract
from tests.contract.workflows import TransactionContract, WorkflowRepositoryContract


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.stop()


def opened(loop: LoopThread, url: str) -> SyncOverAsync:
    return SyncOverAsync(loop.run(open_async_provider(url)), loop)


class AsyncSqliteFile:
    @pytest.fixture
    def provider(self, loop: LoopThread, tmp_path: Path) -> Iterator[SyncOverAsync]:
        with opened(loop, f"sqlite:///{tmp_path / 'async.db'}") as provider:
            yield provider


class AsyncSqliteMemory:
    @pytest.fixture
    def provider(self, loop: LoopThread) -> Iterator[SyncOverAsync]:
        with opened(loop, "sqlite://:memory:") as provider:
            yield provider


@pytest.mark.postgres
class AsyncPostgres:
    @pytest.fixture
    def provider(self, loop: LoopThread, postgres_url: str) -> Iterator[SyncOverAsync]:
        with opened(loop, postgres_url) as provider:
            yield provider


class AsyncTinyDb:
    @pytest.fixture
    def provider(self, loop: LoopThread, tmp_path: Path) -> Iterator[SyncOverAsync]:
        with opened(loop, f"tinydb:///{tmp_path / 'async.json'}") as provider:
            yield provider


def executions_of(provider: SyncOverAsync) -> object:
    return provider.executions  # pyright: ignore[reportAttributeAccessIssue]


class TestAsyncSqliteFileTasks(AsyncSqliteFile, TaskRepositoryContract): ...


class TestAsyncSqliteFileWorkflows(AsyncSqliteFile, WorkflowRepositoryContract): ...


class TestAsyncSqliteFileTransactions(AsyncSqliteFile, TransactionContract): ...


class TestAsyncSqliteFileAuth(AsyncSqliteFile, AuthRepositoryContract): ...


class TestAsyncSqliteFileStreams(AsyncSqliteFile, StreamContract): ...


class TestAsyncSqliteFileHostile(AsyncSqliteFile, HostileInputContract): ...


class TestAsyncSqliteFileMetadata(AsyncSqliteFile, MetadataRepositoryContract): ...


class TestAsyncSqliteFileExecutions(AsyncSqliteFile, ExecutionRepositoryContract):
    @pytest.fixture
    def executions(self, provider: SyncOverAsync) -> object:
        return executions_of(provider)


class TestAsyncSqliteMemoryTasks(AsyncSqliteMemory, TaskRepositoryContract): ...


class TestAsyncSqliteMemoryWorkflows(AsyncSqliteMemory, WorkflowRepositoryContract): ...


class TestAsyncSqliteMemoryTransactions(AsyncSqliteMemory, TransactionContract): ...


class TestAsyncSqliteMemoryAuth(AsyncSqliteMemory, AuthRepositoryContract): ...


class TestAsyncSqliteMemoryExecutions(AsyncSqliteMemory, ExecutionRepositoryContract):
    @pytest.fixture
    def executions(self, provider: SyncOverAsync) -> object:
        return executions_of(provider)


class TestAsyncPostgresTasks(AsyncPostgres, TaskRepositoryContract): ...


class TestAsyncPostgresWorkflows(AsyncPostgres, WorkflowRepositoryContract): ...


class TestAsyncPostgresTransactions(AsyncPostgres, TransactionContract): ...


class TestAsyncPostgresAuth(AsyncPostgres, AuthRepositoryContract): ...


class TestAsyncPostgresStreams(AsyncPostgres, StreamContract): ...


class TestAsyncPostgresHostile(AsyncPostgres, HostileInputContract): ...


class TestAsyncPostgresMetadata(AsyncPostgres, MetadataRepositoryContract): ...


class TestAsyncPostgresExecutions(AsyncPostgres, ExecutionRepositoryContract):
    @pytest.fixture
    def executions(self, provider: SyncOverAsync) -> object:
        return executions_of(provider)


class TestAsyncTinyDbExecutions(AsyncTinyDb, ExecutionRepositoryContract):
    @pytest.fixture
    def executions(self, provider: SyncOverAsync) -> object:
        return executions_of(provider)


class TestAsyncTinyDbMetadata(AsyncTinyDb, MetadataRepositoryContract): ...


class TestAsyncSqliteFileClaims(AsyncSqliteFile, ClaimContract): ...


class TestAsyncSqliteMemoryClaims(AsyncSqliteMemory, ClaimContract): ...


class TestAsyncPostgresClaims(AsyncPostgres, ClaimContract): ...


class TestAsyncSqliteFileRetention(AsyncSqliteFile, RetentionContract): ...


class TestAsyncPostgresRetention(AsyncPostgres, RetentionContract): ...


class TestAsyncSqliteFileIdempotency(AsyncSqliteFile, IdempotencyContract): ...


class TestAsyncSqliteMemoryIdempotency(AsyncSqliteMemory, IdempotencyContract): ...


class TestAsyncPostgresIdempotency(AsyncPostgres, IdempotencyContract): ...
