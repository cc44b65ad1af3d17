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

from planflow import Provider, Repositories, TaskState, UsageEntry, UsageSummary, WorkflowState, open_provider
from tests.driven import database
from tests.faults.cluster import Cluster
from tests.faults.proxy import CommitProxy

CALLS = 150
THREADS = 4


def report(message: str) -> None:
    print(f"\n[faults] {message}")


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

    run_threads(CALLS, lambda: provider.run_in_transaction(increment))
    proxy.faults.lose_replies = proxy.faults.lose_commits = 0.0
    stored = provider.tasks.get_state(task.task_exec_id)
    outcomes = database(provider).inner.commit_outcomes  # type: ignore[attr-defined]
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
