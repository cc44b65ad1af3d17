"""planflow: persistence for workflow and task execution state.

Open a store with :func:`open_provider` (a URL, a mapping, a :class:`PlanflowConfig` or nothing for the
embedded SQLite default) and use its repositories::

    from planflow import open_provider, TaskState, WorkflowState

    with open_provider("sqlite:///state.db") as provider:
        provider.workflows.upsert_state(WorkflowState("wf-exec-1", "checkout"))
        provider.tasks.upsert_state(TaskState("task-exec-1", "charge", "wf-exec-1", "checkout"))

Importing planflow imports no database driver: each is loaded when chosen.
"""

from planflow.config import PlanflowConfig, RetrySettings, redact_url, resolve_config
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
    MigrationError,
    NotFoundError,
    PlanflowError,
    SchemaTooNewError,
    StoreLockedError,
    StoreWriteError,
    TransactionRequiredError,
    TransientError,
    UnsupportedError,
    ValidationError,
    WorkflowNotReadyError,
    WrongTypeError,
)
from planflow.executions import (
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskOccurrence,
)
from planflow.infra.provider import Provider, Repositories, open_provider
from planflow.models import (
    APIKey,
    ComponentType,
    CreatedAPIKey,
    ExecutionType,
    JsonObject,
    JsonValue,
    Page,
    ParallelStrategy,
    ProgressInfo,
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
from planflow.protocols import (
    AuthRepository,
    ExecutionRepository,
    MetadataRepository,
    OutputTransformer,
    TaskRepository,
    WorkflowRepository,
)
from planflow.schema import Migration, MigrationStatus

__version__ = "0.1.0"

__all__ = [
    "APIKey",
    "AlreadyBootstrappedError",
    "AuthRepository",
    "ClosedError",
    "CommitUnknownError",
    "ComponentType",
    "ConfigError",
    "ConflictError",
    "CopyError",
    "CorruptStoreError",
    "CreatedAPIKey",
    "DatabaseError",
    "DuplicateError",
    "ExecutionRepository",
    "ExecutionType",
    "JsonObject",
    "JsonValue",
    "MetadataRepository",
    "Migration",
    "MigrationError",
    "MigrationStatus",
    "NotFoundError",
    "OutputTransformer",
    "Page",
    "ParallelStrategy",
    "PlanflowConfig",
    "PlanflowError",
    "ProgressInfo",
    "Provider",
    "Repositories",
    "RetryPolicy",
    "RetrySettings",
    "Role",
    "SchemaTooNewError",
    "StoreLockedError",
    "StoreWriteError",
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
    "open_provider",
    "redact_url",
    "resolve_config",
]
