"""The add-on's execution models, the :class:`ExecutionRepository` Protocol, and the codec all drivers share.

The models are the PlanFlow screen-reader add-on's own, field for field, so add-on code written against them
runs unchanged. Every driver stores the same JSON documents, produced and read back by :func:`task_to_doc`,
:func:`task_from_doc` and their siblings: datetimes as ``isoformat()`` strings (naive stays naive, aware stays
aware), a timedelta as seconds, the retry policy and the history as nested JSON.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, Protocol, TypeAlias, TypeVar, cast

from planflow.errors import ValidationError
from planflow.models import JsonValue

Priority: TypeAlias = Literal["low", "medium", "high"]
EventKind: TypeAlias = Literal["triggered", "missed", "rescheduled", "completed"]
ExecutionStateName: TypeAlias = Literal["pending", "done", "missed", "cancelled"]

PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high")
EVENT_KINDS: tuple[EventKind, ...] = ("triggered", "missed", "rescheduled", "completed")
EXECUTION_STATES: tuple[ExecutionStateName, ...] = ("pending", "done", "missed", "cancelled")

#: States from which an execution may still be rescheduled.
RESCHEDULABLE_STATES: frozenset[ExecutionStateName] = frozenset({"pending", "missed"})

T = TypeVar("T")
L = TypeVar("L", bound=str)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often a missed occurrence may be rescheduled."""

    max_retries: int


@dataclass(frozen=True, slots=True)
class TaskDefinition:
    """A task the user planned, possibly recurring."""

    id: str
    title: str
    description: str | None
    link: str | None
    created_at: datetime
    recurrence: timedelta | None
    priority: Priority
    preferred_slots: list[str]
    retry_policy: RetryPolicy
    pinned_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class TaskOccurrence:
    """One scheduled run of a task."""

    id: str
    task_id: str
    scheduled_for: datetime
    slot_name: str | None
    pinned_time: datetime | None


@dataclass(frozen=True, slots=True)
class TaskEvent:
    """Something that happened to an occurrence, and when."""

    event: EventKind
    timestamp: datetime


@dataclass(frozen=True, slots=True)
class TaskExecution:
    """The execution state of one occurrence, with its history of events (oldest first)."""

    occurrence_id: str
    state: ExecutionStateName
    retries_remaining: int
    history: list[TaskEvent] = field(default_factory=list[TaskEvent])

    @property
    def is_reschedulable(self) -> bool:
        """True when retries remain and the state is ``missed`` or ``pending``."""
        return self.retries_remaining > 0 and self.state in RESCHEDULABLE_STATES

    @property
    def retry_count(self) -> int:
        """Number of ``rescheduled`` events in the history."""
        return sum(1 for event in self.history if event.event == "rescheduled")

    @property
    def last_event_time(self) -> datetime | None:
        """Timestamp of the last history event, or ``None`` without history."""
        return self.history[-1].timestamp if self.history else None


