"""planflow itself, through the public Provider API."""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.stores.base import MAX_DEPTH, PLANFLOW
from planflow import Provider, TaskFilter, TaskState, TaskTreeNode


class PlanflowStore:
    """The workloads' operations as a planflow user writes them."""

    name = PLANFLOW

    def __init__(self, provider: Provider) -> None:
        self._provider = provider
        self._tasks = provider.tasks

    def bulk_upsert(self, states: Sequence[TaskState]) -> int:
        return self._tasks.bulk_upsert(states)

    def get_state(self, task_exec_id: str) -> TaskState:
        return self._tasks.get_state(task_exec_id)

    def list_by_ids(self, task_exec_ids: Sequence[str]) -> list[TaskState]:
        return self._tasks.list_by_ids(task_exec_ids)

    def get_task_tree(self, root_state_id: str) -> list[TaskTreeNode]:
        return self._tasks.get_task_tree(root_state_id, max_depth=MAX_DEPTH)

    def list_page(
        self, workflow_exec_id: str, limit: int, cursor: object | None
    ) -> tuple[list[TaskState], object | None]:
        assert cursor is None or isinstance(cursor, str)
        page = self._tasks.list_states(
            TaskFilter(workflow_exec_id=workflow_exec_id), limit=limit, cursor=cursor
        )
        return page.items, page.next_cursor

    def update_state(self, state: TaskState, expected_version: int) -> TaskState:
        return self._tasks.update_state(state, expected_version)

    def close(self) -> None:
        self._provider.close()
