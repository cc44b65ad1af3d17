"""The contract suites on SQLite: a real file, and ``:memory:``."""

from __future__ import annotations

import pytest

from planflow import ExecutionRepository, Provider
from tests.contract.auth import AuthRepositoryContract
from tests.contract.claims import ClaimContract
from tests.contract.executions import ExecutionRepositoryContract
from tests.contract.hostile import HostileInputContract
from tests.contract.idempotency import IdempotencyContract
from tests.contract.metadata import MetadataRepositoryContract
from tests.contract.retention import RetentionContract
from tests.contract.streams import StreamContract
from tests.contract.tasks import TaskRepositoryContract
from tests.contract.workflows import (
    BlockingApiUnderAsyncioContract,
    TransactionContract,
    WorkflowRepositoryContract,
)


class SqliteFile:
    @pytest.fixture
    def provider(self, sqlite_file_provider: Provider) -> Provider:
        return sqlite_file_provider


class SqliteMemory:
    @pytest.fixture
    def provider(self, sqlite_memory_provider: Provider) -> Provider:
        return sqlite_memory_provider


class TestSqliteFileTasks(SqliteFile, TaskRepositoryContract): ...


class TestSqliteFileWorkflows(SqliteFile, WorkflowRepositoryContract): ...


class TestSqliteFileTransactions(SqliteFile, TransactionContract): ...


class TestSqliteFileBlockingUnderAsyncio(SqliteFile, BlockingApiUnderAsyncioContract):
    one_writer = True


class TestSqliteFileAuth(SqliteFile, AuthRepositoryContract): ...


class TestSqliteFileMetadata(SqliteFile, MetadataRepositoryContract): ...


class TestSqliteMemoryTasks(SqliteMemory, TaskRepositoryContract): ...


class TestSqliteMemoryWorkflows(SqliteMemory, WorkflowRepositoryContract): ...


class TestSqliteMemoryTransactions(SqliteMemory, TransactionContract): ...


class TestSqliteMemoryBlockingUnderAsyncio(SqliteMemory, BlockingApiUnderAsyncioContract):
    one_connection = True
    one_writer = True


class TestSqliteMemoryAuth(SqliteMemory, AuthRepositoryContract): ...


class TestSqliteMemoryMetadata(SqliteMemory, MetadataRepositoryContract): ...


class TestSqliteFileExecutions(ExecutionRepositoryContract):
    @pytest.fixture
    def executions(self, sqlite_file_provider: Provider) -> ExecutionRepository:
        return sqlite_file_provider.executions


class TestSqliteMemoryExecutions(ExecutionRepositoryContract):
    @pytest.fixture
    def executions(self, sqlite_memory_provider: Provider) -> ExecutionRepository:
        return sqlite_memory_provider.executions


class TestSqliteFileHostile(SqliteFile, HostileInputContract): ...


class TestSqliteMemoryHostile(SqliteMemory, HostileInputContract): ...


class TestSqliteFileStreams(SqliteFile, StreamContract): ...


class TestSqliteMemoryStreams(SqliteMemory, StreamContract): ...


class TestSqliteFileClaims(SqliteFile, ClaimContract): ...


class TestSqliteMemoryClaims(SqliteMemory, ClaimContract): ...


class TestSqliteFileRetention(SqliteFile, RetentionContract): ...


class TestSqliteMemoryRetention(SqliteMemory, RetentionContract): ...


class TestSqliteFileIdempotency(SqliteFile, IdempotencyContract): ...


class TestSqliteMemoryIdempotency(SqliteMemory, IdempotencyContract): ...
