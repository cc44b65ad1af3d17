"""Every table a Provider serves, seen as a stream of records with one canonical JSON form.

``status`` counts records through these tables and ``copy`` moves and verifies them, using only the repository
Protocols: pages are read with the repositories' own cursors, so no table is ever loaded whole (the add-on's
execution lists and the user list, which the Protocols return whole, excepted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from enum import Enum
from itertools import islice
from typing import TYPE_CHECKING, ClassVar, Generic, TypeVar, cast

from planflow.errors import NotFoundError, UnsupportedError
from planflow.executions import TaskDefinition, TaskExecution, TaskOccurrence
from planflow.infra.execution_codec import (
    execution_to_doc,
    occurrence_to_doc,
    task_to_doc,
)
from planflow.models import (
    APIKey,
    JsonObject,
    JsonValue,
    TaskState,
    TaskStatus,
    User,
    WorkflowFilter,
    WorkflowState,
)

if TYPE_CHECKING:  # the provider (and every repository behind it) is loaded only by a command that opens one
    from planflow.infra.provider import Repositories

R = TypeVar("R")

#: The repositories a store may serve, in the order their tables are copied.
REPOSITORIES = ("workflows", "tasks", "auth", "executions")
#: Page size of a plain count.
COUNT_PAGE = 1000


_PLAIN = frozenset({str, int, float, bool, type(None)})
#: Field names of each dataclass met, so that reflection runs once per class, not once per record.
_FIELDS: dict[type, tuple[str, ...]] = {}


def to_json(value: object) -> JsonValue:
    """A model value as JSON: dataclasses field by field, enums by value, datetimes in ISO 8601, spans in seconds.

    Every field of a dataclass is included, so a field added to a model is covered without a change here.

    Raises:
        TypeError: ``value`` holds something with no JSON form.
    """
    kind = type(value)
    if kind in _PLAIN:
        return cast("JsonValue", value)
    if isinstance(value, Enum):
        return to_json(value.value)
    if kind is datetime:
        return cast("datetime", value).isoformat()
    if kind is dict or isinstance(value, Mapping):
        items = cast("Mapping[object, object]", value).items()
        return {str(key): to_json(item) for key, item in items}
    if kind is list or kind is tuple:
        return [to_json(item) for item in cast("Iterable[object]", value)]
    names = _FIELDS.get(kind)
    if names is None and dataclasses.is_dataclass(value) and not isinstance(value, type):
        names = _FIELDS[kind] = tuple(f.name for f in dataclasses.fields(value))
    if names is not None:
        return {name: to_json(getattr(value, name)) for name in names}
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    raise TypeError(f"no JSON form for {kind.__name__}")


def workflow_json(state: WorkflowState, *, with_tasks: bool = False) -> JsonObject:
    """A workflow state as JSON; its ``tasks`` (task_id -> state) only when ``with_tasks``."""
    doc = cast("JsonObject", to_json(state))
    if not with_tasks:
        del doc["tasks"]
    return doc


def canonical(doc: JsonValue) -> bytes:
    """The one byte string of a JSON value: keys sorted, no spaces, ASCII only."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


class Digest:
    """A checksum of a set of records that does not depend on the order they are added in.

    The sum modulo 2**256 of the SHA-256 of each record's canonical JSON: two stores read in different orders
    agree exactly when they hold the same records (barring a SHA-256 collision), and neither side is ever
    sorted or held in memory.
    """

    __slots__ = ("_sum", "count")

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0

    def add(self, doc: JsonValue) -> None:
        """Count one record."""
        self.count += 1
        self._sum = (self._sum + int.from_bytes(hashlib.sha256(canonical(doc)).digest())) % (1 << 256)

    @property
    def hexdigest(self) -> str:
        """The checksum as 64 hex digits (with the record count it identifies the set)."""
        return f"{self._sum:064x}"


def serves(repos: Repositories, repository: str) -> bool:
    """True when ``repos`` serves ``repository`` (``tasks``, ``workflows``, ``auth`` or ``executions``)."""
    try:
        getattr(repos, repository)
    except UnsupportedError:
        return False
    return True


