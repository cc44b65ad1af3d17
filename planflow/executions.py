"""The add-on's execution models: task definitions, occurrences, events and executions.

The models are the PlanFlow screen-reader add-on's own, field for field, so add-on code written against them
runs unchanged. Their storage Protocol is :class:`planflow.protocols.ExecutionRepository`; the JSON documents
every driver stores are made and read back by :mod:`planflow.infra.execution_codec`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal, TypeAlias

Priority: TypeAlias = Literal["low", "medium", "high"]
EventKind: TypeAlias = Literal["triggered", "missed", "rescheduled", "completed"]
ExecutionStateName: TypeAlias = Literal["pending", "done", "missed", "cancelled"]

PRIORITIES: tuple[Priority, ...] = ("low", "medium", "high")
EVENT_KINDS: tuple[EventKind, ...] = ("triggered", "missed", "rescheduled", "completed")
EXECUTION_STATES: tuple[ExecutionStateName, ...] = ("pending", "done", "missed", "cancelled")

#: States from which an execution may still be rescheduled.
RESCHEDULABLE_STATES: frozenset[ExecutionStateName] = frozenset({"pending", "missed"})


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


__all__ = [
    "EVENT_KINDS",
    "EXECUTION_STATES",
    "PRIORITIES",
    "RESCHEDULABLE_STATES",
    "EventKind",
    "ExecutionStateName",
    "Priority",
    "RetryPolicy",
    "TaskDefinition",
    "TaskEvent",
    "TaskExecution",
    "TaskOccurrence",
]
