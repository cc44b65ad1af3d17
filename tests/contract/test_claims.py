"""Claims with leases (claim, heartbeat, release, wait_for_work): the same on every SQL driver and both APIs."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from planflow import (
    ConflictError,
    Heartbeat,
    NotFoundError,
    Provider,
    TaskFilter,
    TaskState,
    TaskStatus,
    ValidationError,
    WorkflowFilter,
)
from tests.contract.helpers import task, workflow


def pending(provider: Provider, count: int, **fields: object) -> list[TaskState]:
    wf = workflow(provider)
    return [task(provider, wf, task_exec_id=f"{wf.workflow_exec_id}/{i:03d}", **fields) for i in range(count)]


class TestClaims:
    """Work handed out by claims with leases."""

    suite = "claims"

    def test_claim_hands_out_the_oldest_pending_tasks_as_running_with_a_lease(
        self, provider: Provider
    ) -> None:
        made = pending(provider, 5)
        before = datetime.now(UTC)
        claimed = provider.tasks.claim(
            TaskFilter(workflow_exec_id=made[0].workflow_exec_id), worker="w1", limit=3, lease=30
        )
        assert [s.task_exec_id for s in claimed] == [s.task_exec_id for s in made[:3]]
        for state in claimed:
            assert state.status is TaskStatus.RUNNING and state.claimed_by == "w1"
            assert state.version == 2
            assert state.lease_expires_at is not None
            assert before + timedelta(seconds=29) < state.lease_expires_at < before + timedelta(seconds=32)
            assert provider.tasks.get_state(state.task_exec_id) == state

    def test_claim_takes_only_what_the_filter_matches_and_nothing_when_none_is_claimable(
        self, provider: Provider
    ) -> None:
        made = pending(provider, 2, agent_id="alpha")
        other = pending(provider, 2, agent_id="beta")
        mine = TaskFilter(workflow_exec_id=made[0].workflow_exec_id, agent_id="alpha")
        assert {s.task_exec_id for s in provider.tasks.claim(mine, worker="w", limit=10, lease=30)} == {
            s.task_exec_id for s in made
        }
        assert provider.tasks.claim(mine, worker="w", limit=10, lease=30) == []
        assert provider.tasks.get_state(other[0].task_exec_id).status is TaskStatus.PENDING

    def test_a_lapsed_lease_is_claimable_again_and_the_old_holder_is_fenced(self, provider: Provider) -> None:
        made = pending(provider, 1)
        only = TaskFilter(workflow_exec_id=made[0].workflow_exec_id)
        (first,) = provider.tasks.claim(only, worker="zombie", lease=0.2)
        assert provider.tasks.claim(only, worker="other", lease=30) == []  # still held
        time.sleep(0.3)
        (second,) = provider.tasks.claim(only, worker="rescuer", lease=30)
        assert second.task_exec_id == first.task_exec_id and second.claimed_by == "rescuer"
        assert second.version == first.version + 1
        # The zombie wakes up and writes with the version it holds: refused.
        with pytest.raises(ConflictError) as caught:
            provider.tasks.update_state(first.evolve(status=TaskStatus.SUCCESS), first.version)
        assert caught.value.actual == second.version
        done = provider.tasks.update_state(second.evolve(status=TaskStatus.SUCCESS), second.version)
        assert done.status is TaskStatus.SUCCESS and done.claimed_by == "rescuer"

    def test_heartbeat_extends_the_leases_still_held_and_names_the_lost_ones(
        self, provider: Provider
    ) -> None:
        made = pending(provider, 3)
        only = TaskFilter(workflow_exec_id=made[0].workflow_exec_id)
        held = provider.tasks.claim(only, worker="w1", limit=2, lease=0.3)
        beat = provider.tasks.heartbeat(
            [held[0].task_exec_id, made[2].task_exec_id, "missing"], worker="w1", lease=60
        )
        assert beat.lost == [made[2].task_exec_id, "missing"] and beat.held == [held[0].task_exec_id]
        assert beat.lease_expires_at is not None
        assert provider.tasks.get_state(held[0].task_exec_id).lease_expires_at == beat.lease_expires_at
        time.sleep(0.4)
        # Only the lease that was not extended lapsed.
        (taken,) = provider.tasks.claim(only, worker="w2", lease=60)
        assert taken.task_exec_id == held[1].task_exec_id
        assert provider.tasks.heartbeat([h.task_exec_id for h in held], worker="w1", lease=60).lost == [
            held[1].task_exec_id
        ]
        # A heartbeat leaves the version alone: the holder's state stays current.
        assert provider.tasks.get_state(held[0].task_exec_id).version == held[0].version
        assert provider.tasks.heartbeat([], worker="w1", lease=60) == Heartbeat([], [], None)

    def test_a_progress_write_after_a_heartbeat_keeps_the_extended_lease(self, provider: Provider) -> None:
        made = pending(provider, 1)
        only = TaskFilter(workflow_exec_id=made[0].workflow_exec_id)
        (held,) = provider.tasks.claim(only, worker="w1", lease=0.5)
        beat = provider.tasks.heartbeat([held.task_exec_id], worker="w1", lease=60)
        assert beat.lease_expires_at is not None and held.lease_expires_at is not None
        assert beat.lease_expires_at > held.lease_expires_at
        # The worker writes progress with the copy the claim gave it (the claim's lease in it).
        progress = provider.tasks.update_state(held.evolve(output={"done": 1}), held.version)
        assert progress.lease_expires_at == beat.lease_expires_at and progress.claimed_by == "w1"
        assert provider.tasks.get_state(held.task_exec_id) == progress
        time.sleep(0.6)  # past the claim's lease: the heartbeat's still holds
        assert provider.tasks.claim(only, worker="w2", lease=30) == []
        assert provider.tasks.list_lapsed(only) == []
        done = provider.tasks.update_state(progress.evolve(status=TaskStatus.SUCCESS), progress.version)
        assert done.status is TaskStatus.SUCCESS

    def test_an_upsert_of_a_copy_keeps_the_holder_and_the_lease_as_stored(self, provider: Provider) -> None:
        made = pending(provider, 1)
        (held,) = provider.tasks.claim(
            TaskFilter(workflow_exec_id=made[0].workflow_exec_id), worker="w1", lease=60
        )
        # A copy without claim fields (as a caller building a state from scratch would write).
        copy = made[0].evolve(status=TaskStatus.RUNNING, output={"step": 2})
        stored = provider.tasks.upsert_state(copy)
        assert (stored.claimed_by, stored.lease_expires_at) == (held.claimed_by, held.lease_expires_at)
        assert provider.tasks.get_state(held.task_exec_id) == stored
        # A copy carrying another holder and lease changes neither.
        forged = stored.evolve(claimed_by="intruder", lease_expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        again = provider.tasks.update_state(forged, stored.version)
        assert (again.claimed_by, again.lease_expires_at) == ("w1", held.lease_expires_at)
        assert provider.tasks.heartbeat([held.task_exec_id], worker="intruder", lease=60).lost == [
            held.task_exec_id
        ]

    def test_release_gives_a_held_task_back_as_pending_and_only_its_holder_may(
        self, provider: Provider
    ) -> None:
        made = pending(provider, 1)
        (held,) = provider.tasks.claim(
            TaskFilter(workflow_exec_id=made[0].workflow_exec_id), worker="w1", lease=30
        )
        with pytest.raises(ConflictError, match="w2"):
            provider.tasks.release(held.task_exec_id, worker="w2")
        back = provider.tasks.release(held.task_exec_id, worker="w1")
        assert back.status is TaskStatus.PENDING and back.claimed_by is None and back.lease_expires_at is None
        assert back.version == held.version + 1
        with pytest.raises(ConflictError):
            provider.tasks.release(held.task_exec_id, worker="w1")
        with pytest.raises(NotFoundError):
            provider.tasks.release("no-such-task", worker="w1")

    def test_concurrent_claimers_never_get_the_same_task(self, provider: Provider) -> None:
        made = pending(provider, 120)
        only = TaskFilter(workflow_exec_id=made[0].workflow_exec_id)
        got: list[str] = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def worker(name: str, batch: int) -> None:
            try:
                while claimed := provider.tasks.claim(only, worker=name, limit=batch, lease=60):
                    with lock:
                        got.extend(s.task_exec_id for s in claimed)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(f"w{i}", 1 + i % 5)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not errors, errors[0]
        assert sorted(got) == sorted(s.task_exec_id for s in made), "a task was claimed twice, or never"

    def test_wait_for_work_returns_true_when_work_is_claimable(self, provider: Provider) -> None:
        made = pending(provider, 1)
        assert (
            provider.tasks.wait_for_work(TaskFilter(workflow_exec_id=made[0].workflow_exec_id), timeout=60)
            is True
        )

    def test_wait_for_work_waits_out_its_timeout_when_nothing_comes(self, provider: Provider) -> None:
        wf = workflow(provider)
        started = time.monotonic()
        assert (
            provider.tasks.wait_for_work(TaskFilter(workflow_exec_id=wf.workflow_exec_id), timeout=0.4)
            is False
        )
        assert time.monotonic() - started >= 0.4
        assert (
            provider.tasks.wait_for_work(TaskFilter(workflow_exec_id=wf.workflow_exec_id), timeout=0) is False
        )

    def test_wait_for_work_wakes_when_another_thread_adds_work(self, provider: Provider) -> None:
        wf = workflow(provider)
        only = TaskFilter(workflow_exec_id=wf.workflow_exec_id)

        def add_later() -> None:
            time.sleep(0.3)
            task(provider, wf)

        adder = threading.Thread(target=add_later)
        started = time.monotonic()
        adder.start()
        # True: woken by the work (a timeout would return False), not before it was added.
        assert provider.tasks.wait_for_work(only, timeout=60) is True
        woke = time.monotonic() - started
        adder.join()
        assert woke >= 0.3, woke
        assert len(provider.tasks.claim(only, worker="w", lease=30)) == 1

    def test_wait_for_work_wakes_when_a_lease_lapses(self, provider: Provider) -> None:
        made = pending(provider, 1)
        only = TaskFilter(workflow_exec_id=made[0].workflow_exec_id)
        provider.tasks.claim(only, worker="w1", lease=0.4)
        started = time.monotonic()
        assert provider.tasks.wait_for_work(only, timeout=60) is True
        assert time.monotonic() - started >= 0.3

    def test_list_lapsed_names_the_running_tasks_whose_lease_lapsed_and_who_held_them(
        self, provider: Provider
    ) -> None:
        made = pending(provider, 4)
        only = TaskFilter(workflow_exec_id=made[0].workflow_exec_id)
        first = provider.tasks.claim(only, worker="dead-1", lease=0.2)
        second = provider.tasks.claim(only, worker="dead-2", lease=0.3)
        provider.tasks.claim(only, worker="alive", lease=60)
        assert provider.tasks.list_lapsed(only) == []
        time.sleep(0.4)
        lapsed = provider.tasks.list_lapsed(only)
        assert [(s.task_exec_id, s.claimed_by) for s in lapsed] == [
            (first[0].task_exec_id, "dead-1"),
            (second[0].task_exec_id, "dead-2"),
        ]
        assert [s.task_exec_id for s in provider.tasks.list_lapsed(only, limit=1)] == [first[0].task_exec_id]
        assert provider.tasks.list_lapsed(TaskFilter(workflow_exec_id="elsewhere")) == []
        provider.tasks.claim(only, worker="rescuer", limit=2, lease=60)
        assert provider.tasks.list_lapsed(only) == []

    @pytest.mark.parametrize(
        ("arguments", "says"),
        [
            ({"worker": "w", "limit": 0, "lease": 30}, "limit"),
            ({"worker": "w", "lease": 0}, "lease"),
            ({"worker": "w", "lease": -1}, "lease"),
            ({"worker": "w", "lease": float("nan")}, "lease"),
            ({"worker": "w", "lease": float("inf")}, "lease"),
            ({"worker": "w", "lease": "30"}, "lease"),
            ({"worker": "w", "lease": 1e12}, "at most"),
            ({"worker": "w", "lease": 10**400}, "lease"),
            ({"worker": "w", "lease": timedelta.max}, "at most"),
            ({"worker": "", "lease": 30}, "worker"),
            ({"worker": 7, "lease": 30}, "worker"),
            ({"filter": WorkflowFilter(), "worker": "w", "lease": 30}, "TaskFilter"),
        ],
    )
    def test_bad_claims_are_refused_before_anything_is_claimed(
        self, provider: Provider, arguments: dict[str, object], says: str
    ) -> None:
        made = pending(provider, 1)
        with pytest.raises(ValidationError, match=says):
            provider.tasks.claim(**arguments)  # pyright: ignore[reportArgumentType]
        assert provider.tasks.get_state(made[0].task_exec_id).status is TaskStatus.PENDING
        with pytest.raises(ValidationError, match="lease"):
            provider.tasks.heartbeat([made[0].task_exec_id], worker="w", lease=0)
        with pytest.raises(ValidationError, match="at most"):
            provider.tasks.heartbeat([made[0].task_exec_id], worker="w", lease=timedelta.max)
        with pytest.raises(ValidationError, match="timeout"):
            provider.tasks.wait_for_work(timeout=-1)
