"""The contract suites on PostgreSQL, each test in a fresh schema of a real server."""

from __future__ import annotations

import pytest

from planflow import Provider
from planflow.protocols import ExecutionRepository
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
    ConcurrentTaskWritesContract,
    TransactionContract,
    WorkflowRepositoryContract,
)

pytestmark = pytest.mark.postgres


class Postgres:
    @pytest.fixture
    def provider(self, postgres_provider: Provider) -> Provider:
        return postgres_provider


class TestPostgresTasks(Postgres, TaskRepositoryContract): ...


class TestPostgresWorkflows(Postgres, WorkflowRepositoryContract): ...


class TestPostgresTransactions(Postgres, TransactionContract): ...


class TestPostgresBlockingUnderAsyncio(Postgres, BlockingApiUnderAsyncioContract): ...


class TestPostgresConcurrentTaskWrites(Postgres, ConcurrentTaskWritesContract): ...


class TestPostgresAuth(Postgres, AuthRepositoryContract): ...


class TestPostgresMetadata(Postgres, MetadataRepositoryContract): ...


class TestPostgresExecutions(ExecutionRepositoryContract):
    @pytest.fixture
    def executions(self, postgres_provider: Provider) -> ExecutionRepository:
        return postgres_provider.executions


class TestPostgresHostile(Postgres, HostileInputContract): ...


class TestPostgresStreams(Postgres, StreamContract): ...


class TestPostgresClaims(Postgres, ClaimContract): ...


class TestPostgresRetention(Postgres, RetentionContract): ...


class TestPostgresIdempotency(Postgres, IdempotencyContract): ...
