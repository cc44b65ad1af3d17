"""Deterministic benchmark data: task states shaped like real agent runs, trees, and execution records."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from planflow import (
    ComponentType,
    ExecutionType,
    TaskEvent,
    TaskExecution,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowState,
)

T = TypeVar("T")

WORKFLOW_ID = "bench-workflow"
#: Children per task in the trees of the tree workloads.
FAN_OUT = 10

_STATUSES = (
    TaskStatus.SUCCESS,
    TaskStatus.RUNNING,
    TaskStatus.PENDING,
    TaskStatus.FAILED,
    TaskStatus.WAITING,
)
_TYPES = (ExecutionType.BASIC, ExecutionType.BASIC, ExecutionType.PARALLEL, ExecutionType.ROUTER)


def workflow(workflow_exec_id: str) -> WorkflowState:
    """The workflow state every task of a data set belongs to."""
    return WorkflowState(workflow_exec_id, WORKFLOW_ID, status=TaskStatus.RUNNING, input={"source": "bench"})


def task_id_for(prefix: str, index: int) -> str:
    """The ``task_exec_id`` of task ``index`` of the set named ``prefix``."""
    return f"{prefix}-{index:07d}"


def task(
    prefix: str, index: int, workflow_exec_id: str, *, parent: str | None = None, round_: int = 0
) -> TaskState:
    """Task ``index`` of the set ``prefix``: ids, enums, JSON input and output and a usage entry.

    ``round_`` changes the status and output, so the same task can be written again with new content.
    """
    step = index + round_
    return TaskState(
        task_exec_id=task_id_for(prefix, index),
        task_id=f"step-{index % 50}",
        workflow_exec_id=workflow_exec_id,
        workflow_id=WORKFLOW_ID,
        component=ComponentType.AGENT if index % 5 == 0 else ComponentType.TASK,
        status=_STATUSES[step % len(_STATUSES)],
        execution_type=_TYPES[index % len(_TYPES)],
        parent_state_id=parent,
        agent_id=f"agent-{index % 7}",
        action_id=f"action-{index % 11}",
        tool_id=None if index % 3 else f"tool-{index % 13}",
        input={
            "prompt": f"Summarise document {index}",
            "temperature": 0.2,
            "max_tokens": 512,
            "tags": ["a", "b"],
        },
        output=None
        if step % 4 == 1
        else {"text": f"Summary {index} round {round_}", "tokens": 100 + step % 97},
        error={"code": "TIMEOUT", "retryable": True} if step % 17 == 0 else None,
        usage=UsageSummary(
            (
                UsageEntry(
                    "openai",
                    "gpt-4o-mini",
                    "task",
                    200 + index % 50,
                    40 + step % 30,
                    240 + index % 50 + step % 30,
                ),
            )
        ),
    )


def flat(prefix: str, count: int, workflow_exec_id: str, *, round_: int = 0) -> list[TaskState]:
    """``count`` top-level tasks of one workflow execution."""
    return [task(prefix, i, workflow_exec_id, round_=round_) for i in range(count)]


def tree(prefix: str, count: int, workflow_exec_id: str) -> list[TaskState]:
    """``count`` tasks forming one tree of fan-out :data:`FAN_OUT`, parents before children; index 0 is the root.

    Heap numbering: the parent of task ``i`` is task ``(i - 1) // FAN_OUT``.
    """
    states = [task(prefix, 0, workflow_exec_id)]
    states += [
        task(prefix, i, workflow_exec_id, parent=task_id_for(prefix, (i - 1) // FAN_OUT))
        for i in range(1, count)
    ]
    return states


def shuffled(items: Sequence[T], seed: int) -> list[T]:
    """A copy of ``items`` in a fixed pseudo-random order."""
    copy = list(items)
    random.Random(seed).shuffle(copy)
    return copy


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of ``items`` of at most ``size`` elements."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def executions(count: int) -> list[TaskExecution]:
    """``count`` add-on execution records with a short history each."""
    start = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
    records: list[TaskExecution] = []
    for i in range(count):
        moment = start + timedelta(minutes=i)
        history = [TaskEvent("triggered", moment)]
        if i % 3 == 0:
            history += [TaskEvent("missed", moment + timedelta(minutes=5))]
            history += [TaskEvent("rescheduled", moment + timedelta(minutes=6))]
        records.append(
            TaskExecution(f"occ-{i:06d}", "pending" if i % 3 else "missed", 3 - (i % 3 == 0), history)
        )
    return records