def _chunks(items: Iterable[R], size: int) -> Iterator[list[R]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Table(ABC, Generic[R]):
    """One kind of record: how to page through it, key it, show it as JSON, look it up and write it verbatim."""

    #: The table's name as shown to users.
    name: ClassVar[str]
    #: The Provider repository that holds it.
    repository: ClassVar[str]

    @abstractmethod
    def pages(self, repos: Repositories, size: int) -> Generator[list[R], None, None]:
        """Every record, in pages of at most ``size``, in the repository's stable order."""

    @abstractmethod
    def key(self, record: R) -> str:
        """The record's primary key."""

    @abstractmethod
    def to_json(self, record: R) -> JsonObject:
        """Every stored field of the record, as JSON (what checksums and comparisons see)."""

    @abstractmethod
    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, R]:
        """The records of ``keys`` that exist in ``repos``, by key."""

    @abstractmethod
    def write(self, repos: Repositories, records: list[R]) -> None:
        """Write ``records`` verbatim (upserting by key), parents before children."""

    def parent_key(self, record: R) -> str | None:
        """The key of the record of this table that must exist before ``record`` can be written."""
        return None

    def count(self, repos: Repositories) -> int:
        """How many records ``repos`` holds (one pass over the pages)."""
        return sum(len(page) for page in self.pages(repos, COUNT_PAGE))

    def is_empty(self, repos: Repositories) -> bool:
        """True when ``repos`` holds no record of this table."""
        pages = self.pages(repos, 1)
        try:
            first = next(pages, None)
        finally:
            pages.close()
        return not first


class WorkflowsTable(Table[WorkflowState]):
    """``workflow_states``; records are read without their tasks (the tasks table carries those)."""

    name = "workflows"
    repository = "workflows"

    def pages(self, repos: Repositories, size: int) -> Generator[list[WorkflowState], None, None]:
        yield from _chunks(repos.workflows.iter_states(batch_size=size), size)

    def key(self, record: WorkflowState) -> str:
        return record.workflow_exec_id

    def to_json(self, record: WorkflowState) -> JsonObject:
        return workflow_json(record)

    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, WorkflowState]:
        found: dict[str, WorkflowState] = {}
        for key in keys:
            page = repos.workflows.list_states(
                WorkflowFilter(workflow_exec_id=key), limit=1, with_tasks=False
            )
            found.update((state.workflow_exec_id, state) for state in page.items)
        return found

    def write(self, repos: Repositories, records: list[WorkflowState]) -> None:
        repos.workflows.import_states(records)

    def count(self, repos: Repositories) -> int:
        return repos.workflows.count_states()

    def count_by_status(self, repos: Repositories) -> dict[TaskStatus, int]:
        """How many workflows ``repos`` holds in each status (statuses with none are left out)."""
        counts = {
            status: repos.workflows.count_states(WorkflowFilter(status=status)) for status in TaskStatus
        }
        return {status: n for status, n in counts.items() if n}


class TasksTable(Table[TaskState]):
    """``task_states``, by ``created_at``; a task's parent is written before it."""

    name = "tasks"
    repository = "tasks"

    def pages(self, repos: Repositories, size: int) -> Generator[list[TaskState], None, None]:
        yield from _chunks(repos.tasks.iter_states(batch_size=size), size)

    def key(self, record: TaskState) -> str:
        return record.task_exec_id

    def parent_key(self, record: TaskState) -> str | None:
        return record.parent_state_id

    def to_json(self, record: TaskState) -> JsonObject:
        return cast("JsonObject", to_json(record))

    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, TaskState]:
        return {state.task_exec_id: state for state in repos.tasks.list_by_ids(list(keys))} if keys else {}

    def write(self, repos: Repositories, records: list[TaskState]) -> None:
        repos.tasks.import_states(records)

    def count(self, repos: Repositories) -> int:
        return repos.tasks.count_states()


class UsersTable(Table[User]):
    """``users``, oldest first."""

    name = "users"
    repository = "auth"

    def pages(self, repos: Repositories, size: int) -> Generator[list[User], None, None]:
        yield from _chunks(repos.auth.list_users(), size)

    def key(self, record: User) -> str:
        return record.id

    def to_json(self, record: User) -> JsonObject:
        return cast("JsonObject", to_json(record))

    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, User]:
        found: dict[str, User] = {}
        for key in keys:
            try:
                found[key] = repos.auth.get_user(key)
            except NotFoundError:
                continue
        return found

    def write(self, repos: Repositories, records: list[User]) -> None:
        repos.auth.import_users(records)


