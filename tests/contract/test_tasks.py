"""The TaskRepository contract, run unchanged on every driver that serves it (tests/contract/drivers.py).

The suite is handed an open, empty :class:`~planflow.Provider` as the ``provider`` fixture
(tests/contract/conftest.py).
"""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, datetime

import pytest

from planflow import (
    ConflictError,
    ExecutionType,
    NotFoundError,
    ParallelStrategy,
    Provider,
    TaskFilter,
    TaskState,
    TaskStatus,
    TransactionRequiredError,
    UsageEntry,
    UsageSummary,
    ValidationError,
)
from tests.contract.helpers import task, unique, workflow

HOSTILE_IDS = [
    "it's",
    'double "quoted"',
    "'; DROP TABLE task_states; --",
    "日本語-ñ-😀",
    "x" * 500,
    "back\\slash%_wild?",
    " leading and trailing ",
]


class TestTaskRepository:
    """Behaviour every TaskRepository must have."""

    suite = "tasks"

    # Upsert, get, versions -----------------------------------------------------------------------------

    def test_upsert_inserts_with_version_one_and_utc_timestamps(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf, input={"a": 1}, agent_id="agent-1")
        assert stored.version == 1
        assert stored.created_at is not None and stored.created_at.tzinfo is not None
        assert stored.created_at.utcoffset() == UTC.utcoffset(None)
        assert provider.tasks.get_state(stored.task_exec_id) == stored

    def test_upsert_overwrites_every_field_keeps_created_at_and_bumps_version(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        first = task(provider, wf, input={"a": 1})
        changed = first.evolve(
            status=TaskStatus.SUCCESS,
            output={"result": [1, 2, {"nested": None}]},
            error=None,
            agent_id="agent-2",
            action_id="act",
            tool_id="tool",
            execution_type=ExecutionType.MEMORY,
            usage=UsageSummary((UsageEntry("openai", "gpt", "task", 1, 2, 3),)),
        )
        second = provider.tasks.upsert_state(changed)
        assert second.version == 2
        assert second.created_at == first.created_at
        assert second.updated_at is not None and first.updated_at is not None
        assert second.updated_at >= first.updated_at
        assert provider.tasks.get_state(first.task_exec_id) == second

    def test_every_status_and_execution_type_is_accepted(self, provider: Provider) -> None:
        wf = workflow(provider)
        for status in TaskStatus:
            for kind in ExecutionType:
                stored = task(provider, wf, status=status, execution_type=kind)
                assert provider.tasks.get_state(stored.task_exec_id).status is status

    def test_get_missing_state_raises_not_found(self, provider: Provider) -> None:
        with pytest.raises(NotFoundError, match="nope"):
            provider.tasks.get_state("nope")

    def test_json_fields_round_trip_unicode_and_nesting(self, provider: Provider) -> None:
        wf = workflow(provider)
        payload = {
            "text": 'héllo 😀 \t tab \\ backslash " quote',
            "list": [1, 2.5, True, None, "x"],
            "deep": {"a": {"b": {"c": []}}},
        }
        stored = task(provider, wf, input=payload, output={}, error={"code": "E"})
        again = provider.tasks.get_state(stored.task_exec_id)
        assert again.input == payload and again.output == {} and again.error == {"code": "E"}

    @pytest.mark.parametrize("hostile", HOSTILE_IDS)
    def test_hostile_ids_are_stored_and_read_back_verbatim(self, provider: Provider, hostile: str) -> None:
        wf = workflow(provider, workflow_exec_id="wf " + hostile)
        parent = task(provider, wf, task_exec_id=hostile, task_id=hostile, agent_id=hostile)
        child = task(provider, wf, task_exec_id=hostile + "/child", parent=parent)
        assert provider.tasks.get_state(hostile).task_id == hostile
        assert provider.tasks.get_state(hostile).workflow_exec_id == "wf " + hostile
        assert [s.task_exec_id for s in provider.tasks.list_children(hostile)] == [child.task_exec_id]
        assert [s.task_exec_id for s in provider.tasks.list_by_ids([hostile])] == [hostile]
        assert provider.tasks.list_tasks_by_agent(wf.workflow_exec_id, hostile)[0].task_exec_id == hostile

    # Bad input -------------------------------------------------------------------------------------------

    def test_non_serialisable_json_is_rejected_before_the_database(self, provider: Provider) -> None:
        wf = workflow(provider)
        bad = TaskState(
            unique("tx"), "t", wf.workflow_exec_id, wf.workflow_id, input={"when": datetime.now()}
        )
        with pytest.raises(ValidationError, match="input"):
            provider.tasks.upsert_state(bad)
        with pytest.raises(ValidationError, match="output"):
            provider.tasks.upsert_state(bad.evolve(input=None, output={"nan": float("nan")}))
        with pytest.raises(NotFoundError):
            provider.tasks.get_state(bad.task_exec_id)

    def test_nul_character_in_json_is_rejected_on_every_driver(self, provider: Provider) -> None:
        wf = workflow(provider)
        bad = TaskState(unique("tx"), "t", wf.workflow_exec_id, wf.workflow_id, output={"s": "a\u0000b"})
        with pytest.raises(ValidationError, match="NUL"):
            provider.tasks.upsert_state(bad)

    def test_non_object_json_field_is_rejected(self, provider: Provider) -> None:
        wf = workflow(provider)
        bad = TaskState(unique("tx"), "t", wf.workflow_exec_id, wf.workflow_id, output=[1, 2])  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="JSON object"):
            provider.tasks.upsert_state(bad)

    def test_task_as_its_own_parent_is_rejected(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        with pytest.raises(ValidationError, match="own parent"):
            provider.tasks.upsert_state(stored.evolve(parent_state_id=stored.task_exec_id))
        assert provider.tasks.get_state(stored.task_exec_id) == stored

    def test_unknown_workflow_is_rejected_and_nothing_stored(self, provider: Provider) -> None:
        state = TaskState(unique("tx"), "t", "no-such-workflow", "wf")
        with pytest.raises(ValidationError, match="no-such-workflow"):
            provider.tasks.upsert_state(state)
        with pytest.raises(NotFoundError):
            provider.tasks.get_state(state.task_exec_id)

    def test_unknown_parent_is_rejected(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = TaskState(
            unique("tx"), "t", wf.workflow_exec_id, wf.workflow_id, parent_state_id="ghost-parent"
        )
        with pytest.raises(ValidationError, match="ghost-parent"):
            provider.tasks.upsert_state(state)

    def test_invalid_status_is_rejected_naming_the_value(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = TaskState(unique("tx"), "t", wf.workflow_exec_id, wf.workflow_id, status="DONE")  # type: ignore[arg-type]
        with pytest.raises(ValidationError, match="DONE"):
            provider.tasks.upsert_state(state)

    def test_empty_id_is_rejected(self, provider: Provider) -> None:
        wf = workflow(provider)
        with pytest.raises(ValidationError, match="task_exec_id"):
            provider.tasks.upsert_state(TaskState("", "t", wf.workflow_exec_id, wf.workflow_id))

    # Optimistic locking ----------------------------------------------------------------------------------

    def test_update_with_expected_version_bumps_by_one(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        updated = provider.tasks.update_state(stored.evolve(status=TaskStatus.RUNNING), expected_version=1)
        assert updated.version == 2
        assert updated.created_at == stored.created_at
        assert provider.tasks.get_state(stored.task_exec_id) == updated

    def test_a_status_given_as_its_value_comes_back_as_the_member_from_every_write(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        as_text = dataclasses.replace(stored, status="SUCCESS")  # pyright: ignore[reportArgumentType]

        updated = provider.tasks.update_state(as_text, stored.version)
        upserted = provider.tasks.upsert_state(as_text)

        assert updated.status is TaskStatus.SUCCESS and upserted.status is TaskStatus.SUCCESS
        assert provider.tasks.get_state(stored.task_exec_id) == upserted

    def test_update_with_stale_version_raises_conflict_naming_both_versions(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        provider.tasks.update_state(stored.evolve(status=TaskStatus.RUNNING), expected_version=1)
        with pytest.raises(ConflictError, match=r"version 2, expected 1") as info:
            provider.tasks.update_state(stored.evolve(status=TaskStatus.FAILED), expected_version=1)
        assert (info.value.expected, info.value.actual) == (1, 2)
        assert provider.tasks.get_state(stored.task_exec_id).status is TaskStatus.RUNNING

    @pytest.mark.parametrize(
        "column", ["task_id", "workflow_exec_id", "workflow_id", "parent_state_id", "agent_id", "tool_id"]
    )
    def test_update_changing_an_indexed_identity_column_stores_every_field_once(
        self, provider: Provider, column: str
    ) -> None:
        # These columns are matched, not set, by the first statement of an optimistic update (SQLite rewrites
        # the index entries of every column it sets); changing one of them must still store the whole state.
        wf, other = workflow(provider), workflow(provider, workflow_id="wf-other")
        parent, other_parent = task(provider, wf), task(provider, wf)
        stored = task(provider, wf, parent=parent, agent_id="agent-a", tool_id=None)
        changes: dict[str, object] = {
            "task_id": "renamed",
            "workflow_exec_id": other.workflow_exec_id,
            "workflow_id": "wf-other",
            "parent_state_id": other_parent.task_exec_id,
            "agent_id": None,
            "tool_id": "tool-b",
        }
        wanted = stored.evolve(status=TaskStatus.RUNNING, output={"n": 1}, **{column: changes[column]})

        updated = provider.tasks.update_state(wanted, expected_version=stored.version)

        assert updated.version == stored.version + 1
        assert provider.tasks.get_state(stored.task_exec_id) == updated
        assert getattr(updated, column) == changes[column]
        assert (updated.status, updated.output) == (TaskStatus.RUNNING, {"n": 1})
        with pytest.raises(ConflictError, match=rf"version {updated.version}, expected {stored.version}"):
            provider.tasks.update_state(wanted.evolve(status=TaskStatus.FAILED), stored.version)

    def test_update_of_missing_state_raises_not_found(self, provider: Provider) -> None:
        wf = workflow(provider)
        with pytest.raises(NotFoundError):
            provider.tasks.update_state(TaskState("ghost", "t", wf.workflow_exec_id, wf.workflow_id), 1)

    def test_optimistic_updates_from_8_threads_lose_nothing(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf, output={"count": 0})
        successes: list[int] = []
        conflicts: list[int] = []
        lock = threading.Lock()

        def worker() -> None:
            for _ in range(15):
                while True:
                    current = provider.tasks.get_state(stored.task_exec_id)
                    assert current.output is not None
                    count = current.output["count"]
                    assert isinstance(count, int)
                    try:
                        provider.tasks.update_state(
                            current.evolve(output={"count": count + 1}), current.version
                        )
                    except ConflictError:
                        with lock:
                            conflicts.append(1)
                        continue
                    with lock:
                        successes.append(1)
                    break

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        final = provider.tasks.get_state(stored.task_exec_id)
        assert len(successes) == 8 * 15
        assert final.output == {"count": 8 * 15}
        assert final.version == 1 + len(successes)

    # get_state_for_update --------------------------------------------------------------------------------

    def test_get_state_for_update_outside_transaction_raises(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        with pytest.raises(TransactionRequiredError):
            provider.tasks.get_state_for_update(stored.task_exec_id)

    def test_get_state_for_update_inside_transaction_returns_state(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        with provider.transaction() as tx:
            locked = tx.tasks.get_state_for_update(stored.task_exec_id)
            tx.tasks.upsert_state(locked.evolve(status=TaskStatus.RUNNING))
        assert provider.tasks.get_state(stored.task_exec_id).status is TaskStatus.RUNNING

    def test_get_state_for_update_blocks_a_second_writer_until_commit(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf, output={"n": 0})
        events: list[str] = []
        locked = threading.Event()

        def second() -> None:
            locked.wait()
            with provider.transaction() as tx:
                current = tx.tasks.get_state_for_update(stored.task_exec_id)
                events.append("second-read")
                assert current.output == {"n": 1}, "second writer must see the first one's commit"
                tx.tasks.upsert_state(current.evolve(output={"n": 2}))

        thread = threading.Thread(target=second)
        thread.start()
        with provider.transaction() as tx:
            current = tx.tasks.get_state_for_update(stored.task_exec_id)
            locked.set()
            thread.join(timeout=0.5)
            events.append("first-commit")
            tx.tasks.upsert_state(current.evolve(output={"n": 1}))
        thread.join()
        assert events == ["first-commit", "second-read"]
        assert provider.tasks.get_state(stored.task_exec_id).output == {"n": 2}

    # Listing ---------------------------------------------------------------------------------------------

    def test_list_states_filters_with_and_and_orders_by_created_at(self, provider: Provider) -> None:
        wf = workflow(provider)
        a = task(provider, wf, status=TaskStatus.RUNNING, agent_id="ag")
        task(provider, wf, status=TaskStatus.SUCCESS, agent_id="ag")
        c = task(provider, wf, status=TaskStatus.RUNNING, agent_id="ag")
        task(provider, wf, status=TaskStatus.RUNNING, agent_id="other")
        page = provider.tasks.list_states(
            TaskFilter(status=TaskStatus.RUNNING, agent_id="ag", workflow_exec_id=wf.workflow_exec_id)
        )
        assert [s.task_exec_id for s in page.items] == [a.task_exec_id, c.task_exec_id]
        assert page.next_cursor is None

    def test_list_states_paginates_with_cursor_without_gaps_or_repeats(self, provider: Provider) -> None:
        wf = workflow(provider)
        created = [task(provider, wf).task_exec_id for _ in range(23)]
        seen: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = provider.tasks.list_states(
                TaskFilter(workflow_exec_id=wf.workflow_exec_id), limit=5, cursor=cursor
            )
            seen += [s.task_exec_id for s in page.items]
            pages += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == created
        assert pages == 5

    def test_list_states_rejects_bad_cursor_and_limit(self, provider: Provider) -> None:
        with pytest.raises(ValidationError, match="cursor"):
            provider.tasks.list_states(cursor="not-a-cursor")
        with pytest.raises(ValidationError, match="limit"):
            provider.tasks.list_states(limit=0)

    def test_list_by_ids_with_50000_ids_skips_missing(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = [TaskState(f"bulk-{i}", f"t{i}", wf.workflow_exec_id, wf.workflow_id) for i in range(200)]
        provider.tasks.bulk_upsert(stored)
        ids = [f"missing-{i}" for i in range(49_800)] + [s.task_exec_id for s in stored]
        found = provider.tasks.list_by_ids(ids)
        assert sorted(s.task_exec_id for s in found) == sorted(s.task_exec_id for s in stored)
        assert provider.tasks.list_by_ids([]) == []

    def test_list_tasks_in_workflow_keeps_the_latest_state_per_task_id(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_id="step", status=TaskStatus.FAILED)
        latest = task(provider, wf, task_id="step", status=TaskStatus.SUCCESS)
        other = task(provider, wf, task_id="other")
        task(provider, workflow(provider), task_id="step")
        assert provider.tasks.list_tasks_in_workflow(wf.workflow_exec_id) == {"step": latest, "other": other}

    def test_list_tasks_by_status_agent_and_tool_stay_in_one_workflow(self, provider: Provider) -> None:
        wf, elsewhere = workflow(provider), workflow(provider)
        mine = task(provider, wf, status=TaskStatus.WAITING, agent_id="a1", tool_id="t1")
        task(provider, elsewhere, status=TaskStatus.WAITING, agent_id="a1", tool_id="t1")
        assert provider.tasks.list_tasks_by_status(wf.workflow_exec_id, TaskStatus.WAITING) == [mine]
        assert provider.tasks.list_tasks_by_agent(wf.workflow_exec_id, "a1") == [mine]
        assert provider.tasks.list_tasks_by_tool(wf.workflow_exec_id, "t1") == [mine]

    # Hierarchy -------------------------------------------------------------------------------------------

    def test_children_and_child_by_task_id(self, provider: Provider) -> None:
        wf = workflow(provider)
        parent = task(provider, wf)
        first = task(provider, wf, parent=parent, task_id="c")
        second = task(provider, wf, parent=parent, task_id="c")
        third = task(provider, wf, parent=parent, task_id="d", output={"v": 3})
        assert provider.tasks.list_children(parent.task_exec_id) == [first, second, third]
        assert provider.tasks.get_child_by_task_id(parent.task_exec_id, "c") == second
        with pytest.raises(NotFoundError):
            provider.tasks.get_child_by_task_id(parent.task_exec_id, "zzz")
        assert provider.tasks.list_children_outputs(parent.task_exec_id) == {"d": {"v": 3}}

    def test_wide_hierarchy_of_1000_children(self, provider: Provider) -> None:
        wf = workflow(provider)
        parent = task(provider, wf, execution_type=ExecutionType.PARALLEL)
        children = [
            TaskState(
                f"{parent.task_exec_id}-c{i:04d}",
                f"c{i}",
                wf.workflow_exec_id,
                wf.workflow_id,
                parent_state_id=parent.task_exec_id,
                status=TaskStatus.SUCCESS if i % 2 else TaskStatus.RUNNING,
            )
            for i in range(1000)
        ]
        assert provider.tasks.bulk_upsert(children) == 1000
        assert len(provider.tasks.list_children(parent.task_exec_id)) == 1000
        info = provider.tasks.get_progress_info(parent.task_exec_id)
        assert (info.total, info.success, info.running) == (1000, 500, 500)
        tree = provider.tasks.get_task_tree(parent.task_exec_id)
        assert len(tree) == 1001 and {n.depth for n in tree[1:]} == {1}

    def test_deep_hierarchy_of_200_levels_tree_and_cascade(self, provider: Provider) -> None:
        wf = workflow(provider)
        chain = [task(provider, wf)]
        for _ in range(199):
            chain.append(task(provider, wf, parent=chain[-1]))
        tree = provider.tasks.get_task_tree(chain[0].task_exec_id, max_depth=500)
        assert [n.state.task_exec_id for n in tree] == [s.task_exec_id for s in chain]
        assert [n.depth for n in tree] == list(range(200))
        assert len(provider.tasks.get_task_tree(chain[0].task_exec_id)) == 101  # default depth limit 100
        provider.tasks.delete_state(chain[0].task_exec_id)
        assert provider.tasks.list_by_ids([s.task_exec_id for s in chain]) == []

    def test_tree_is_depth_first_children_in_creation_order_and_respects_depth_limit(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        root = task(provider, wf)
        a = task(provider, wf, parent=root)
        b = task(provider, wf, parent=root)
        a1 = task(provider, wf, parent=a)
        b1 = task(provider, wf, parent=b)
        a2 = task(provider, wf, parent=a)
        a1x = task(provider, wf, parent=a1)
        tree = provider.tasks.get_task_tree(root.task_exec_id)
        # Pre-order: indenting each task by its depth draws the tree.
        assert [(n.state.task_exec_id, n.depth) for n in tree] == [
            (root.task_exec_id, 0),
            (a.task_exec_id, 1),
            (a1.task_exec_id, 2),
            (a1x.task_exec_id, 3),
            (a2.task_exec_id, 2),
            (b.task_exec_id, 1),
            (b1.task_exec_id, 2),
        ]
        assert [
            n.state.task_exec_id for n in provider.tasks.get_task_tree(root.task_exec_id, max_depth=1)
        ] == [
            root.task_exec_id,
            a.task_exec_id,
            b.task_exec_id,
        ]
        assert [n.depth for n in provider.tasks.get_task_tree(a.task_exec_id)] == [0, 1, 2, 1]
        assert provider.tasks.get_task_tree("unknown-root") == []

    def test_tree_siblings_written_at_the_same_moment_keep_their_subtrees_apart(
        self, provider: Provider
    ) -> None:
        # Siblings with the same created_at are told apart by task_exec_id, and each one's children follow it,
        # not its twin.
        wf = workflow(provider)
        root = task(provider, wf)
        moment = datetime(2025, 1, 1, tzinfo=UTC)

        def at_once(task_id: str, parent: str) -> TaskState:
            return TaskState(
                f"{parent}/{task_id}", task_id, wf.workflow_exec_id, wf.workflow_id, parent_state_id=parent,
                version=1, created_at=moment, updated_at=moment,
            )  # fmt: skip

        names = ["b", "a", "c"]
        provider.tasks.import_states(at_once(n, root.task_exec_id) for n in names)
        provider.tasks.import_states(
            at_once(f"{n}{k}", f"{root.task_exec_id}/{n}") for k in range(2) for n in names
        )
        tree = provider.tasks.get_task_tree(root.task_exec_id)
        assert [n.state.task_id for n in tree[1:]] == ["a", "a0", "a1", "b", "b0", "b1", "c", "c0", "c1"]

    def test_tree_terminates_on_a_parent_cycle_in_stored_data(self, provider: Provider) -> None:
        wf = workflow(provider)
        a = task(provider, wf)
        b = task(provider, wf, parent=a)
        c = task(provider, wf, parent=b)
        leaf = task(provider, wf, parent=c)
        # Close the cycle a -> b -> c -> a: only possible by rewriting a's parent after the fact.
        provider.tasks.upsert_state(a.evolve(parent_state_id=c.task_exec_id))
        tree = provider.tasks.get_task_tree(a.task_exec_id)
        assert [(n.state.task_exec_id, n.depth) for n in tree] == [
            (a.task_exec_id, 0),
            (b.task_exec_id, 1),
            (c.task_exec_id, 2),
            (leaf.task_exec_id, 3),
        ]
        from_b = provider.tasks.get_task_tree(b.task_exec_id)
        assert len(from_b) == 4 and len({n.state.task_exec_id for n in from_b}) == 4

    def test_delete_removes_the_subtree_only(self, provider: Provider) -> None:
        wf = workflow(provider)
        root = task(provider, wf)
        keep = task(provider, wf)
        child = task(provider, wf, parent=root)
        grandchild = task(provider, wf, parent=child)
        provider.tasks.delete_state(root.task_exec_id)
        ids = [root.task_exec_id, child.task_exec_id, grandchild.task_exec_id, keep.task_exec_id]
        assert [s.task_exec_id for s in provider.tasks.list_by_ids(ids)] == [keep.task_exec_id]
        with pytest.raises(NotFoundError):
            provider.tasks.delete_state(root.task_exec_id)

    def test_deleting_a_workflow_cascades_to_its_tasks(self, provider: Provider) -> None:
        wf = workflow(provider)
        parent = task(provider, wf)
        child = task(provider, wf, parent=parent)
        provider.workflows.delete(wf.workflow_exec_id)
        assert provider.tasks.list_by_ids([parent.task_exec_id, child.task_exec_id]) == []

    # Progress --------------------------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("statuses", "expected"),
        [
            ([], dict.fromkeys(ParallelStrategy, TaskStatus.PENDING)),
            ([TaskStatus.PENDING, TaskStatus.PENDING], dict.fromkeys(ParallelStrategy, TaskStatus.PENDING)),
            (
                [TaskStatus.SUCCESS, TaskStatus.RUNNING],
                {
                    ParallelStrategy.WAIT_ALL: TaskStatus.RUNNING,
                    ParallelStrategy.FAIL_FAST: TaskStatus.RUNNING,
                    ParallelStrategy.BEST_EFFORT: TaskStatus.RUNNING,
                    ParallelStrategy.RACE: TaskStatus.SUCCESS,
                },
            ),
            (
                [TaskStatus.FAILED, TaskStatus.WAITING],
                {
                    ParallelStrategy.WAIT_ALL: TaskStatus.RUNNING,
                    ParallelStrategy.FAIL_FAST: TaskStatus.FAILED,
                    ParallelStrategy.BEST_EFFORT: TaskStatus.RUNNING,
                    ParallelStrategy.RACE: TaskStatus.RUNNING,
                },
            ),
            (
                [TaskStatus.SUCCESS, TaskStatus.TIMED_OUT],
                {
                    ParallelStrategy.WAIT_ALL: TaskStatus.FAILED,
                    ParallelStrategy.FAIL_FAST: TaskStatus.FAILED,
                    ParallelStrategy.BEST_EFFORT: TaskStatus.SUCCESS,
                    ParallelStrategy.RACE: TaskStatus.SUCCESS,
                },
            ),
            (
                [TaskStatus.FAILED, TaskStatus.CANCELED],
                {
                    ParallelStrategy.WAIT_ALL: TaskStatus.FAILED,
                    ParallelStrategy.FAIL_FAST: TaskStatus.FAILED,
                    ParallelStrategy.BEST_EFFORT: TaskStatus.FAILED,
                    ParallelStrategy.RACE: TaskStatus.FAILED,
                },
            ),
            (
                [TaskStatus.SUCCESS, TaskStatus.SUCCESS],
                dict.fromkeys(ParallelStrategy, TaskStatus.SUCCESS),
            ),
        ],
    )
    def test_progress_info_for_every_strategy(
        self, provider: Provider, statuses: list[TaskStatus], expected: dict[ParallelStrategy, TaskStatus]
    ) -> None:
        wf = workflow(provider)
        parent = task(provider, wf, execution_type=ExecutionType.PARALLEL)
        for status in statuses:
            task(provider, wf, parent=parent, status=status)
        info = provider.tasks.get_progress_info(parent.task_exec_id)
        assert info.total == len(statuses)
        assert {s: info.overall_status(s) for s in ParallelStrategy} == expected

    def test_progress_info_counts_and_rates(self, provider: Provider) -> None:
        wf = workflow(provider)
        parent = task(provider, wf)
        for status in (
            [TaskStatus.SUCCESS] * 4
            + [TaskStatus.FAILED, TaskStatus.TIMED_OUT, TaskStatus.CANCELED]
            + [TaskStatus.RUNNING, TaskStatus.WAITING, TaskStatus.PAUSED, TaskStatus.PENDING]
        ):
            task(provider, wf, parent=parent, status=status)
        info = provider.tasks.get_progress_info(parent.task_exec_id)
        assert (info.total, info.success, info.failed, info.canceled, info.running, info.pending) == (
            11,
            4,
            2,
            1,
            3,
            1,
        )
        assert info.terminal == 7
        assert info.completion_rate == pytest.approx(4 / 11)
        assert info.failure_rate == pytest.approx(2 / 11)

    # Usage -----------------------------------------------------------------------------------------------

    def test_merge_usage_sums_case_insensitively(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)
        provider.tasks.merge_usage(
            stored.task_exec_id, UsageSummary((UsageEntry("OpenAI", "GPT-4o", "task", 1, 2, 3),))
        )
        merged = provider.tasks.merge_usage(
            stored.task_exec_id,
            UsageSummary(
                (
                    UsageEntry("openai", "gpt-4o", "TASK", 10, 20, 30),
                    UsageEntry("anthropic", "claude", "agent", 1, 1, 2),
                )
            ),
        )
        assert merged.entries == (
            UsageEntry("OpenAI", "GPT-4o", "task", 11, 22, 33),
            UsageEntry("anthropic", "claude", "agent", 1, 1, 2),
        )
        assert provider.tasks.get_state(stored.task_exec_id).usage == merged
        with pytest.raises(NotFoundError):
            provider.tasks.merge_usage("ghost", merged)

    def test_merge_usage_from_8_threads_loses_nothing(self, provider: Provider) -> None:
        wf = workflow(provider)
        stored = task(provider, wf)

        def worker(n: int) -> None:
            for _ in range(25):
                provider.tasks.merge_usage(
                    stored.task_exec_id,
                    UsageSummary(
                        (UsageEntry("p", "m", "task", 1, 2, 3), UsageEntry("p", f"m{n}", "task", 0, 0, 1))
                    ),
                )

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        usage = provider.tasks.get_state(stored.task_exec_id).usage
        assert usage is not None
        totals = {e.model: e.total_tokens for e in usage.entries}
        assert totals["m"] == 8 * 25 * 3
        assert all(totals[f"m{n}"] == 25 for n in range(8))

    # Bulk ------------------------------------------------------------------------------------------------

    def test_bulk_upsert_inserts_and_updates_and_is_all_or_nothing(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = [TaskState(unique("bulk"), "t", wf.workflow_exec_id, wf.workflow_id) for _ in range(10)]
        assert provider.tasks.bulk_upsert(states) == 10
        provider.tasks.bulk_upsert([s.evolve(status=TaskStatus.SUCCESS) for s in states])
        again = provider.tasks.list_by_ids([s.task_exec_id for s in states])
        assert {s.status for s in again} == {TaskStatus.SUCCESS} and {s.version for s in again} == {2}
        bad = [
            TaskState(unique("bulk"), "t", wf.workflow_exec_id, wf.workflow_id),
            TaskState(unique("bulk"), "t", "ghost-wf", "wf"),
        ]
        with pytest.raises(ValidationError, match="ghost-wf"):
            provider.tasks.bulk_upsert(bad)
        assert provider.tasks.list_by_ids([s.task_exec_id for s in bad]) == []

    def test_bulk_upsert_with_an_invalid_state_mid_batch_stores_nothing_of_the_batch(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        stored = provider.tasks.bulk_upsert(
            [
                TaskState(f"{wf.workflow_exec_id}/old-{i}", "t", wf.workflow_exec_id, wf.workflow_id)
                for i in range(5)
            ]
        )
        assert stored == 5
        before = provider.tasks.list_tasks_in_workflow(wf.workflow_exec_id)
        states = [
            TaskState(f"{wf.workflow_exec_id}/old-{i}", "t", wf.workflow_exec_id, wf.workflow_id).evolve(
                status=TaskStatus.SUCCESS
            )
            for i in range(5)
        ]
        states += [
            TaskState(f"{wf.workflow_exec_id}/new-{i}", "t", wf.workflow_exec_id, wf.workflow_id)
            for i in range(600)
        ]
        bad = TaskState(
            f"{wf.workflow_exec_id}/bad", "t", wf.workflow_exec_id, wf.workflow_id, input={"when": object()}
        )
        states.insert(400, bad)

        with pytest.raises(ValidationError, match=r"task '.*/bad': .*input must be a JSON value"):
            provider.tasks.bulk_upsert(states)

        assert provider.tasks.list_tasks_in_workflow(wf.workflow_exec_id) == before
        assert provider.tasks.count_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id)) == 5
        # The failed batch left the provider usable.
        assert provider.tasks.bulk_upsert([s for s in states if s is not bad]) == 605

    # Verbatim import (copy between stores) ----------------------------------------------------------------

    def test_import_states_keeps_versions_and_timestamps_and_takes_a_child_before_its_parent(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        created = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
        updated = datetime(2024, 5, 2, 8, 30, tzinfo=UTC)
        parent = TaskState(
            unique("imp"),
            "p",
            wf.workflow_exec_id,
            wf.workflow_id,
            version=7,
            created_at=created,
            updated_at=updated,
            output={"x": 1},
        )
        child = TaskState(
            unique("imp"),
            "c",
            wf.workflow_exec_id,
            wf.workflow_id,
            parent_state_id=parent.task_exec_id,
            version=3,
            created_at=created,
            updated_at=updated,
        )
        assert provider.tasks.import_states([child, parent]) == 2
        assert provider.tasks.get_state(parent.task_exec_id) == parent
        assert provider.tasks.get_state(child.task_exec_id) == child
        assert provider.tasks.import_states([parent]) == 1  # idempotent
        assert provider.tasks.get_state(parent.task_exec_id).version == 7

    def test_import_states_rejects_unversioned_or_naive_states_and_unknown_parents(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        base = TaskState(
            unique("imp"),
            "t",
            wf.workflow_exec_id,
            wf.workflow_id,
            version=1,
            created_at=datetime(2024, 1, 1, tzinfo=UTC),
            updated_at=datetime(2024, 1, 1, tzinfo=UTC),
        )
        with pytest.raises(ValidationError, match="version"):
            provider.tasks.import_states([base.evolve(version=0)])
        with pytest.raises(ValidationError, match="created_at"):
            provider.tasks.import_states([base.evolve(created_at=datetime(2024, 1, 1))])
        with pytest.raises(ValidationError, match="unknown"):
            provider.tasks.import_states([base.evolve(parent_state_id="ghost-parent")])
        with pytest.raises(NotFoundError):
            provider.tasks.get_state(base.task_exec_id)

    def test_count_states_counts_what_list_states_lists(self, provider: Provider) -> None:
        wf = workflow(provider)
        for status in (TaskStatus.RUNNING, TaskStatus.RUNNING, TaskStatus.SUCCESS):
            task(provider, wf, status=status)
        assert provider.tasks.count_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id)) == 3
        running = TaskFilter(workflow_exec_id=wf.workflow_exec_id, status=TaskStatus.RUNNING)
        assert provider.tasks.count_states(running) == 2
        assert provider.tasks.count_states() >= 3
