"""Work queues (priorities, delays, attempts, fail/retry, cancel, limits, dedup, statistics): the same on every
SQL driver and both APIs."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from planflow import (
    ConflictError,
    ExecutionType,
    NotFoundError,
    Provider,
    RetryBackoff,
    TaskFilter,
    TaskState,
    TaskStatus,
    ValidationError,
)
from tests.contract.helpers import task, workflow


def ids(states: list[TaskState]) -> list[str]:
    return [s.task_exec_id for s in states]


class TestQueues:
    """Claims in priority order, retries with backoff, poison work, cancel, limits and deduplication."""

    suite = "claims"

    def test_claim_takes_higher_priority_first_then_the_longest_due(self, provider: Provider) -> None:
        wf = workflow(provider)
        low = task(provider, wf, task_exec_id="low")
        high = task(provider, wf, task_exec_id="high", priority=5)
        old_retry = task(provider, wf, task_exec_id="retry", run_after=datetime.now(UTC) - timedelta(hours=1))
        negative = task(provider, wf, task_exec_id="neg", priority=-3)
        claimed = provider.tasks.claim(worker="w", limit=10, lease=30)
        assert ids(claimed) == [
            high.task_exec_id,
            old_retry.task_exec_id,
            low.task_exec_id,
            negative.task_exec_id,
        ]
        assert [s.attempt for s in claimed] == [1, 1, 1, 1]

    def test_a_task_is_not_claimed_before_its_run_after(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_exec_id="later", priority=9, run_after=datetime.now(UTC) + timedelta(hours=1))
        soon = task(provider, wf, task_exec_id="soon", run_after=datetime.now(UTC) + timedelta(seconds=0.3))
        assert provider.tasks.claim(worker="w", limit=10, lease=30) == []
        assert provider.tasks.wait_for_work(timeout=5) is True  # wakes when "soon" is due
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == [soon.task_exec_id]
        assert provider.tasks.get_state("later").status is TaskStatus.PENDING

    def test_composite_parents_are_claimed_only_when_the_filter_names_their_type(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        parent = task(provider, wf, task_exec_id="par", execution_type=ExecutionType.PARALLEL, priority=9)
        leaf = task(provider, wf, task_exec_id="leaf", parent=parent)
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == [leaf.task_exec_id]
        kinds = TaskFilter(execution_types=frozenset({ExecutionType.PARALLEL, ExecutionType.COLLECTION}))
        assert ids(provider.tasks.claim(kinds, worker="w", limit=10, lease=30)) == [parent.task_exec_id]

    def test_filters_over_sets_select_several_kinds_workflows_and_names(self, provider: Provider) -> None:
        one, two, three = (
            workflow(provider, workflow_id="a"),
            workflow(provider, workflow_id="b"),
            workflow(provider, workflow_id="c"),
        )
        task(provider, one, task_exec_id="a1", task_id="mail")
        task(provider, two, task_exec_id="b1", task_id="sms")
        task(provider, three, task_exec_id="c1", task_id="mail")
        by_name = TaskFilter(workflow_ids=("a", "b"))
        assert provider.tasks.count_states(by_name) == 2
        by_kind = TaskFilter(task_ids=["mail"], workflow_exec_ids={three.workflow_exec_id})
        assert ids(provider.tasks.claim(by_kind, worker="w", limit=10, lease=30)) == ["c1"]
        assert provider.tasks.count_states(TaskFilter(task_ids=())) == 0
        with pytest.raises(ValidationError):
            provider.tasks.count_states(TaskFilter(task_ids="mail"))

    def test_fail_retries_with_backoff_while_attempts_remain_then_ends_failed(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        task(provider, wf, task_exec_id="t", max_attempts=2)
        (first,) = provider.tasks.claim(worker="w", lease=30)
        before = datetime.now(UTC)
        retried = provider.tasks.fail("t", worker="w", error={"why": "boom"}, retry_in=60)
        assert retried.status is TaskStatus.PENDING and retried.attempt == 1
        assert retried.last_error == {"why": "boom"} and retried.lease_expires_at is None
        assert retried.run_after is not None and before + timedelta(seconds=55) < retried.run_after
        assert provider.tasks.claim(worker="w", lease=30) == []  # not due yet
        # Made due again by its owner (run_after is the caller's field), claimed, failed for good.
        provider.tasks.update_state(retried.evolve(run_after=None), retried.version)
        (second,) = provider.tasks.claim(worker="w2", lease=30)
        assert second.attempt == 2
        dead = provider.tasks.fail(
            "t", worker="w2", error={"why": "again"}, backoff=RetryBackoff(base_delay=0)
        )
        assert dead.status is TaskStatus.FAILED and dead.last_error == {"why": "again"}
        assert provider.tasks.queue_stats().dead == 1
        assert first.version < second.version < dead.version

    def test_fail_default_backoff_is_exponential_capped_with_jitter(self, provider: Provider) -> None:
        policy = RetryBackoff(base_delay=1, factor=2, max_delay=10, jitter=0.5)
        assert [policy.delay(n, 0.0) for n in (1, 2, 3, 4, 5)] == [1, 2, 4, 8, 10]
        assert policy.delay(3, 0.999) > 2 and policy.delay(3, 0.5) == 3
        wf = workflow(provider)
        task(provider, wf, task_exec_id="t")
        provider.tasks.claim(worker="w", lease=30)
        before = datetime.now(UTC)
        retried = provider.tasks.fail("t", worker="w", error={"e": 1}, backoff=RetryBackoff(base_delay=100))
        assert retried.run_after is not None
        assert before + timedelta(seconds=45) < retried.run_after < before + timedelta(seconds=110)

    def test_fail_is_fenced_like_every_holder_write(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_exec_id="t")
        provider.tasks.claim(worker="w", lease=30)
        with pytest.raises(ConflictError):
            provider.tasks.fail("t", worker="intruder", error={"e": 1})
        with pytest.raises(NotFoundError):
            provider.tasks.fail("missing", worker="w", error={"e": 1})
        with pytest.raises(ValidationError):
            provider.tasks.fail("t", worker="w", error={"e": float("nan")})
        with pytest.raises(ValidationError):
            provider.tasks.fail("t", worker="w", error={"e": 1}, retry_in=-1)
        assert provider.tasks.get_state("t").claimed_by == "w"  # refused calls changed nothing

    def test_a_task_whose_lease_keeps_lapsing_ends_failed_after_max_attempts(
        self, provider: Provider
    ) -> None:
        wf = workflow(provider)
        task(provider, wf, task_exec_id="poison", max_attempts=2)
        for attempt in (1, 2):
            (claimed,) = provider.tasks.claim(worker=f"w{attempt}", lease=0.05)
            assert claimed.attempt == attempt
            time.sleep(0.15)
        assert provider.tasks.claim(worker="w3", lease=30) == []
        dead = provider.tasks.get_state("poison")
        assert dead.status is TaskStatus.FAILED and dead.attempt == 2
        assert dead.last_error is not None and dead.last_error["error"] == "attempts exhausted"
        assert dead.last_error["lapsed_worker"] == "w2"

    def test_upsert_and_update_cannot_set_attempt(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_exec_id="t")
        (claimed,) = provider.tasks.claim(worker="w", lease=30)
        written = provider.tasks.update_state(claimed.evolve(attempt=99), claimed.version)
        assert written.attempt == 1 and provider.tasks.get_state("t").attempt == 1
        assert provider.tasks.upsert_state(written.evolve(attempt=0)).attempt == 1

    def test_cancel_moves_live_tasks_to_canceled_and_fences_the_holder(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_exec_id="run")
        (held,) = provider.tasks.claim(worker="w", lease=30)
        task(provider, wf, task_exec_id="wait")
        task(provider, wf, task_exec_id="done", status=TaskStatus.SUCCESS)
        canceled = provider.tasks.cancel(["wait", "run", "done", "missing"], reason="user asked")
        assert ids(canceled) == ["wait", "run"]
        assert all(s.status is TaskStatus.CANCELED and s.lease_expires_at is None for s in canceled)
        assert canceled[0].last_error == {"code": "CANCELED", "message": "user asked"}
        assert all(s.claimed_by is None for s in canceled)
        assert provider.tasks.get_state("done").status is TaskStatus.SUCCESS
        assert provider.tasks.heartbeat(["run"], worker="w", lease=30).lost == ["run"]
        with pytest.raises(ConflictError):
            provider.tasks.fail("run", worker="w", error={"e": 1})
        with pytest.raises(ConflictError):
            provider.tasks.update_state(held.evolve(status=TaskStatus.SUCCESS), held.version)
        assert provider.tasks.cancel([], reason="x") == []

    def test_a_new_task_with_a_held_dedup_key_returns_the_holder(self, provider: Provider) -> None:
        wf = workflow(provider)
        first = task(provider, wf, task_exec_id="first", dedup_key="order-7")
        again = task(provider, wf, task_exec_id="second", dedup_key="order-7")
        assert again.task_exec_id == "first" and again.version == first.version
        with pytest.raises(NotFoundError):
            provider.tasks.get_state("second")
        other = task(provider, wf, task_exec_id="other", dedup_key="order-8")
        with pytest.raises(ConflictError):  # a stored task cannot take a held key
            provider.tasks.update_state(other.evolve(dedup_key="order-7"), other.version)
        provider.tasks.cancel(["first"], reason="done with it")
        third = task(provider, wf, task_exec_id="third", dedup_key="order-7")  # the key is free again
        assert third.task_exec_id == "third"

    def test_a_concurrency_limit_bounds_running_tasks_of_a_key(self, provider: Provider) -> None:
        wf = workflow(provider)
        provider.tasks.set_limit("gpu", concurrency=2)
        for i in range(4):
            task(provider, wf, task_exec_id=f"g{i}", concurrency_key="gpu", priority=1)
        task(provider, wf, task_exec_id="free")
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == ["g0", "g1", "free"]
        assert provider.tasks.claim(worker="w", limit=10, lease=30) == []
        done = provider.tasks.get_state("g0")
        provider.tasks.update_state(done.evolve(status=TaskStatus.SUCCESS), done.version)
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == ["g2"]
        stats = provider.tasks.queue_stats()
        (gpu,) = stats.keys
        assert (gpu.key, gpu.running, gpu.concurrency) == ("gpu", 2, 2)
        provider.tasks.set_limit("gpu")  # removed: unlimited again
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == ["g3"]

    def test_a_rate_limit_bounds_claims_within_its_window(self, provider: Provider) -> None:
        wf = workflow(provider)
        provider.tasks.set_limit("api", rate=(2, 0.5))
        for i in range(3):
            task(provider, wf, task_exec_id=f"r{i}", concurrency_key="api")
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == ["r0", "r1"]
        assert provider.tasks.claim(worker="w", limit=10, lease=30) == []
        time.sleep(0.6)
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == ["r2"]

    def test_set_limit_refuses_bad_limits(self, provider: Provider) -> None:
        with pytest.raises(ValidationError):
            provider.tasks.set_limit("k", concurrency=-1)
        with pytest.raises(ValidationError):
            provider.tasks.set_limit("k", rate=(1, 0))
        with pytest.raises(ValidationError):
            provider.tasks.set_limit("", concurrency=1)
        assert provider.tasks.queue_stats().keys == []

    def test_queue_stats_counts_due_delayed_dead_and_the_oldest_due(self, provider: Provider) -> None:
        wf = workflow(provider)
        task(provider, wf, task_exec_id="due", run_after=datetime.now(UTC) - timedelta(seconds=30))
        task(provider, wf, task_exec_id="now")
        task(provider, wf, task_exec_id="later", run_after=datetime.now(UTC) + timedelta(hours=1))
        task(provider, wf, task_exec_id="ok", status=TaskStatus.SUCCESS)
        stats = provider.tasks.queue_stats()
        assert stats.counts == {TaskStatus.PENDING: 3, TaskStatus.SUCCESS: 1}
        assert (stats.due, stats.delayed, stats.dead) == (2, 1, 0)
        assert stats.oldest_due_age is not None and 25 < stats.oldest_due_age < 120
        other = TaskFilter(workflow_exec_id="nothing-here")
        assert provider.tasks.queue_stats(other).counts == {}

    def test_queue_stats_with_a_filter_lists_the_keys_of_its_live_tasks_with_store_wide_figures(
        self, provider: Provider
    ) -> None:
        mine, theirs = workflow(provider), workflow(provider)
        provider.tasks.set_limit("gpu", concurrency=3)
        provider.tasks.set_limit("idle", concurrency=1)
        task(provider, theirs, task_exec_id="their-gpu", concurrency_key="gpu")
        task(provider, theirs, task_exec_id="their-api", concurrency_key="api")
        assert ids(provider.tasks.claim(worker="w", limit=10, lease=30)) == ["their-gpu", "their-api"]
        task(provider, mine, task_exec_id="my-gpu", concurrency_key="gpu")
        task(provider, mine, task_exec_id="my-done", concurrency_key="old", status=TaskStatus.SUCCESS)
        everything = provider.tasks.queue_stats()
        assert [(k.key, k.running, k.concurrency) for k in everything.keys] == [
            ("api", 1, None),
            ("gpu", 1, 3),
            ("idle", 0, 1),
        ]
        # Only gpu is carried by a live task of mine; its RUNNING count is the store's (theirs), as its limit is.
        narrowed = provider.tasks.queue_stats(TaskFilter(workflow_exec_id=mine.workflow_exec_id))
        assert [(k.key, k.running, k.concurrency) for k in narrowed.keys] == [("gpu", 1, 3)]
        assert provider.tasks.queue_stats(TaskFilter(workflow_exec_id="nothing-here")).keys == []
