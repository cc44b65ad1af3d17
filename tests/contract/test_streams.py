"""Streaming reads: iter_states of tasks and workflows, iter_task_tree; the same on every SQL driver."""

from __future__ import annotations

import pytest

from planflow import Provider, TaskFilter, TaskState, ValidationError, WorkflowFilter, WorkflowState
from tests.contract.helpers import task, unique, workflow


class TestStreams:
    """What every driver's streaming reads yield, and what they refuse."""

    suite = "streams"

    def test_iter_states_yields_what_list_states_pages_give_in_the_same_order(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        provider.tasks.bulk_upsert(
            TaskState(f"{wf.workflow_exec_id}/{i:04d}", f"t{i % 7}", wf.workflow_exec_id, wf.workflow_id)
            for i in range(2_345)
        )
        only = TaskFilter(workflow_exec_id=wf.workflow_exec_id)
        streamed = list(provider.tasks.iter_states(only, batch_size=500))
        paged: list[TaskState] = []
        cursor = None
        while True:
            page = provider.tasks.list_states(only, limit=1000, cursor=cursor)
            paged += page.items
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert streamed == paged and len(streamed) == 2_345

    def test_iter_states_sees_every_state_that_existed_once_while_others_are_added(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        only = TaskFilter(workflow_exec_id=wf.workflow_exec_id)
        first = [task(provider, wf, task_exec_id=f"{wf.workflow_exec_id}/a{i}") for i in range(30)]
        seen: list[str] = []
        for number, state in enumerate(provider.tasks.iter_states(only, batch_size=7)):
            seen.append(state.task_exec_id)
            if number % 5 == 0:  # writes while iterating: other states join the workflow
                task(provider, wf)
        assert len(seen) == len(set(seen))
        assert {s.task_exec_id for s in first} <= set(seen)

    def test_iter_states_of_workflows_yields_them_without_tasks(self, provider: Provider) -> None:
        name = unique("wf-name")
        made = [workflow(provider, workflow_id=name) for _ in range(5)]
        task(provider, made[0])
        streamed = list(provider.workflows.iter_states(WorkflowFilter(workflow_id=name), batch_size=2))
        assert [w.workflow_exec_id for w in streamed] == [w.workflow_exec_id for w in made]
        assert all(not w.tasks for w in streamed) and all(isinstance(w, WorkflowState) for w in streamed)

    def test_iter_task_tree_yields_get_task_tree_s_nodes_and_may_be_left_early(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        root = task(provider, wf)
        level = [root]
        for _ in range(3):
            level = [task(provider, wf, parent=parent) for parent in level for _ in range(4)]
        tree = provider.tasks.get_task_tree(root.task_exec_id)
        assert list(provider.tasks.iter_task_tree(root.task_exec_id)) == tree
        assert list(provider.tasks.iter_task_tree(root.task_exec_id, max_depth=1)) == [
            n for n in tree if n.depth <= 1
        ]
        stream = provider.tasks.iter_task_tree(root.task_exec_id)
        assert next(iter(stream)).state == root
        stream.close()  # leaving early gives the connection back: the store keeps working
        assert provider.tasks.upsert_state(root.evolve(output={"after": True})).version == 2

    def test_streams_check_their_arguments_when_called(self, provider: Provider) -> None:
        with pytest.raises(ValidationError, match="batch_size"):
            provider.tasks.iter_states(batch_size=0)
        with pytest.raises(ValidationError, match="TaskFilter"):
            provider.tasks.iter_states(WorkflowFilter())  # pyright: ignore[reportArgumentType]
        with pytest.raises(ValidationError, match="max_depth"):
            provider.tasks.iter_task_tree("x", max_depth=2**40)
