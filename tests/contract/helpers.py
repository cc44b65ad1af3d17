"""Builders shared by the contract suites."""

from __future__ import annotations

import itertools

from planflow import ExecutionType, Provider, TaskState, TaskStatus, WorkflowState

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
