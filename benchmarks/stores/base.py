"""What a workload asks of an implementation: the task operations it times, with planflow's semantics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from planflow import TaskState, TaskTreeNode

#: Implementation names, in the order the tables show them.
PLANFLOW = "planflow"
RAW = "raw"
SQLALCHEMY = "sqlalchemy"
IMPLEMENTATIONS = (PLANFLOW, RAW, SQLALCHEMY)

#: States per write transaction in bulk upserts (planflow's batch size, so every variant commits as often).
BULK_BATCH = 1000
#: Depth limit of tree reads (planflow's default).
MAX_DEPTH = 100


class TaskStore(Protocol):
    """The task operations of the workloads. Every implementation returns planflow's own model objects.

    Errors follow planflow: ``NotFoundError`` for a missing state, ``ConflictError`` for a stale version.
    """

    name: str

    def bulk_upsert(self, states: Sequence[TaskState]) -> int:
        """Insert or overwrite ``states`` (version bumped, created_at kept); returns how many were written."""
        ...

    def get_state(self, task_exec_id: str) -> TaskState:
        """One state by id."""
        ...

    def list_by_ids(self, task_exec_ids: Sequence[str]) -> list[TaskState]:
        """The states with these ids, ordered by created_at then id."""
        ...

    def get_task_tree(self, root_state_id: str) -> list[TaskTreeNode]:
        """The root and its descendants, ordered by depth then created_at."""
        ...

    def list_page(
        self, workflow_exec_id: str, limit: int, cursor: object | None
    ) -> tuple[list[TaskState], object | None]:
        """One keyset page of the states of a workflow execution and the cursor of the next (``None``: last)."""
        ...

    def update_state(self, state: TaskState, expected_version: int) -> TaskState:
        """Overwrite ``state`` if the stored version is ``expected_version``; returns the stored state."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