class ApiKeysTable(Table[APIKey]):
    """``api_keys``, user by user: fingerprints and prefixes (the plaintext keys are stored nowhere)."""

    name = "api_keys"
    repository = "auth"

    def pages(self, repos: Repositories, size: int) -> Generator[list[APIKey], None, None]:
        keys = (key for user in repos.auth.list_users() for key in repos.auth.list_api_keys(user.id))
        yield from _chunks(keys, size)

    def key(self, record: APIKey) -> str:
        return record.id

    def to_json(self, record: APIKey) -> JsonObject:
        return cast("JsonObject", to_json(record))

    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, APIKey]:
        found: dict[str, APIKey] = {}
        for key in keys:
            try:
                found[key] = repos.auth.get_api_key(key)
            except NotFoundError:
                continue
        return found

    def write(self, repos: Repositories, records: list[APIKey]) -> None:
        repos.auth.import_api_keys(records)


class ExecTasksTable(Table[TaskDefinition]):
    """The add-on's task definitions, in the order they were first added."""

    name = "exec_tasks"
    repository = "executions"

    def pages(self, repos: Repositories, size: int) -> Generator[list[TaskDefinition], None, None]:
        yield from _chunks(repos.executions.list_tasks(), size)

    def key(self, record: TaskDefinition) -> str:
        return record.id

    def to_json(self, record: TaskDefinition) -> JsonObject:
        return task_to_doc(record)

    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, TaskDefinition]:
        found = (repos.executions.get_task(key) for key in keys)
        return {task.id: task for task in found if task is not None}

    def write(self, repos: Repositories, records: list[TaskDefinition]) -> None:
        with repos.executions.batch():
            for record in records:
                repos.executions.add_task(record)


class ExecOccurrencesTable(Table[TaskOccurrence]):
    """The add-on's occurrences, in the order they were first added."""

    name = "exec_occurrences"
    repository = "executions"

    def pages(self, repos: Repositories, size: int) -> Generator[list[TaskOccurrence], None, None]:
        yield from _chunks(repos.executions.list_occurrences(), size)

    def key(self, record: TaskOccurrence) -> str:
        return record.id

    def to_json(self, record: TaskOccurrence) -> JsonObject:
        return occurrence_to_doc(record)

    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, TaskOccurrence]:
        found = (repos.executions.get_occurrence(key) for key in keys)
        return {occ.id: occ for occ in found if occ is not None}

    def write(self, repos: Repositories, records: list[TaskOccurrence]) -> None:
        with repos.executions.batch():
            for record in records:
                repos.executions.add_occurrence(record)


class ExecExecutionsTable(Table[TaskExecution]):
    """The add-on's executions (one per occurrence), in the order they were first added."""

    name = "exec_executions"
    repository = "executions"

    def pages(self, repos: Repositories, size: int) -> Generator[list[TaskExecution], None, None]:
        yield from _chunks(repos.executions.list_executions(), size)

    def key(self, record: TaskExecution) -> str:
        return record.occurrence_id

    def to_json(self, record: TaskExecution) -> JsonObject:
        return execution_to_doc(record)

    def lookup(self, repos: Repositories, keys: Sequence[str]) -> dict[str, TaskExecution]:
        found = (repos.executions.get_execution(key) for key in keys)
        return {execution.occurrence_id: execution for execution in found if execution is not None}

    def write(self, repos: Repositories, records: list[TaskExecution]) -> None:
        with repos.executions.batch():
            for record in records:
                repos.executions.add_execution(record)


#: Every table, in an order where a table's references point only to tables before it.
TABLES: tuple[Table[object], ...] = cast(
    "tuple[Table[object], ...]",
    (
        WorkflowsTable(),
        TasksTable(),
        UsersTable(),
        ApiKeysTable(),
        ExecTasksTable(),
        ExecOccurrencesTable(),
        ExecExecutionsTable(),
    ),
)


def served_tables(repos: Repositories) -> list[Table[object]]:
    """The tables of the repositories ``repos`` serves, in :data:`TABLES` order."""
    return [table for table in TABLES if serves(repos, table.repository)]


__all__ = [
    "REPOSITORIES",
    "TABLES",
    "ApiKeysTable",
    "Digest",
    "ExecExecutionsTable",
    "ExecOccurrencesTable",
    "ExecTasksTable",
    "Table",
    "TasksTable",
    "UsersTable",
    "WorkflowsTable",
    "canonical",
    "served_tables",
    "serves",
    "to_json",
    "workflow_json",
]
