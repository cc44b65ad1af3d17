"""Builders shared by the contract suites (and by the TinyDB and model tests, for the add-on's records)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from planflow import ExecutionType, Provider, TaskState, TaskStatus, WorkflowState
from planflow.executions import (
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskOccurrence,
)

_counter = itertools.count()


def unique(prefix: str) -> str:
    """A fresh id for this test run."""
    return f"{prefix}-{next(_counter)}"


def workflow(
    provider: Provider, workflow_exec_id: str | None = None, workflow_id: str = "wf"
) -> WorkflowState:
    """Store and return a new workflow state."""
    return provider.workflows.upsert_state(WorkflowState(workflow_exec_id or unique("wfx"), workflow_id))


def task(
    provider: Provider,
    wf: WorkflowState,
    *,
    task_exec_id: str | None = None,
    task_id: str | None = None,
    parent: TaskState | None = None,
    status: TaskStatus = TaskStatus.PENDING,
    execution_type: ExecutionType = ExecutionType.BASIC,
    **fields: object,
) -> TaskState:
    """Store and return a new task state in ``wf`` (under ``parent`` when given)."""
    state = TaskState(
        task_exec_id=task_exec_id or unique("tx"),
        task_id=task_id or unique("t"),
        workflow_exec_id=wf.workflow_exec_id,
        workflow_id=wf.workflow_id,
        status=status,
        execution_type=execution_type,
        parent_state_id=None if parent is None else parent.task_exec_id,
    ).evolve(**fields)
    return provider.tasks.upsert_state(state)


# The add-on's records (ExecutionRepository) ----------------------------------------------------------------

AWARE = datetime(2025, 3, 30, 1, 59, 59, 999999, tzinfo=UTC)
AWARE_INDIA = datetime(2025, 7, 1, 9, 30, tzinfo=timezone(timedelta(hours=5, minutes=30)))
NAIVE = datetime(2025, 1, 15, 8, 0, 0, 123456)
UNICODE_TITLE = "Réunion 日本語 — ñandú 😀 \"quoted\" 'single' back\\slash\nnew line\ttab \u200b"


def a_task(task_id: str = "task-1", **changes: object) -> TaskDefinition:
    """A task with every field set; ``changes`` override fields."""
    task = TaskDefinition(
        id=task_id,
        title=f"Title of {task_id}",
        description="Water the plants",
        link="https://example.org/plants?x=1&y=2",
        created_at=AWARE,
        recurrence=timedelta(days=7, hours=2, microseconds=1),
        priority="high",
        preferred_slots=["morning", "evening"],
        retry_policy=RetryPolicy(max_retries=3),
        pinned_time=AWARE_INDIA,
    )
    return replace(task, **changes)  # pyright: ignore[reportArgumentType]


def an_occurrence(occurrence_id: str = "occ-1", task_id: str = "task-1", **changes: object) -> TaskOccurrence:
    """An occurrence of ``task_id`` with every field set; ``changes`` override fields."""
    occ = TaskOccurrence(
        id=occurrence_id,
        task_id=task_id,
        scheduled_for=AWARE_INDIA,
        slot_name="morning",
        pinned_time=NAIVE,
    )
    return replace(occ, **changes)  # pyright: ignore[reportArgumentType]


def an_execution(occurrence_id: str = "occ-1", **changes: object) -> TaskExecution:
    """An execution of ``occurrence_id`` with a short history; ``changes`` override fields."""
    execution = TaskExecution(
        occurrence_id=occurrence_id,
        state="missed",
        retries_remaining=2,
        history=[
            TaskEvent("triggered", AWARE),
            TaskEvent("missed", AWARE + timedelta(minutes=5)),
            TaskEvent("rescheduled", NAIVE),
        ],
    )
    return replace(execution, **changes)  # pyright: ignore[reportArgumentType]


def assert_same_moment(actual: datetime | None, expected: datetime | None) -> None:
    """Equal, and equally naive or aware with the same UTC offset (``==`` alone ignores both)."""
    assert actual == expected
    if actual is not None and expected is not None:
        assert (actual.tzinfo is None) == (expected.tzinfo is None)
        assert actual.utcoffset() == expected.utcoffset()


def assert_same_task(actual: TaskDefinition | None, expected: TaskDefinition) -> None:
    assert actual == expected
    assert actual is not None
    assert_same_moment(actual.created_at, expected.created_at)
    assert_same_moment(actual.pinned_time, expected.pinned_time)


def assert_same_execution(actual: TaskExecution | None, expected: TaskExecution) -> None:
    assert actual == expected
    assert actual is not None
    for got, wanted in zip(actual.history, expected.history, strict=True):
        assert_same_moment(got.timestamp, wanted.timestamp)
