"""Connections cut at COMMIT by a proxy: a unit that committed is never run again, one that did not is.

The proxy (``proxy.py``) forwards a COMMIT and cuts the connection before its reply reaches planflow (the unit
committed; planflow must not run it again), or cuts it instead of forwarding the COMMIT (the unit did not
commit; planflow must run it again). Both are resolved by asking the server about the transaction's id.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator

import pytest

from planflow import (
    Provider,
    Repositories,
    TaskFilter,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowState,
    open_provider,
)
from tests.driven import resolved_commits
from tests.faults.cluster import Cluster
from tests.faults.proxy import CommitProxy
from tests.support import reporter

CALLS = 150
THREADS = 4


report = reporter("faults")


@pytest.fixture
def proxied(cluster: Cluster) -> Iterator[tuple[Provider, CommitProxy]]:
    name = f"pf_{uuid.uuid4().hex[:10]}"
    cluster.sql(f"CREATE DATABASE {name}")
    proxy = CommitProxy(cluster.port)
    url = proxy.url(name, pool_max_size="6")
    # The outcome of a lost COMMIT is asked of the server through the proxy too: no fault is injected there
    # (the question is not a COMMIT).
    with open_provider({"url": url, "retry_max_attempts": 30}) as provider:
        yield provider, proxy
    proxy.stop()


def counter(provider: Provider) -> TaskState:
    wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:8]}", "counting"))
    return provider.tasks.upsert_state(
        TaskState(f"c-{uuid.uuid4().hex[:8]}", "count", wf.workflow_exec_id, wf.workflow_id, input={"n": 0})
    )


def run_threads(calls: int, operation: Callable[[], None]) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        for _ in range(calls):
            try:
                operation()
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=worker) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert not errors, f"a call failed: {errors[0]!r}"


def test_units_whose_commit_reply_or_commit_is_lost_are_applied_exactly_once(
    proxied: tuple[Provider, CommitProxy],
) -> None:
    provider, proxy = proxied
    task = counter(provider)
    proxy.faults.lose_replies = 0.2
    proxy.faults.lose_commits = 0.2

    def increment(tx: Repositories) -> None:
        state = tx.tasks.get_state_for_update(task.task_exec_id)
        assert state.input is not None
        count = state.input["n"]
        assert isinstance(count, int)
        tx.tasks.update_state(state.evolve(input={"n": count + 1}), state.version)

    with resolved_commits() as outcomes:
        run_threads(CALLS, lambda: provider.run_in_transaction(increment))
    proxy.faults.lose_replies = proxy.faults.lose_commits = 0.0
    stored = provider.tasks.get_state(task.task_exec_id)
    report(
        f"{THREADS * CALLS} run_in_transaction increments through the proxy: {proxy.faults.replies_lost} replies "
        f"of committed COMMITs lost, {proxy.faults.commits_lost} COMMITs lost before the server; resolved "
        f"{outcomes}"
    )
    assert stored.input == {"n": THREADS * CALLS}, "a unit was applied twice, or lost"
    assert stored.version == 1 + THREADS * CALLS
    assert outcomes["committed"] >= proxy.faults.replies_lost > 0
    assert outcomes["aborted"] > 0
    assert outcomes["unknown"] == 0


def test_merge_usage_and_single_writes_whose_commit_reply_is_lost_count_once(
    proxied: tuple[Provider, CommitProxy],
) -> None:
    provider, proxy = proxied
    task = counter(provider)
    one = UsageSummary((UsageEntry("openai", "gpt-4o", "task", 1, 0, 1),))
    proxy.faults.lose_replies = 0.25
    proxy.faults.lose_commits = 0.15
    run_threads(CALLS, lambda: provider.tasks.merge_usage(task.task_exec_id, one) and None)
    mine: dict[int, TaskState] = {}

    def rewrite() -> None:
        # Each thread rewrites its own task with the version it stored last: a blind re-run of a COMMIT that
        # did commit would meet its own write as a ConflictError.
        ident = threading.get_ident()
        state = mine.get(ident) or counter(provider)
        mine[ident] = provider.tasks.update_state(state.evolve(output={"v": state.version}), state.version)

    run_threads(CALLS, rewrite)
    proxy.faults.lose_replies = proxy.faults.lose_commits = 0.0
    stored = provider.tasks.get_state(task.task_exec_id)
    assert stored.usage is not None and stored.usage.total_tokens == THREADS * CALLS
    assert (
        sorted(provider.tasks.get_state(s.task_exec_id).version for s in mine.values())
        == [1 + CALLS] * THREADS
    )
    report(
        f"merge_usage and update_state: {proxy.faults.replies_lost} replies lost, {proxy.faults.commits_lost} "
        "COMMITs lost; every token counted once, every version bumped once"
    )
    assert proxy.faults.replies_lost > 0


def test_claims_and_heartbeats_whose_reply_is_lost_are_read_back_not_repeated(
    proxied: tuple[Provider, CommitProxy],
) -> None:
    # Claims and heartbeats run in autocommit mode with no commit token: what they did shows in the rows they
    # marked (worker, lease end), and that is what planflow reads back when the reply is lost.
    provider, proxy = proxied
    wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:8]}", "claims"))
    tasks = [
        TaskState(f"{wf.workflow_exec_id}/{i:04d}", "t", wf.workflow_exec_id, "claims") for i in range(400)
    ]
    provider.tasks.bulk_upsert(tasks)
    mine = TaskFilter(workflow_exec_id=wf.workflow_exec_id)
    proxy.faults.statement_markers = (b"SET status = 'RUNNING', claimed_by", b"SET lease_expires_at")
    proxy.faults.lose_statement_replies = 0.2
    claimed: list[str] = []
    lost_heartbeats: list[str] = []
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        name = f"worker-{index}"
        try:
            while batch := provider.tasks.claim(mine, worker=name, limit=4, lease=60):
                claimed.extend(state.task_exec_id for state in batch)
                lost_heartbeats.extend(
                    provider.tasks.heartbeat([s.task_exec_id for s in batch], worker=name, lease=60).lost
                )
                for state in batch:
                    provider.tasks.update_state(state.evolve(status=TaskStatus.SUCCESS), state.version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    proxy.faults.lose_statement_replies = 0.0
    report(
        f"{len(claimed)} tasks claimed by {THREADS} threads through the proxy, "
        f"{proxy.faults.statement_replies_lost} replies of claims and heartbeats lost and read back"
    )
    assert not errors, f"a call failed: {errors[0]!r}"
    assert proxy.faults.statement_replies_lost > 0
    # With a lease of a minute nothing lapsed: a claim whose reply was lost and not read back would leave its
    # tasks RUNNING, unclaimed by anyone; read back twice, a task would be handed out twice.
    assert sorted(claimed) == sorted(t.task_exec_id for t in tasks)
    assert lost_heartbeats == []
    states = provider.tasks.list_states(mine, limit=1000).items
    assert {s.status for s in states} == {TaskStatus.SUCCESS}
