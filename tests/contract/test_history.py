"""Run history (tasks.history, workflows.history) and workflow control (cancel, resume, fork), on every SQL driver
and both APIs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from planflow import (
    ConflictError,
    DuplicateError,
    HistoryRecord,
    NotFoundError,
    Provider,
    Repositories,
    TaskCanceledError,
    TaskFilter,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    ValidationError,
    WorkflowState,
)
from tests.contract.helpers import task, unique, workflow

P, R, S, F, C = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCESS,
    TaskStatus.FAILED,
    TaskStatus.CANCELED,
)
TEN = UsageSummary((UsageEntry("openai", "gpt-4o", "task", 10, 5, 15),))


def steps(records: list[HistoryRecord]) -> list[tuple[TaskStatus | None, TaskStatus, str | None]]:
    """The records as (from, to, worker)."""
    return [(r.from_status, r.to_status, r.worker) for r in records]


def assert_chained(provider: Provider, workflow_exec_id: str) -> None:
    """Every entity's records of the workflow form one chain (each starts where the last ended) that ends in its
    stored state: the history and the state agree."""
    records = provider.workflows.history(workflow_exec_id, include_tasks=True, limit=100_000)
    ids = [r.history_id for r in records]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    last: dict[tuple[str, str], HistoryRecord] = {}
    for record in records:
        before = last.get((record.entity, record.entity_id))
        assert record.from_status == (None if before is None else before.to_status), record
        if before is not None:
            assert record.version > before.version
        last[(record.entity, record.entity_id)] = record
    stored = provider.workflows.get_state(workflow_exec_id)
    assert last[("workflow", workflow_exec_id)].to_status is stored.status
    for state in provider.tasks.list_states(
        TaskFilter(workflow_exec_id=workflow_exec_id), limit=10_000
    ).items:
        assert last[("task", state.task_exec_id)].to_status is state.status
        assert last[("task", state.task_exec_id)].version <= state.version


class TestHistory:
    """One record per change of status, holder, attempt or error, in the transaction of the change."""

    suite = "history"

    def test_each_change_of_status_or_holder_appends_one_record_in_order(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(provider, wf)
        only = TaskFilter(workflow_exec_id=wf.workflow_exec_id)
        [claimed] = provider.tasks.claim(only, worker="w1", lease=60)
        provider.tasks.release(claimed.task_exec_id, worker="w1")
        [claimed] = provider.tasks.claim(only, worker="w2", lease=60)
        done = provider.tasks.update_state(claimed.evolve(status=S, output={"n": 1}), claimed.version)
        records = provider.tasks.history(state.task_exec_id)
        assert steps(records) == [(None, P, None), (P, R, "w1"), (R, P, "w1"), (P, R, "w2"), (R, S, "w2")]
        assert [r.version for r in records] == [1, 2, 3, 4, done.version]
        assert all(r.entity == "task" and r.workflow_exec_id == wf.workflow_exec_id for r in records)
        assert all(r.recorded_at.tzinfo is not None for r in records)
        assert [r.recorded_at for r in records] == sorted(r.recorded_at for r in records)

    def test_writes_that_change_nothing_recorded_append_nothing(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(provider, wf)
        [claimed] = provider.tasks.claim(
            TaskFilter(workflow_exec_id=wf.workflow_exec_id), worker="w", lease=60
        )
        before = provider.tasks.history(state.task_exec_id)
        current = claimed
        for n in range(3):  # progress written by the holder: output only
            current = provider.tasks.update_state(current.evolve(output={"n": n}), current.version)
        provider.tasks.heartbeat([state.task_exec_id], worker="w", lease=120)
        provider.tasks.merge_usage(state.task_exec_id, TEN)
        provider.workflows.upsert_state(wf.evolve(input={"more": True}))
        assert provider.tasks.history(state.task_exec_id) == before
        assert len(provider.workflows.history(wf.workflow_exec_id)) == 1

    def test_an_error_is_recorded_as_its_summary(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(provider, wf)
        failed = provider.tasks.update_state(
            state.evolve(status=F, error={"code": "BOOM", "message": "disk full"}), state.version
        )
        provider.tasks.update_state(failed.evolve(error={"code": "ONLY_CODE"}), failed.version)
        records = provider.tasks.history(state.task_exec_id)
        assert [(r.to_status, r.error) for r in records] == [(P, None), (F, "disk full"), (F, "ONLY_CODE")]

    def test_history_is_keyset_paged_by_after(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(provider, wf)
        for status in (R, P, R, F, P, R, S):
            state = provider.tasks.update_state(state.evolve(status=status), state.version)
        whole = provider.tasks.history(state.task_exec_id)
        assert len(whole) == 8
        pages: list[HistoryRecord] = []
        after = None
        while page := provider.tasks.history(state.task_exec_id, after=after, limit=3):
            assert len(page) <= 3
            pages.extend(page)
            after = page[-1].history_id
        assert pages == whole
        assert provider.tasks.history(state.task_exec_id, after=whole[-1].history_id) == []

    def test_workflow_history_with_and_without_its_tasks(self, provider: Provider) -> None:
        wf = workflow(provider)
        a = task(provider, wf)
        provider.workflows.update_status(wf.workflow_exec_id, R)
        provider.tasks.update_state(a.evolve(status=S), a.version)
        provider.workflows.complete_workflow(wf.workflow_exec_id)
        own = provider.workflows.history(wf.workflow_exec_id)
        assert steps(own) == [(None, P, None), (P, R, None), (R, S, None)]
        every = provider.workflows.history(wf.workflow_exec_id, include_tasks=True)
        assert [(r.entity, r.to_status) for r in every] == [
            ("workflow", P),
            ("task", P),
            ("workflow", R),
            ("task", S),
            ("workflow", S),
        ]
        assert provider.workflows.history(wf.workflow_exec_id, include_tasks=True, limit=2) == every[:2]
        assert_chained(provider, wf.workflow_exec_id)

    def test_unknown_ids_and_bad_cursors_are_refused(self, provider: Provider) -> None:
        with pytest.raises(NotFoundError, match="ghost"):
            provider.tasks.history("ghost")
        with pytest.raises(NotFoundError, match="ghost"):
            provider.workflows.history("ghost", include_tasks=True)
        state = task(provider, workflow(provider))
        with pytest.raises(ValidationError, match="after"):
            provider.tasks.history(state.task_exec_id, after=-1)
        with pytest.raises(ValidationError, match="limit"):
            provider.tasks.history(state.task_exec_id, limit=0)

    def test_delete_and_purge_remove_a_workflows_history(self, provider: Provider) -> None:
        gone, purged, kept = workflow(provider), workflow(provider), workflow(provider)
        for wf in (gone, purged, kept):
            state = task(provider, wf)
            provider.tasks.update_state(state.evolve(status=S), state.version)
            provider.workflows.complete_workflow(wf.workflow_exec_id)
        provider.workflows.delete(gone.workflow_exec_id)
        with pytest.raises(NotFoundError):
            provider.workflows.history(gone.workflow_exec_id, include_tasks=True)
        provider.workflows.upsert_state(provider.workflows.get_state(kept.workflow_exec_id).evolve(status=R))
        assert provider.workflows.purge(finished_before=datetime.now(UTC)) == 1
        with pytest.raises(NotFoundError):
            provider.workflows.history(purged.workflow_exec_id)
        assert len(provider.workflows.history(kept.workflow_exec_id, include_tasks=True)) == 5

    def test_a_rolled_back_unit_appends_nothing(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(provider, wf)

        def work(tx: Repositories) -> None:
            tx.tasks.update_state(state.evolve(status=R), state.version)
            raise RuntimeError("abandon")

        with pytest.raises(RuntimeError):
            provider.run_in_transaction(work)
        assert len(provider.tasks.history(state.task_exec_id)) == 1

    def test_an_idempotent_retry_appends_nothing(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(provider, wf)
        key = unique("unit")

        def work(tx: Repositories) -> int:
            current = tx.tasks.get_state(state.task_exec_id)
            return tx.tasks.update_state(current.evolve(status=R), current.version).version

        assert provider.run_in_transaction(work, idempotency_key=key) == 2
        assert provider.run_in_transaction(work, idempotency_key=key) == 2
        assert steps(provider.tasks.history(state.task_exec_id)) == [(None, P, None), (P, R, None)]

    def test_bulk_writes_record_each_change(self, provider: Provider) -> None:
        wf = workflow(provider)
        states = [TaskState(unique("bulk"), "t", wf.workflow_exec_id, wf.workflow_id) for _ in range(5)]
        provider.tasks.bulk_upsert(states)
        provider.tasks.bulk_upsert([s.evolve(status=R) for s in states])
        provider.tasks.bulk_upsert([s.evolve(status=R, output={"same": 1}) for s in states])
        for state in states:
            assert steps(provider.tasks.history(state.task_exec_id)) == [(None, P, None), (P, R, None)]

    def test_a_lapsed_lease_reclaimed_names_the_new_holder(self, provider: Provider) -> None:
        wf = workflow(provider)
        state = task(provider, wf)
        only = TaskFilter(workflow_exec_id=wf.workflow_exec_id)
        provider.tasks.claim(only, worker="dead", lease=0.05)
        time.sleep(0.2)
        [taken] = provider.tasks.claim(only, worker="alive", lease=60)
        assert taken.task_exec_id == state.task_exec_id
        assert steps(provider.tasks.history(state.task_exec_id)) == [
            (None, P, None),
            (P, R, "dead"),
            (R, R, "alive"),
        ]


def tree(provider: Provider) -> tuple[WorkflowState, dict[str, TaskState]]:
    """A workflow with a 3-level tree: root > (a > (a1, a2), b > b1), then c; all SUCCESS with outputs."""
    wf = workflow(provider)
    made: dict[str, TaskState] = {}
    for name, parent in (
        ("root", None),
        ("a", "root"),
        ("a1", "a"),
        ("a2", "a"),
        ("b", "root"),
        ("b1", "b"),
        ("c", None),
    ):
        state = task(
            provider,
            wf,
            task_exec_id=f"{wf.workflow_exec_id}/{name}",
            task_id=name,
            parent=None if parent is None else made[parent],
        )
        made[name] = provider.tasks.update_state(state.evolve(status=S, output={"from": name}), state.version)
        provider.tasks.merge_usage(state.task_exec_id, TEN)
    return wf, {name: provider.tasks.get_state(s.task_exec_id) for name, s in made.items()}


class TestWorkflowControl:
    """workflows.cancel, resume and fork."""

    suite = "workflow_control"

    def test_cancel_cancels_the_workflow_and_its_unfinished_tasks_and_fences_their_holders(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        done = task(provider, wf, status=S, output={"kept": True})
        waiting = task(provider, wf)
        held = task(provider, wf)
        [claimed] = provider.tasks.claim(TaskFilter(task_exec_id=held.task_exec_id), worker="w", lease=60)
        canceled = provider.workflows.cancel(wf.workflow_exec_id, reason="operator said stop")
        assert canceled.status is C and canceled.error == {
            "code": "CANCELED",
            "message": "operator said stop",
        }
        assert provider.tasks.get_state(done.task_exec_id) == done
        for state in (waiting, held):
            stored = provider.tasks.get_state(state.task_exec_id)
            assert stored.status is C and stored.claimed_by is None and stored.lease_expires_at is None
            assert stored.last_error == {"code": "CANCELED", "message": "operator said stop"}
        with pytest.raises(TaskCanceledError, match="canceled \\(operator said stop\\)"):
            provider.tasks.update_state(claimed.evolve(status=S), claimed.version)
        assert provider.tasks.heartbeat([held.task_exec_id], worker="w", lease=60).lost == [held.task_exec_id]
        with pytest.raises(ConflictError, match="CANCELED"):
            provider.tasks.release(held.task_exec_id, worker="w")
        assert steps(provider.tasks.history(held.task_exec_id))[-1] == (R, C, "w")
        # Idempotent: nothing more changes or is recorded.
        before = provider.workflows.history(wf.workflow_exec_id, include_tasks=True)
        assert provider.workflows.cancel(wf.workflow_exec_id, reason="again") == canceled
        assert provider.workflows.history(wf.workflow_exec_id, include_tasks=True) == before
        assert_chained(provider, wf.workflow_exec_id)
        with pytest.raises(NotFoundError, match="ghost"):
            provider.workflows.cancel("ghost", reason="x")

    def test_cancel_while_eight_workers_hold_claims_fences_every_one(self, provider: Provider) -> None:
        wf = workflow(provider)
        for _ in range(8):
            task(provider, wf)
        only = TaskFilter(workflow_exec_id=wf.workflow_exec_id)
        holding = threading.Barrier(9)
        outcomes: dict[str, str] = {}
        errors: list[BaseException] = []

        def worker(name: str) -> None:
            try:
                claimed: list[TaskState] = []
                while not claimed:  # a claimer may pass over rows another locks at the same moment
                    claimed = provider.tasks.claim(only, worker=name, lease=60)
                state = claimed[0]
                holding.wait(60)
                while True:  # work on until fenced
                    try:
                        state = provider.tasks.update_state(state.evolve(output={"beat": 1}), state.version)
                    except TaskCanceledError:
                        outcomes[name] = "canceled"
                        return
                    if provider.tasks.heartbeat([state.task_exec_id], worker=name, lease=60).lost:
                        outcomes[name] = "lost"
                        return
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(8)]
        for thread in threads:
            thread.start()
        holding.wait(60)
        provider.workflows.cancel(wf.workflow_exec_id, reason="shutdown")
        for thread in threads:
            thread.join(120)
        assert not errors, errors[0]
        assert len(outcomes) == 8 and set(outcomes.values()) <= {"canceled", "lost"}
        states = provider.tasks.list_states(only).items
        assert {s.status for s in states} == {C} and all(s.claimed_by is None for s in states)
        for state in states:
            history = provider.tasks.history(state.task_exec_id)
            assert [r.to_status for r in history] == [P, R, C]
        assert_chained(provider, wf.workflow_exec_id)

    def test_resume_puts_failed_canceled_and_timed_out_tasks_back_keeping_successes(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        ok = task(provider, wf, status=S, output={"kept": 1})
        failed = task(provider, wf, status=F, error={"code": "X"})
        timed = task(provider, wf, status=TaskStatus.TIMED_OUT)
        running = task(provider, wf)
        provider.tasks.claim(TaskFilter(task_exec_id=running.task_exec_id), worker="w", lease=60)
        provider.workflows.update_status(wf.workflow_exec_id, F)
        resumed = provider.workflows.resume(wf.workflow_exec_id)
        assert resumed.status is R and resumed.error is None and resumed.output is None
        assert provider.tasks.get_state(ok.task_exec_id) == ok
        for state in (failed, timed):
            stored = provider.tasks.get_state(state.task_exec_id)
            assert (stored.status, stored.error, stored.claimed_by) == (P, None, None)
            assert stored.attempt == state.attempt
        assert provider.tasks.get_state(running.task_exec_id).status is R
        assert provider.workflows.resume(wf.workflow_exec_id) == resumed  # nothing left to resume
        canceled = provider.workflows.cancel(wf.workflow_exec_id, reason="stop")
        assert canceled.status is C
        again = provider.workflows.resume(wf.workflow_exec_id)
        assert again.status is R
        statuses = {
            s.task_exec_id: s.status
            for s in provider.tasks.list_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id)).items
        }
        assert statuses[ok.task_exec_id] is S and statuses[running.task_exec_id] is P
        assert_chained(provider, wf.workflow_exec_id)
        with pytest.raises(NotFoundError):
            provider.workflows.resume("ghost")

    def test_resume_concurrent_with_cancel_ends_in_one_of_the_two_whole(self, provider: Provider) -> None:
        wf = workflow(provider)
        for n in range(10):
            task(provider, wf, status=F if n % 2 else P)
        errors: list[BaseException] = []

        def repeat(call: object) -> None:
            try:
                for _ in range(10):
                    call()  # type: ignore[operator]
            except BaseException as exc:
                errors.append(exc)

        threads = [
            threading.Thread(
                target=repeat, args=(lambda: provider.workflows.cancel(wf.workflow_exec_id, reason="race"),)
            ),
            threading.Thread(target=repeat, args=(lambda: provider.workflows.resume(wf.workflow_exec_id),)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[0]
        final = provider.workflows.get_state(wf.workflow_exec_id)
        statuses = {s.status for s in final.tasks.values()}
        if final.status is C:
            assert statuses <= {C, F}
        else:
            assert final.status is R and statuses == {P}
        assert_chained(provider, wf.workflow_exec_id)

    def test_fork_of_a_three_level_tree_restarts_from_the_named_task_on(self, provider: Provider) -> None:
        wf, made = tree(provider)
        source_before = provider.workflows.get_state(wf.workflow_exec_id)
        history_before = provider.workflows.history(wf.workflow_exec_id, include_tasks=True, limit=1000)
        new_id = unique("fork")
        fork = provider.workflows.fork(
            wf.workflow_exec_id, new_workflow_exec_id=new_id, restart_from=[made["a2"].task_exec_id]
        )
        assert fork.workflow_exec_id == new_id and fork.forked_from == wf.workflow_exec_id
        assert fork.workflow_id == wf.workflow_id and fork.status is P and fork.version == 1
        copies = fork.tasks
        assert {name: copies[name].task_exec_id for name in made} == {
            name: f"{new_id}/{name}" for name in made
        }
        # a2, and b, b1, c (created after it) run again; root and a are their ancestors; a1 was done before.
        assert {name for name, s in copies.items() if s.status is P} == {"root", "a", "a2", "b", "b1", "c"}
        kept = copies["a1"]
        assert (kept.status, kept.output, kept.usage) == (S, {"from": "a1"}, TEN)
        assert kept.created_at == made["a1"].created_at
        for name, state in copies.items():
            source = made[name]
            parent = (
                None
                if source.parent_state_id is None
                else f"{new_id}/{source.parent_state_id.split('/')[-1]}"
            )
            assert state.parent_state_id == parent
            if state.status is P:
                assert (state.output, state.usage, state.error, state.attempt) == (None, None, None, 0)
        assert provider.workflows.get_state(wf.workflow_exec_id) == source_before
        assert (
            provider.workflows.history(wf.workflow_exec_id, include_tasks=True, limit=1000) == history_before
        )
        tree_of_fork = provider.tasks.get_task_tree(f"{new_id}/root")
        assert [(n.state.task_id, n.depth) for n in tree_of_fork] == [
            ("root", 0),
            ("a", 1),
            ("a1", 2),
            ("a2", 2),
            ("b", 1),
            ("b1", 2),
        ]
        # A retry returns the same fork; a fork of the fork keeps ids short.
        assert (
            provider.workflows.fork(
                wf.workflow_exec_id, new_workflow_exec_id=new_id, restart_from=[made["a2"].task_exec_id]
            )
            == fork
        )
        second = provider.workflows.fork(new_id, new_workflow_exec_id=unique("fork2"))
        assert all(s.task_exec_id == f"{second.workflow_exec_id}/{n}" for n, s in second.tasks.items())
        assert {n for n, s in second.tasks.items() if s.status is S} == {"a1"}
        assert_chained(provider, new_id)

    def test_fork_refuses_unknown_tasks_taken_ids_and_missing_sources(self, provider: Provider) -> None:
        wf, made = tree(provider)
        other = workflow(provider)
        with pytest.raises(ValidationError, match="not of workflow"):
            provider.workflows.fork(
                wf.workflow_exec_id, new_workflow_exec_id=unique("f"), restart_from=["nope"]
            )
        with pytest.raises(DuplicateError, match=other.workflow_exec_id):
            provider.workflows.fork(wf.workflow_exec_id, new_workflow_exec_id=other.workflow_exec_id)
        with pytest.raises(NotFoundError, match="ghost"):
            provider.workflows.fork("ghost", new_workflow_exec_id=unique("f"))
        with pytest.raises(ValidationError, match="restart_from"):
            provider.workflows.fork(
                wf.workflow_exec_id, new_workflow_exec_id=unique("f"), restart_from=made["a"].task_exec_id
            )
        assert provider.workflows.count_states() == 2
