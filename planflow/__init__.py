"""planflow: persistence for workflow and task execution state.

Open a store with :func:`open_provider` (a URL, a mapping, a :class:`PlanflowConfig` or nothing for the
embedded SQLite default) and use its repositories::

    from planflow import open_provider, TaskState, WorkflowState

    with open_provider("sqlite:///state.db") as provider:
        provider.workflows.upsert_state(WorkflowState("wf-exec-1", "checkout"))
        provider.tasks.upsert_state(TaskState("task-exec-1", "charge", "wf-exec-1", "checkout"))

Importing planflow imports no database driver (each is loaded when chosen), and only the models and errors
at once: the provider, the Protocols, the configuration and the rest are imported at their first use
(PEP 562), so that a program that only names a model or catches an error does not pay for them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from planflow.errors import (
    AlreadyBootstrappedError,
    ClosedError,
    CommitUnknownError,
    ConfigError,
    ConflictError,
    CopyError,
    CorruptStoreError,
    DatabaseError,
    DuplicateError,
    ForeignStoreError,
    MigrationError,
    NotFoundError,
    PlanflowError,
    ReadOnlyError,
    SchemaTooNewError,
    StoreLockedError,
    StoreWriteError,
    TaskCanceledError,
    TransactionRequiredError,
    TransientError,
    UnsupportedError,
    ValidationError,
    WorkflowNotReadyError,
    WrongTypeError,
)
from planflow.models import (
    COMPOSITE_TYPES,
    APIKey,
    ComponentType,
    CreatedAPIKey,
    ExecutionType,
    Heartbeat,
    HistoryRecord,
    JsonObject,
    JsonValue,
    KeyStats,
    Order,
    Page,
    ParallelStrategy,
    ProgressInfo,
    QueueStats,
    RetryBackoff,
    Role,
    TaskFilter,
    TaskState,
    TaskStatus,
    TaskTreeNode,
    UsageEntry,
    UsageSummary,
    User,
    WorkflowFilter,
    WorkflowState,
)
from planflow.version import __version__

if TYPE_CHECKING:
    from planflow.async_protocols import (
        AsyncAuthRepository,
        AsyncExecutionRepository,
        AsyncMetadataRepository,
        AsyncTaskRepository,
        AsyncWorkflowRepository,
    )
    from planflow.config import (
        PlanflowConfig,
        RetrySettings,
        redact_url,
        resolve_config,
    )
    from planflow.events import (
        ConflictEvent,
        Event,
        Listener,
        OperationEvent,
        PoolWaitEvent,
        RetryEvent,
    )
    from planflow.executions import (
        RetryPolicy,
        TaskDefinition,
        TaskEvent,
        TaskExecution,
        TaskOccurrence,
    )
    from planflow.infra.provider import (
        AsyncProvider,
        AsyncProviderOpening,
        AsyncRepositories,
        Provider,
        Repositories,
        open_async_provider,
        open_provider,
    )
    from planflow.migration_records import (
        Migration,
        MigrationStatus,
    )
    from planflow.protocols import (
        AuthRepository,
        ExecutionRepository,
        MetadataRepository,
        OutputTransformer,
        TaskRepository,
        WorkflowRepository,
    )

#: The names imported at their first use, and the module each comes from.
_LAZY: dict[str, str] = {
    "AsyncAuthRepository": "planflow.async_protocols",
    "AsyncExecutionRepository": "planflow.async_protocols",
    "AsyncMetadataRepository": "planflow.async_protocols",
    "AsyncTaskRepository": "planflow.async_protocols",
    "AsyncWorkflowRepository": "planflow.async_protocols",
    "PlanflowConfig": "planflow.config",
    "RetrySettings": "planflow.config",
    "redact_url": "planflow.config",
    "resolve_config": "planflow.config",
    "ConflictEvent": "planflow.events",
    "Event": "planflow.events",
    "Listener": "planflow.events",
    "OperationEvent": "planflow.events",
    "PoolWaitEvent": "planflow.events",
    "RetryEvent": "planflow.events",
    "RetryPolicy": "planflow.executions",
    "TaskDefinition": "planflow.executions",
    "TaskEvent": "planflow.executions",
    "TaskExecution": "planflow.executions",
    "TaskOccurrence": "planflow.executions",
    "AsyncProvider": "planflow.infra.provider",
    "AsyncProviderOpening": "planflow.infra.provider",
    "AsyncRepositories": "planflow.infra.provider",
    "Provider": "planflow.infra.provider",
    "Repositories": "planflow.infra.provider",
    "open_async_provider": "planflow.infra.provider",
    "open_provider": "planflow.infra.provider",
    "Migration": "planflow.migration_records",
    "MigrationStatus": "planflow.migration_records",
    "AuthRepository": "planflow.protocols",
    "ExecutionRepository": "planflow.protocols",
    "MetadataRepository": "planflow.protocols",
    "OutputTransformer": "planflow.protocols",
    "TaskRepository": "planflow.protocols",
    "WorkflowRepository": "planflow.protocols",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'planflow' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup finds it without coming here
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "COMPOSITE_TYPES",
    "APIKey",
    "AlreadyBootstrappedError",
    "AsyncAuthRepository",
    "AsyncExecutionRepository",
    "AsyncMetadataRepository",
    "AsyncProvider",
    "AsyncProviderOpening",
    "AsyncRepositories",
    "AsyncTaskRepository",
    "AsyncWorkflowRepository",
    "AuthRepository",
    "ClosedError",
    "CommitUnknownError",
    "ComponentType",
    "ConfigError",
    "ConflictError",
    "ConflictEvent",
    "CopyError",
    "CorruptStoreError",
    "CreatedAPIKey",
    "DatabaseError",
    "DuplicateError",
    "Event",
    "ExecutionRepository",
    "ExecutionType",
    "ForeignStoreError",
    "Heartbeat",
    "HistoryRecord",
    "JsonObject",
    "JsonValue",
    "KeyStats",
    "Listener",
    "MetadataRepository",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "NotFoundError",
    "OperationEvent",
    "Order",
    "OutputTransformer",
    "Page",
    "ParallelStrategy",
    "PlanflowConfig",
    "PlanflowError",
    "PoolWaitEvent",
    "ProgressInfo",
    "Provider",
    "QueueStats",
    "ReadOnlyError",
    "Repositories",
    "RetryBackoff",
    "RetryEvent",
    "RetryPolicy",
    "RetrySettings",
    "Role",
    "SchemaTooNewError",
    "StoreLockedError",
    "StoreWriteError",
    "TaskCanceledError",
    "TaskDefinition",
    "TaskEvent",
    "TaskExecution",
    "TaskFilter",
    "TaskOccurrence",
    "TaskRepository",
    "TaskState",
    "TaskStatus",
    "TaskTreeNode",
    "TransactionRequiredError",
    "TransientError",
    "UnsupportedError",
    "UsageEntry",
    "UsageSummary",
    "User",
    "ValidationError",
    "WorkflowFilter",
    "WorkflowNotReadyError",
    "WorkflowRepository",
    "WorkflowState",
    "WrongTypeError",
    "__version__",
    "open_async_provider",
    "open_provider",
    "redact_url",
    "resolve_config",
]
