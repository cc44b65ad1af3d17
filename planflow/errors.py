"""The planflow error hierarchy.

Every error a caller can see derives from :class:`PlanflowError`. Driver exceptions never escape raw: each is
translated where the fact is known and chained (``raise ... from exc``). Messages say what was asked and what
was found, and never contain a password.
"""

from __future__ import annotations


class PlanflowError(Exception):
    """Base class of every planflow error."""


class ConfigError(PlanflowError):
    """The configuration is invalid, names an unknown driver, or a driver's dependency is missing."""


class ForeignStoreError(ConfigError):
    """The store holds data but no planflow schema (an application's own database or file); it was not changed.

    ``planflow migrate --force`` adopts it (creates planflow's tables beside what it holds).

    Attributes:
        location: The store, as it is safe to print.
        tables: The first few of its tables (or other things it holds), by name.
    """

    def __init__(self, message: str, *, location: str = "", tables: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.location = location
        self.tables = tables


class ValidationError(PlanflowError):
    """Input was rejected before (or by) the database: bad value, bad reference, constraint violation."""


class WrongTypeError(ValidationError, TypeError):
    """A value of the wrong type: a ValidationError, and a TypeError for code that catches that."""


class NotFoundError(PlanflowError):
    """The requested record does not exist."""


class DuplicateError(PlanflowError):
    """A record with the same unique key already exists."""


class ConflictError(PlanflowError):
    """An optimistic-lock check failed: the stored version is not the expected one."""

    def __init__(self, message: str, *, expected: int | None = None, actual: int | None = None) -> None:
        super().__init__(message)
        self.expected = expected
        self.actual = actual


class TaskCanceledError(ConflictError):
    """The task was canceled (``workflows.cancel``) after the caller read it: its claim was revoked."""


class TransactionRequiredError(PlanflowError):
    """The operation is only valid inside ``provider.transaction()``."""


class WorkflowNotReadyError(PlanflowError):
    """A workflow cannot be completed while top-level tasks are still pending or running."""


class AlreadyBootstrappedError(PlanflowError):
    """The first admin user already exists."""


class MigrationError(PlanflowError):
    """A migration failed, an applied migration was edited, or the files are inconsistent."""


class SchemaTooNewError(MigrationError):
    """The database schema is newer than this version of planflow understands."""

    def __init__(self, message: str, *, database_version: int, code_version: int) -> None:
        super().__init__(message)
        self.database_version = database_version
        self.code_version = code_version


class TransientError(PlanflowError):
    """A transient failure (lock contention, lost connection) outlasted the retry budget."""


class CommitUnknownError(PlanflowError):
    """The connection was lost while a commit was in flight and its outcome could not be learned.

    The unit of work may or may not have been applied; it was not retried, so it was never applied twice. Not a
    :class:`TransientError`: running the unit again blindly could apply it a second time.
    """


class ClosedError(PlanflowError):
    """The provider (or the store behind it) was closed."""


class DatabaseError(PlanflowError):
    """The database failed in a way planflow does not classify further (a driver error, chained)."""


class CorruptStoreError(PlanflowError):
    """A store's file exists but cannot be read, or is not what planflow wrote; it was left untouched."""


class StoreWriteError(PlanflowError):
    """A store's file could not be written (folder gone, disk full, read-only); the old file is intact."""


class CopyError(PlanflowError):
    """``planflow copy`` was refused or stopped; the message says why and what to do."""


class UnsupportedError(PlanflowError):
    """The driver does not serve the requested repository or operation."""


class ReadOnlyError(PlanflowError):
    """A write through a provider opened with ``read_only`` (or to a store the engine holds read-only)."""


class StoreLockedError(PlanflowError):
    """A TinyDB store is already open for writing, in this process or another; it was not opened again."""


__all__ = [
    "AlreadyBootstrappedError",
    "ClosedError",
    "CommitUnknownError",
    "ConfigError",
    "ConflictError",
    "CopyError",
    "CorruptStoreError",
    "DatabaseError",
    "DuplicateError",
    "ForeignStoreError",
    "MigrationError",
    "NotFoundError",
    "PlanflowError",
    "ReadOnlyError",
    "SchemaTooNewError",
    "StoreLockedError",
    "StoreWriteError",
    "TransactionRequiredError",
    "TransientError",
    "UnsupportedError",
    "ValidationError",
    "WorkflowNotReadyError",
    "WrongTypeError",
]
