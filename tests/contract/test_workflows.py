"""The WorkflowRepository contract and cross-repository transactions, run against every SQL driver."""

from __future__ import annotations

import asyncio
import threading

import pytest

from planflow import (
    ConflictError,
    NotFoundError,
    Provider,
    TaskState,
    TaskStatus,
    UnsupportedError,
    UsageEntry,
    UsageSummary,
    ValidationError,
    WorkflowFilter,
    WorkflowNotReadyError,
    WorkflowState,
)
from tests.contract.drivers import StoreSpec
from tests.contract.helpers import task, unique, workflow
from tests.driven import logged_statements, split_standby_checks


class TestWorkflowRepository:
    """Behaviour every WorkflowRepository must have."""

    suite = "workflows"

    def test_upsert_and_get_with_tasks(self, provider: Provider) -> None:
        wf = provider.workflows.upsert_state(
            WorkflowState(
                unique("wf"), "checkout", input={"cart": [1, 2]}, usage=UsageSummary((UsageEntry("p", "m"),))
            )
        )
        assert wf.version == 1 and wf.created_at is not None
        a = task(provider, wf, task_id="a")
        b = task(provider, wf, task_id="b", parent=a)
        got = provider.workflows.get_state(wf.workflow_exec_id)
        assert got.input == {"cart": [1, 2]} and got.usage == wf.usage
        assert dict(got.tasks) == {"a": a, "b": b}
        again = provider.workflows.upsert_state(wf.evolve(status=TaskStatus.RUNNING))
        assert again.version == 2 and again.created_at == wf.created_at

    def test_get_missing_workflow_raises_not_found(self, provider: Provider) -> None:
        with pytest.raises(NotFoundError, match="ghost"):
            provider.workflows.get_state("ghost")

    def test_update_status_with_and_without_expected_version(self, provider: Provider) -> None:
        wf = workflow(provider)
        running = provider.workflows.update_status(wf.workflow_exec_id, TaskStatus.RUNNING)
        assert (running.status, running.version) == (TaskStatus.RUNNING, 2)
        paused = provider.workflows.update_status(wf.workflow_exec_id, TaskStatus.PAUSED, expected_version=2)
        assert paused.version == 3
        with pytest.raises(ConflictError, match="version 3, expected 2"):
            provider.workflows.update_status(wf.workflow_exec_id, TaskStatus.FAILED, expected_version=2)
        with pytest.raises(NotFoundError):
            provider.workflows.update_status("ghost", TaskStatus.RUNNING)
        with pytest.raises(ValidationError, match="BOGUS"):
            provider.workflows.update_status(wf.workflow_exec_id, "BOGUS")  # type: ignore[arg-type]
        assert provider.workflows.get_state(wf.workflow_exec_id).status is TaskStatus.PAUSED

    def test_get_by_workflow_task_agent_and_tool_id_finds_the_newest(self, provider: Provider) -> None:
        name = unique("flow")
        old = workflow(provider, workflow_id=name)
        task(provider, old, task_id="step", agent_id="ag", tool_id="tl")
        new = workflow(provider, workflow_id=name)
        task(provider, new, task_id="step", agent_id="ag", tool_id="tl")
        newest = workflow(provider, workflow_id=name)
        assert provider.workflows.get_state_by_workflow_id(name).workflow_exec_id == newest.workflow_exec_id
        assert provider.workflows.get_state_by_task_id(name, "step").workflow_exec_id == new.workflow_exec_id
        assert provider.workflows.get_state_by_agent_id(name, "ag").workflow_exec_id == new.workflow_exec_id
        got = provider.workflows.get_state_by_tool_id(name, "tl")
        assert got.workflow_exec_id == new.workflow_exec_id and set(got.tasks) == {"step"}
        with pytest.raises(NotFoundError):
            provider.workflows.get_state_by_task_id(name, "nope")
        with pytest.raises(NotFoundError):
            provider.workflows.get_state_by_workflow_id("never-ran")

    def test_list_filters_pages_and_loads_tasks_in_a_fixed_number_of_queries(
        self, provider: Provider
    ) -> None:
        name = unique("listed")
        made = []
        for i in range(12):
            wf = workflow(provider, workflow_id=name)
            if i % 3 == 0:
                provider.workflows.update_status(wf.workflow_exec_id, TaskStatus.SUCCESS)
            for j in range(3):
                task(provider, wf, task_id=f"t{j}")
            made.append(wf.workflow_exec_id)
        with logged_statements() as logged:
            page = provider.workflows.list_states(WorkflowFilter(workflow_id=name), limit=10)
        used, checks = split_standby_checks(logged)
        assert [w.workflow_exec_id for w in page.items] == made[:10]
        assert all(set(w.tasks) == {"t0", "t1", "t2"} for w in page.items)
        assert used <= 4, f"listing 10 workflows took {used} statements"
        assert checks <= 1
        rest = provider.workflows.list_states(
            WorkflowFilter(workflow_id=name), limit=10, cursor=page.next_cursor
        )
        assert [w.workflow_exec_id for w in rest.items] == made[10:] and rest.next_cursor is None
        done = provider.workflows.list_states(WorkflowFilter(workflow_id=name, status=TaskStatus.SUCCESS))
        assert [w.workflow_exec_id for w in done.items] == made[0::3]

    def test_get_state_uses_a_fixed_number_of_queries(self, provider: Provider) -> None:
        wf = workflow(provider)
        for _ in range(30):
            task(provider, wf)
        with logged_statements() as logged:
            assert len(provider.workflows.get_state(wf.workflow_exec_id).tasks) == 30
        used, checks = split_standby_checks(logged)
        assert 1 <= used <= 4 and checks <= 1

    def test_merge_usage_from_8_threads_loses_nothing(self, provider: Provider) -> None:
        wf = workflow(provider)

        def worker() -> None:
            for _ in range(20):
                provider.workflows.merge_usage(
                    wf.workflow_exec_id, UsageSummary((UsageEntry("p", "m", "wf", 1, 1, 2),))
                )

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        usage = provider.workflows.get_state(wf.workflow_exec_id).usage
        assert usage is not None and usage.total_tokens == 8 * 20 * 2

    def test_delete_workflow(self, provider: Provider) -> None:
        wf = workflow(provider)
        provider.workflows.delete(wf.workflow_exec_id)
        with pytest.raises(NotFoundError):
            provider.workflows.get_state(wf.workflow_exec_id)
        with pytest.raises(NotFoundError):
            provider.workflows.delete(wf.workflow_exec_id)

    # complete_workflow -----------------------------------------------------------------------------------

    def test_complete_with_unfinished_top_level_task_raises_not_ready(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_id="done", status=TaskStatus.SUCCESS)
        task(provider, wf, task_id="busy", status=TaskStatus.WAITING)
        with pytest.raises(WorkflowNotReadyError, match="busy"):
            provider.workflows.complete_workflow(wf.workflow_exec_id)
        assert provider.workflows.get_state(wf.workflow_exec_id).status is TaskStatus.PENDING

    def test_complete_decides_from_top_level_tasks_only(self, provider: Provider) -> None:
        wf = workflow(provider)
        parent = task(provider, wf, task_id="parent", status=TaskStatus.SUCCESS, output={"v": 1})
        task(provider, wf, task_id="child", parent=parent, status=TaskStatus.FAILED)
        task(provider, wf, task_id="child2", parent=parent, status=TaskStatus.RUNNING)
        done = provider.workflows.complete_workflow(wf.workflow_exec_id)
        assert done.status is TaskStatus.SUCCESS
        assert done.output == {"parent": {"v": 1}}
        assert provider.workflows.get_state(wf.workflow_exec_id).status is TaskStatus.SUCCESS

    def test_complete_with_a_failed_top_level_task_fails(self, provider: Provider) -> None:
        for failure in (TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELED):
            wf = workflow(provider)
            task(provider, wf, task_id="ok", status=TaskStatus.SUCCESS)
            task(provider, wf, task_id="bad", status=failure)
            done = provider.workflows.complete_workflow(wf.workflow_exec_id)
            assert done.status is TaskStatus.FAILED
            assert done.error is not None and "bad" in str(done.error["message"])

    def test_complete_already_finished_workflow_returns_it_unchanged(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, status=TaskStatus.SUCCESS)
        first = provider.workflows.complete_workflow(wf.workflow_exec_id)
        task(provider, wf, status=TaskStatus.RUNNING)
        second = provider.workflows.complete_workflow(wf.workflow_exec_id, lambda _: {"changed": True})
        assert second.version == first.version and second.output == first.output

    def test_complete_with_transformer_output(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_id="a", status=TaskStatus.SUCCESS, output={"n": 2})

        def transform(state: WorkflowState) -> dict[str, object]:
            output = state.tasks["a"].output
            assert output is not None and state.status is TaskStatus.SUCCESS
            return {"double": output["n"] * 2}  # type: ignore[operator]

        done = provider.workflows.complete_workflow(wf.workflow_exec_id, transform)  # type: ignore[arg-type]
        assert (done.status, done.output) == (TaskStatus.SUCCESS, {"double": 4})

    def test_complete_with_failing_transformer_marks_output_transformation_failed(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        task(provider, wf, status=TaskStatus.SUCCESS)

        def broken(state: WorkflowState) -> dict[str, object]:
            raise KeyError("missing-field")

        done = provider.workflows.complete_workflow(wf.workflow_exec_id, broken)  # type: ignore[arg-type]
        assert done.status is TaskStatus.FAILED
        assert done.error is not None and done.error["code"] == "OUTPUT_TRANSFORMATION_FAILED"
        assert "missing-field" in str(done.error["message"])
        assert provider.workflows.get_state(wf.workflow_exec_id).error == done.error

    def test_complete_missing_workflow_raises_not_found(self, provider: Provider) -> None:
        with pytest.raises(NotFoundError):
            provider.workflows.complete_workflow("ghost")

    def test_import_states_keeps_versions_and_timestamps(self, provider: Provider) -> None:
        from datetime import UTC, datetime

        stamp = datetime(2023, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)
        state = WorkflowState(
            unique("wfimp"),
            "w",
            status=TaskStatus.SUCCESS,
            version=5,
            created_at=stamp,
            updated_at=stamp,
            output={"ok": True},
        )
        assert provider.workflows.import_states([state]) == 1
        assert provider.workflows.get_state(state.workflow_exec_id) == state
        with pytest.raises(ValidationError, match="version"):
            provider.workflows.import_states([state.evolve(version=0)])

    def test_list_without_tasks_is_one_query_and_count_matches(self, provider: Provider) -> None:
        name = unique("bare")
        for _ in range(3):
            task(provider, workflow(provider, workflow_id=name))
        with logged_statements() as logged:
            page = provider.workflows.list_states(WorkflowFilter(workflow_id=name), with_tasks=False)
        used, checks = split_standby_checks(logged)
        assert used == 1 and checks <= 1
        assert len(page.items) == 3 and all(not w.tasks for w in page.items)
        assert provider.workflows.count_states(WorkflowFilter(workflow_id=name)) == 3
        assert (
            provider.workflows.count_states(WorkflowFilter(workflow_id=name, status=TaskStatus.SUCCESS)) == 0
        )
        one = page.items[1].workflow_exec_id
        by_id = provider.workflows.list_states(WorkflowFilter(workflow_exec_id=one), with_tasks=False)
        assert [w.workflow_exec_id for w in by_id.items] == [one]


class TestTransactions:
    """Units of work across repositories."""

    suite = "transactions"

    def test_transaction_commits_both_repositories(self, provider: Provider) -> None:
        wf = workflow(provider)
        with provider.transaction() as tx:
            tx.tasks.upsert_state(TaskState("in-tx", "t", wf.workflow_exec_id, wf.workflow_id))
            tx.workflows.update_status(wf.workflow_exec_id, TaskStatus.RUNNING)
        assert provider.tasks.get_state("in-tx").version == 1
        assert provider.workflows.get_state(wf.workflow_exec_id).status is TaskStatus.RUNNING

    def test_transaction_rollback_undoes_writes_of_every_repository(self, provider: Provider) -> None:
        wf = workflow(provider)
        with pytest.raises(RuntimeError, match="boom"), provider.transaction() as tx:
            tx.tasks.upsert_state(TaskState("rolled-back", "t", wf.workflow_exec_id, wf.workflow_id))
            tx.workflows.update_status(wf.workflow_exec_id, TaskStatus.FAILED)
            raise RuntimeError("boom")
        with pytest.raises(NotFoundError):
            provider.tasks.get_state("rolled-back")
        assert provider.workflows.get_state(wf.workflow_exec_id).status is TaskStatus.PENDING

    def test_nested_transaction_is_a_savepoint(self, provider: Provider) -> None:
        wf = workflow(provider)
        with provider.transaction() as tx:
            tx.tasks.upsert_state(TaskState("outer", "t", wf.workflow_exec_id, wf.workflow_id))
            with pytest.raises(RuntimeError), provider.transaction() as inner:
                inner.tasks.upsert_state(TaskState("inner", "t", wf.workflow_exec_id, wf.workflow_id))
                raise RuntimeError("undo inner only")
        assert provider.tasks.get_state("outer").version == 1
        with pytest.raises(NotFoundError):
            provider.tasks.get_state("inner")

    def test_failed_operation_leaves_the_transaction_usable(self, provider: Provider) -> None:
        wf = workflow(provider)
        with provider.transaction() as tx:
            with pytest.raises(ValidationError):
                tx.tasks.upsert_state(TaskState("orphan", "t", "no-such-wf", "wf"))
            tx.tasks.upsert_state(TaskState("after-error", "t", wf.workflow_exec_id, wf.workflow_id))
        assert provider.tasks.get_state("after-error").version == 1

    def test_run_in_transaction_returns_the_result(self, provider: Provider) -> None:
        wf = workflow(provider)

        def work(tx: object) -> int:
            state = provider.tasks.upsert_state(
                TaskState(unique("rit"), "t", wf.workflow_exec_id, wf.workflow_id)
            )
            return state.version

        assert provider.run_in_transaction(work) == 1


class TestBlockingApiUnderAsyncio:
    """The blocking API called from asyncio tasks of one thread: a transaction belongs to the task that opened
    it (the asynchronous API has tests of its own for the same, in tests/aio).

    Two capabilities of the store (``StoreSpec`` in tests/contract/drivers.py) change the expected outcome:
    ``one_connection``, the store is one connection (SQLite ``:memory:``): another task cannot be kept out of a
    transaction by a connection of its own, so it is refused with UnsupportedError instead of let in;
    ``one_writer``, writers take turns on the whole store (SQLite): a write waiting for another task's open
    transaction on the same thread could never get its turn, and is refused at once.
    """

    suite = "blocking_under_asyncio"

    def test_a_write_from_another_task_while_a_transaction_awaits_is_refused_at_once_or_applied(
        self, provider: Provider, store: StoreSpec
    ) -> None:
        held, other_wf = workflow(provider), workflow(provider)
        seen: list[str] = []

        async def holder() -> None:
            with provider.transaction() as tx:
                tx.workflows.update_status(held.workflow_exec_id, TaskStatus.RUNNING)
                await asyncio.sleep(0.2)  # the other task runs now, on this thread

        async def other() -> None:
            await asyncio.sleep(0.01)
            try:
                provider.workflows.update_status(other_wf.workflow_exec_id, TaskStatus.RUNNING)
                seen.append("applied")
            except UnsupportedError as exc:
                seen.append(
                    "refused" if "open_async_provider" in str(exc) else f"refused without a hint: {exc}"
                )

        async def main() -> None:
            await asyncio.gather(holder(), other())

        asyncio.run(main())
        assert seen == ["refused" if store.one_writer else "applied"]
        assert provider.workflows.get_state(held.workflow_exec_id).status is TaskStatus.RUNNING
        expected = TaskStatus.PENDING if store.one_writer else TaskStatus.RUNNING
        assert provider.workflows.get_state(other_wf.workflow_exec_id).status is expected

    def test_another_asyncio_task_on_the_thread_does_not_see_a_transaction_s_uncommitted_writes(
        self, provider: Provider, store: StoreSpec
    ) -> None:
        wf = workflow(provider)
        seen: list[str] = []

        async def holder() -> None:
            with pytest.raises(RuntimeError, match="roll back"), provider.transaction() as tx:
                tx.tasks.upsert_state(TaskState("uncommitted", "t", wf.workflow_exec_id, wf.workflow_id))
                await asyncio.sleep(0.05)  # the other task runs now, on this thread
                raise RuntimeError("roll back")

        async def other() -> None:
            await asyncio.sleep(0.01)
            try:
                provider.tasks.get_state("uncommitted")
                seen.append("joined the other task's transaction")
            except NotFoundError:
                seen.append("outside it")
            except UnsupportedError:
                seen.append("refused")

        async def main() -> None:
            await asyncio.gather(holder(), other())

        asyncio.run(main())
        assert seen == ["refused" if store.one_connection else "outside it"]
        with pytest.raises(NotFoundError):
            provider.tasks.get_state("uncommitted")

    def test_a_task_started_inside_a_transaction_does_not_join_it(
        self, provider: Provider, store: StoreSpec
    ) -> None:
        wf = workflow(provider)
        seen: list[str] = []

        async def main() -> None:
            with pytest.raises(RuntimeError), provider.transaction() as tx:
                tx.tasks.upsert_state(TaskState("parent-only", "t", wf.workflow_exec_id, wf.workflow_id))

                async def child() -> None:
                    # Its context is a copy of the parent's, transaction included: it must not use it.
                    try:
                        provider.tasks.get_state("parent-only")
                        seen.append("joined")
                    except NotFoundError:
                        seen.append("outside")
                    except UnsupportedError:
                        seen.append("refused")

                await asyncio.create_task(child())
                raise RuntimeError("roll back")

        asyncio.run(main())
        assert seen == ["refused" if store.one_connection else "outside"]


class TestConcurrentTaskWrites:
    """Another asyncio task writing (with the blocking API) while one holds a transaction open: a server lets it;
    a SQLite file would make it wait for the write lock on the very thread the first task must finish on."""

    suite = "concurrent_task_writes"

    def test_a_write_of_another_asyncio_task_survives_a_transaction_rolled_back_meanwhile(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)

        async def holder() -> None:
            with pytest.raises(RuntimeError, match="roll back"), provider.transaction() as tx:
                tx.tasks.upsert_state(TaskState("a-rolled-back", "t", wf.workflow_exec_id, wf.workflow_id))
                await asyncio.sleep(0.05)
                raise RuntimeError("roll back")

        async def other() -> None:
            await asyncio.sleep(0.01)
            provider.tasks.upsert_state(TaskState("b-kept", "t", wf.workflow_exec_id, wf.workflow_id))

        async def main() -> None:
            await asyncio.gather(holder(), other())

        asyncio.run(main())
        assert provider.tasks.get_state("b-kept").version == 1
        with pytest.raises(NotFoundError):
            provider.tasks.get_state("a-rolled-back")