class ExecutionRepository(Protocol):
    """Storage of the add-on's task definitions, occurrences and executions.

    Adds are idempotent upserts by id (executions by ``occurrence_id``): adding a record whose id is stored
    overwrites it and keeps its place; lists return records in the order they were first added. Every field
    round-trips exactly. Only the typed models are accepted. Implementations are safe to call from several
    threads.
    """

    def add_task(self, task: TaskDefinition) -> None:
        """Store ``task``, overwriting a stored task with the same id.

        Args:
            task: The task definition to store.

        Raises:
            TypeError: ``task`` is not a :class:`TaskDefinition`; nothing is stored.
            ValidationError: A field holds a value of the wrong type; nothing is stored.
        """
        ...

    def get_task(self, task_id: str) -> TaskDefinition | None:
        """Return the task with id ``task_id``, or ``None`` when it is not stored."""
        ...

    def list_tasks(self) -> list[TaskDefinition]:
        """Return every stored task, in the order the tasks were first added."""
        ...

    def add_occurrence(self, occ: TaskOccurrence) -> None:
        """Store ``occ``, overwriting a stored occurrence with the same id.

        Args:
            occ: The occurrence to store. Its task need not be stored: the repository holds no logic.

        Raises:
            TypeError: ``occ`` is not a :class:`TaskOccurrence`; nothing is stored.
            ValidationError: A field holds a value of the wrong type; nothing is stored.
        """
        ...

    def get_occurrence(self, occurrence_id: str) -> TaskOccurrence | None:
        """Return the occurrence with id ``occurrence_id``, or ``None`` when it is not stored."""
        ...

    def list_occurrences(self, task_id: str | None = None) -> list[TaskOccurrence]:
        """Return the stored occurrences, in the order they were first added.

        Args:
            task_id: When given, only the occurrences of this task.
        """
        ...

    def add_execution(self, execution: TaskExecution) -> None:
        """Store ``execution``, overwriting a stored execution of the same ``occurrence_id``.

        Args:
            execution: The execution to store, with its whole history.

        Raises:
            TypeError: ``execution`` is not a :class:`TaskExecution`; nothing is stored.
            ValidationError: A field holds a value of the wrong type; nothing is stored.
        """
        ...

    def get_execution(self, occurrence_id: str) -> TaskExecution | None:
        """Return the execution of occurrence ``occurrence_id``, or ``None`` when it is not stored."""
        ...

    def list_executions(self) -> list[TaskExecution]:
        """Return every stored execution, in the order the executions were first added."""
        ...

    def delete_task_and_related(self, task_id: str) -> None:
        """Remove a task, its occurrences and their executions, in one durable write.

        Records of other tasks are not touched. Deleting a task that is not stored removes whatever
        occurrences (and their executions) still name it, and is otherwise a no-op.
        """
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Group the writes made inside the ``with`` block into one durable write.

        On SQL drivers the block is one transaction. Reads inside the block see its writes. When the block
        raises, none of its writes are stored. A batch entered inside another is a savepoint: its writes are
        stored with the outer batch's, and when it raises only its own writes are undone.
        """
        ...


def require(value: object, expected: type[T], what: str = "value") -> T:
    """Return ``value`` if it is an instance of ``expected``.

    Args:
        value: What the caller passed.
        expected: The only accepted type (subclasses included).
        what: How to name ``value`` in the message, e.g. ``"add_task(task)"``.

    Raises:
        TypeError: ``value`` is of another type; the message names the expected and the received type.
    """
    if not isinstance(value, expected):
        raise TypeError(f"{what} must be a {expected.__name__}, received {type(value).__name__}")
    return value


# --- codec ---


def task_to_doc(task: TaskDefinition) -> dict[str, JsonValue]:
    """The JSON document stored for ``task``.

    Raises:
        TypeError: ``task`` is not a :class:`TaskDefinition`.
        ValidationError: A field holds a value of the wrong type (named in the message).
    """
    task = require(task, TaskDefinition, "task")
    where = _Where(f"task {task.id!r}")
    policy = require(task.retry_policy, RetryPolicy, where("retry_policy"))
    return {
        "id": _str(task.id, where("id")),
        "title": _str(task.title, where("title")),
        "description": _optional_str(task.description, where("description")),
        "link": _optional_str(task.link, where("link")),
        "created_at": _iso(task.created_at, where("created_at")),
        "recurrence": _optional_seconds(task.recurrence, where("recurrence")),
        "priority": _choice(task.priority, PRIORITIES, where("priority")),
        "preferred_slots": [
            _str(slot, where("preferred_slots"))
            for slot in _list(task.preferred_slots, where("preferred_slots"))
        ],
        "retry_policy": {
            "max_retries": _int(policy.max_retries, where.inside("retry_policy")("max_retries"))
        },
        "pinned_time": _optional_iso(task.pinned_time, where("pinned_time")),
    }


def task_from_doc(doc: Mapping[str, object]) -> TaskDefinition:
    """The task stored as ``doc`` (the inverse of :func:`task_to_doc`).

    Raises:
        ValidationError: ``doc`` does not have the shape :func:`task_to_doc` produces; the message names the
            record and the field.
    """
    read = _Reader.record(doc, "task", "id")
    return TaskDefinition(
        id=read.text("id"),
        title=read.text("title"),
        description=read.optional_text("description"),
        link=read.optional_text("link"),
        created_at=read.moment("created_at"),
        recurrence=read.optional_span("recurrence"),
        priority=read.choice("priority", PRIORITIES),
        preferred_slots=read.texts("preferred_slots"),
        retry_policy=RetryPolicy(max_retries=read.nested("retry_policy").integer("max_retries")),
        pinned_time=read.optional_moment("pinned_time"),
    )


def occurrence_to_doc(occ: TaskOccurrence) -> dict[str, JsonValue]:
    """The JSON document stored for ``occ``.

    Raises:
        TypeError: ``occ`` is not a :class:`TaskOccurrence`.
        ValidationError: A field holds a value of the wrong type (named in the message).
    """
    occ = require(occ, TaskOccurrence, "occurrence")
    where = _Where(f"occurrence {occ.id!r}")
    return {
        "id": _str(occ.id, where("id")),
        "task_id": _str(occ.task_id, where("task_id")),
        "scheduled_for": _iso(occ.scheduled_for, where("scheduled_for")),
        "slot_name": _optional_str(occ.slot_name, where("slot_name")),
        "pinned_time": _optional_iso(occ.pinned_time, where("pinned_time")),
    }


def occurrence_from_doc(doc: Mapping[str, object]) -> TaskOccurrence:
    """The occurrence stored as ``doc`` (the inverse of :func:`occurrence_to_doc`).

    Raises:
        ValidationError: ``doc`` does not have the expected shape; the message names the record and the field.
    """
    read = _Reader.record(doc, "occurrence", "id")
    return TaskOccurrence(
        id=read.text("id"),
        task_id=read.text("task_id"),
        scheduled_for=read.moment("scheduled_for"),
        slot_name=read.optional_text("slot_name"),
        pinned_time=read.optional_moment("pinned_time"),
    )


def execution_to_doc(execution: TaskExecution) -> dict[str, JsonValue]:
    """The JSON document stored for ``execution``.

    Raises:
        TypeError: ``execution`` is not a :class:`TaskExecution`, or its history holds something other than
            :class:`TaskEvent` values.
        ValidationError: A field holds a value of the wrong type (named in the message).
    """
    execution = require(execution, TaskExecution, "execution")
    where = _Where(f"execution of occurrence {execution.occurrence_id!r}")
    history: list[JsonValue] = []
    for index, item in enumerate(_list(execution.history, where("history"))):
        event = require(item, TaskEvent, where(f"history[{index}]"))
        inside = where.inside(f"history[{index}]")
        history.append(
            {
                "event": _choice(event.event, EVENT_KINDS, inside("event")),
                "timestamp": _iso(event.timestamp, inside("timestamp")),
            }
        )
    return {
        "occurrence_id": _str(execution.occurrence_id, where("occurrence_id")),
        "state": _choice(execution.state, EXECUTION_STATES, where("state")),
        "retries_remaining": _int(execution.retries_remaining, where("retries_remaining")),
        "history": history,
    }


def execution_from_doc(doc: Mapping[str, object]) -> TaskExecution:
    """The execution stored as ``doc`` (the inverse of :func:`execution_to_doc`).

    Raises:
        ValidationError: ``doc`` does not have the expected shape; the message names the record and the field.
    """
    read = _Reader.record(doc, "execution of occurrence", "occurrence_id")
    history = [
        TaskEvent(event=item.choice("event", EVENT_KINDS), timestamp=item.moment("timestamp"))
        for item in read.nested_items("history")
    ]
    return TaskExecution(
        occurrence_id=read.text("occurrence_id"),
        state=read.choice("state", EXECUTION_STATES),
        retries_remaining=read.integer("retries_remaining"),
        history=history,
    )


# --- field checks, shared by encoding (model values) and decoding (document values) ---


class _Where:
    """Names a field of one record in error messages: ``task 't1' field 'retry_policy.max_retries'``."""

    __slots__ = ("prefix", "record")

    def __init__(self, record: str, prefix: str = "") -> None:
        self.record = record
        self.prefix = prefix

    def __call__(self, name: str) -> str:
        return f"{self.record} field {self.prefix + name!r}"

    def inside(self, name: str) -> _Where:
        """The naming of fields nested in field ``name``."""
        return _Where(self.record, f"{self.prefix}{name}.")


def _invalid(where: str, expected: str, value: object) -> ValidationError:
    return ValidationError(f"{where} must be {expected}, found {type(value).__name__} {reprlib.repr(value)}")


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _invalid(where, "a string", value)
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        # A lone surrogate cannot be written as UTF-8 by any driver; refuse it before the store is touched.
        raise ValidationError(
            f"{where} is not valid Unicode text: {exc.reason} at index {exc.start}"
        ) from None
    return value


def _optional_str(value: object, where: str) -> str | None:
    return None if value is None else _str(value, where)


def _int(value: object, where: str) -> int:
    # bool is an int subclass; True stored as a retry count would read back as 1 on some drivers.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _invalid(where, "an integer", value)
    return value


def _choice(value: object, allowed: tuple[L, ...], where: str) -> L:
    for option in allowed:
        if value == option:
            return option
    raise _invalid(where, "one of " + ", ".join(allowed), value)


def _list(value: object, where: str) -> list[object]:
    if not isinstance(value, list):
        raise _invalid(where, "a list", value)
    return list(value)  # pyright: ignore[reportUnknownArgumentType]


def _mapping(value: object, where: str) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise _invalid(where, "a JSON object", value)
    # Keys of a JSON object are always strings.
    return cast("Mapping[str, object]", value)


def _iso(value: object, where: str) -> str:
    if not isinstance(value, datetime):
        raise _invalid(where, "a datetime", value)
    return value.isoformat()


def _optional_iso(value: object, where: str) -> str | None:
    return None if value is None else _iso(value, where)


def _optional_seconds(value: object, where: str) -> float | None:
    if value is None:
        return None
    if not isinstance(value, timedelta):
        raise _invalid(where, "a timedelta or None", value)
    # Exact to the microsecond for spans below about 285 years (53 bits of microseconds).
    return value.total_seconds()


def _parse_datetime(value: object, where: str) -> datetime:
    text = _str(value, where)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(where, "an ISO datetime string", value) from None


def _parse_seconds(value: object, where: str) -> timedelta:
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise _invalid(where, "a number of seconds", value)
    try:
        return timedelta(seconds=value)
    except OverflowError:
        raise _invalid(where, "a number of seconds within timedelta's range", value) from None


class _Reader:
    """Reads the fields of one stored document, raising ValidationError naming the record and field."""

    __slots__ = ("doc", "where")

    def __init__(self, doc: Mapping[str, object], where: _Where) -> None:
        self.doc = doc
        self.where = where

    @classmethod
    def record(cls, doc: object, kind: str, id_field: str) -> _Reader:
        """A reader of a top-level document, named in messages by its kind and id."""
        mapping = _mapping(doc, f"stored {kind}")
        return cls(mapping, _Where(f"stored {kind} {mapping.get(id_field)!r}"))

    def _required(self, name: str) -> object:
        try:
            return self.doc[name]
        except KeyError:
            raise ValidationError(f"{self.where(name)} is missing") from None

    def text(self, name: str) -> str:
        return _str(self._required(name), self.where(name))

    def optional_text(self, name: str) -> str | None:
        return _optional_str(self.doc.get(name), self.where(name))

    def integer(self, name: str) -> int:
        return _int(self._required(name), self.where(name))

    def choice(self, name: str, allowed: tuple[L, ...]) -> L:
        return _choice(self._required(name), allowed, self.where(name))

    def moment(self, name: str) -> datetime:
        return _parse_datetime(self._required(name), self.where(name))

    def optional_moment(self, name: str) -> datetime | None:
        value = self.doc.get(name)
        return None if value is None else _parse_datetime(value, self.where(name))

    def optional_span(self, name: str) -> timedelta | None:
        value = self.doc.get(name)
        return None if value is None else _parse_seconds(value, self.where(name))

    def texts(self, name: str) -> list[str]:
        return [_str(item, self.where(name)) for item in _list(self._required(name), self.where(name))]

    def nested(self, name: str) -> _Reader:
        return _Reader(_mapping(self._required(name), self.where(name)), self.where.inside(name))

    def nested_items(self, name: str) -> list[_Reader]:
        # A missing history reads as an empty one: it is the one list field with a default.
        items = _list(self.doc.get(name, []), self.where(name))
        return [
            _Reader(_mapping(item, self.where(f"{name}[{index}]")), self.where.inside(f"{name}[{index}]"))
            for index, item in enumerate(items)
        ]


__all__ = [
    "EVENT_KINDS",
    "EXECUTION_STATES",
    "PRIORITIES",
    "RESCHEDULABLE_STATES",
    "EventKind",
    "ExecutionRepository",
    "ExecutionStateName",
    "Priority",
    "RetryPolicy",
    "TaskDefinition",
    "TaskEvent",
    "TaskExecution",
    "TaskOccurrence",
    "execution_from_doc",
    "execution_to_doc",
    "occurrence_from_doc",
    "occurrence_to_doc",
    "require",
    "task_from_doc",
    "task_to_doc",
]
