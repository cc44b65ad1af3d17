"""Backends killed while COMMIT is in flight: every unit of work is applied exactly once, never twice.

A killer thread watches ``pg_stat_activity`` of a private server whose commits wait 20 ms inside their critical
section (``commit_delay``) and terminates backends running COMMIT (and, now and then, ones idle inside a
transaction). A backend terminated there mostly finishes the COMMIT, replies and dies before the next statement
(a retry on a fresh connection), and sometimes dies before the commit record is written (a COMMIT lost with its
connection, learned to have aborted, and run again). A COMMIT that committed but whose reply is lost, rare with
kills, is made certain by ``test_lost_replies.py``, which drops connections in a proxy.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from planflow import (
    CommitUnknownError,
    Provider,
    Repositories,
    TaskState,
    UsageEntry,
    UsageSummary,
    WorkflowState,
    open_provider,
)
from tests.driven import resolved_commits
from tests.faults.cluster import Cluster
from tests.support import reporter

KILLS = 1000
WORKERS = 6


report = reporter("faults")


#: Longest a killer hunts for its kills: a test whose writes never reach a COMMIT fails instead of hanging.
HUNT_SECONDS = 300.0


class Killer(threading.Thread):
    """Terminates the provider's backends at COMMIT time until it has killed ``target`` of them.

    A COMMIT in flight is an explicit ``COMMIT`` statement, or the implicit commit that ends a write planflow
    sends alone in autocommit mode (a statement that inserts its commit token in a first CTE): with the server's
    ``commit_delay``, such a statement spends almost all its time committing.
    """

    def __init__(self, cluster: Cluster, app_name: str, target: int) -> None:
        super().__init__(daemon=True)
        self.cluster = cluster
        self.app_name = app_name
        self.target = target
        self.kills = 0
        self.at_commit = 0
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with psycopg.connect(self.cluster.url(), autocommit=True) as admin:
                rounds = 0
                deadline = time.monotonic() + HUNT_SECONDS
                while self.kills < self.target and not self.done.is_set() and time.monotonic() < deadline:
                    rounds += 1
                    # Mostly COMMITs in flight; every 7th round a transaction between its statements.
                    states = ("active",) if rounds % 7 else ("active", "idle in transaction")
                    rows = admin.execute(
                        "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s AND state = ANY(%s) "
                        "AND (query = 'COMMIT' OR query LIKE 'WITH planflow_token %%' "
                        "OR state = 'idle in transaction')",
                        [self.app_name, list(states)],
                    ).fetchall()
                    for pid, query in rows:
                        if admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone() == (True,):
                            self.kills += 1
                            self.at_commit += query == "COMMIT" or query.startswith("WITH planflow_token")
                    time.sleep(0.001)
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


@pytest.fixture
def killed_provider(slow_commit_cluster: Cluster) -> Iterator[tuple[Provider, str]]:
    name = f"pf_{uuid.uuid4().hex[:10]}"
    slow_commit_cluster.sql(f"CREATE DATABASE {name}")
    app_name = f"planflow-kill-{uuid.uuid4().hex[:8]}"
    url = slow_commit_cluster.url(name, application_name=app_name, pool_max_size="8")
    with open_provider({"url": url, "retry_max_attempts": 50, "retry_max_delay": 0.05}) as provider:
        yield provider, app_name


def hammer(provider: Provider, operation: Callable[[], None], killer: Killer) -> tuple[int, int]:
    """Run ``operation`` from WORKERS threads until the killer is done; (acknowledged, commit unknown)."""
    acknowledged = [0] * WORKERS
    unknown = [0] * WORKERS
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        while not killer.done.is_set():
            try:
                operation()
            except CommitUnknownError:
                unknown[index] += 1
            except BaseException as exc:
                errors.append(exc)
                killer.done.set()
                return
            else:
                acknowledged[index] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    killer.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
    killer.join(60)
    assert not errors, f"an operation failed: {errors[0]!r}"
    assert killer.error is None, killer.error
    assert killer.kills >= killer.target, f"only {killer.kills} kills in {HUNT_SECONDS} s: no COMMIT to kill"
    return sum(acknowledged), sum(unknown)


def counter(provider: Provider) -> TaskState:
    wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:8]}", "counting"))
    return provider.tasks.upsert_state(
        TaskState(
            f"counter-{uuid.uuid4().hex[:8]}", "count", wf.workflow_exec_id, wf.workflow_id, input={"n": 0}
        )
    )


def test_run_in_transaction_under_commit_time_kills_applies_each_unit_exactly_once(
    killed_provider: tuple[Provider, str], slow_commit_cluster: Cluster
) -> None:
    provider, app_name = killed_provider
    task = counter(provider)

    def increment(tx: Repositories) -> None:
        state = tx.tasks.get_state_for_update(task.task_exec_id)
        assert state.input is not None
        count = state.input["n"]
        assert isinstance(count, int)
        tx.tasks.update_state(state.evolve(input={"n": count + 1}), state.version)

    killer = Killer(slow_commit_cluster, app_name, KILLS)
    with resolved_commits() as outcomes:
        acknowledged, unknown = hammer(provider, lambda: provider.run_in_transaction(increment), killer)
    stored = provider.tasks.get_state(task.task_exec_id)
    report(
        f"run_in_transaction: {killer.kills} kills ({killer.at_commit} during COMMIT), {acknowledged} acknowledged "
        f"increments, {unknown} CommitUnknownError; lost COMMITs resolved: {outcomes}"
    )
    assert killer.kills >= KILLS
    assert outcomes["aborted"] + outcomes["committed"] > 0, (
        "no COMMIT lost its connection: the test proved nothing"
    )
    n = stored.input["n"] if stored.input else None
    assert isinstance(n, int)
    # Every acknowledged unit applied once; a unit reported unknown may or may not have been applied.
    assert acknowledged <= n <= acknowledged + unknown, (
        f"counter {n}, acknowledged {acknowledged}, unknown {unknown}"
    )
    assert stored.version == 1 + n


def test_merge_usage_under_commit_time_kills_counts_every_token_once(
    killed_provider: tuple[Provider, str], slow_commit_cluster: Cluster
) -> None:
    provider, app_name = killed_provider
    task = counter(provider)
    one = UsageSummary((UsageEntry("openai", "gpt-4o", "task", 1, 0, 1),))
    killer = Killer(slow_commit_cluster, app_name, KILLS // 2)
    acknowledged, unknown = hammer(
        provider, lambda: provider.tasks.merge_usage(task.task_exec_id, one), killer
    )
    stored = provider.tasks.get_state(task.task_exec_id)
    assert stored.usage is not None
    total = stored.usage.total_tokens
    report(
        f"merge_usage: {killer.kills} kills, {acknowledged} acknowledged merges, {unknown} unknown, {total} tokens"
    )
    assert acknowledged <= total <= acknowledged + unknown


def test_single_statement_writes_under_commit_time_kills_are_never_applied_twice(
    killed_provider: tuple[Provider, str], slow_commit_cluster: Cluster
) -> None:
    provider, app_name = killed_provider
    tasks = [counter(provider) for _ in range(WORKERS)]
    by_thread: dict[int, TaskState] = {}
    lock = threading.Lock()
    acknowledged_by_task = {t.task_exec_id: 0 for t in tasks}

    def update() -> None:
        # Each thread owns one task and writes it with the version it last stored: a blind retry of a COMMIT
        # that did commit would meet its own write as a ConflictError.
        ident = threading.get_ident()
        with lock:
            if ident not in by_thread:
                by_thread[ident] = tasks[len(by_thread)]
        state = by_thread[ident]
        stored = provider.tasks.update_state(state.evolve(output={"v": state.version}), state.version)
        by_thread[ident] = stored
        acknowledged_by_task[stored.task_exec_id] += 1

    killer = Killer(slow_commit_cluster, app_name, KILLS // 2)
    acknowledged, unknown = hammer(provider, update, killer)
    report(f"update_state: {killer.kills} kills, {acknowledged} acknowledged, {unknown} unknown")
    assert unknown == 0, (
        "an unknown outcome leaves the thread's version stale; none expected with the server up"
    )
    for task in tasks:
        assert (
            provider.tasks.get_state(task.task_exec_id).version == 1 + acknowledged_by_task[task.task_exec_id]
        )
