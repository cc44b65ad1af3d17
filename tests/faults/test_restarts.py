"""Real server restarts under load, and servers that close idle connections.

``pg_ctl restart -m fast`` (clients disconnected, commits durable) and ``-m immediate`` (the server crashes and
recovers) of a private cluster while 8 threads write: every acknowledged write is there after, no write that
reported failure is, nothing is applied twice, and the first call once the server answers again returns
within about a second, whatever the pool's size.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from planflow import (
    CommitUnknownError,
    PlanflowError,
    Provider,
    Repositories,
    TaskFilter,
    TaskState,
    TransientError,
    WorkflowState,
    open_provider,
)
from tests.faults.cluster import Cluster
from tests.faults.proxy import CommitProxy
from tests.support import reporter

THREADS = 8
RESTARTS_PER_MODE = 10


report = reporter("faults")


@pytest.fixture
def database_name(cluster: Cluster) -> str:
    name = f"pf_{uuid.uuid4().hex[:10]}"
    cluster.sql(f"CREATE DATABASE {name}")
    return name


class Writers:
    """THREADS threads writing new tasks and incrementing a counter until stopped; what each call returned."""

    def __init__(self, provider: Provider, workflow_exec_id: str, counter_id: str) -> None:
        self.provider = provider
        self.workflow_exec_id = workflow_exec_id
        self.counter_id = counter_id
        self.stop = threading.Event()
        self.acknowledged: set[str] = set()
        self.failed: set[str] = set()
        self.unknown: set[str] = set()
        self.increments = 0
        self.unknown_increments = 0
        self.errors: list[BaseException] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(THREADS)]
        for thread in self.threads:
            thread.start()

    def _increment(self, tx: Repositories) -> None:
        state = tx.tasks.get_state_for_update(self.counter_id)
        assert state.input is not None
        count = state.input["n"]
        assert isinstance(count, int)
        tx.tasks.update_state(state.evolve(input={"n": count + 1}), state.version)

    def _run(self, index: int) -> None:
        number = 0
        while not self.stop.is_set():
            number += 1
            task_exec_id = f"w{index}-{number}"
            state = TaskState(task_exec_id, "write", self.workflow_exec_id, "restarts")
            outcome = self.failed
            try:
                self.provider.tasks.upsert_state(state)
                outcome = self.acknowledged
            except CommitUnknownError:
                outcome = self.unknown
            except TransientError:
                outcome = self.failed
            except PlanflowError as exc:
                self.errors.append(exc)
            with self.lock:
                outcome.add(task_exec_id)
            try:
                self.provider.run_in_transaction(self._increment)
                with self.lock:
                    self.increments += 1
            except CommitUnknownError:
                with self.lock:
                    self.unknown_increments += 1
            except TransientError:
                pass
            except PlanflowError as exc:
                self.errors.append(exc)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


def test_fast_and_immediate_restarts_under_8_writers_lose_nothing_and_apply_nothing_twice(
    cluster: Cluster, database_name: str
) -> None:
    url = cluster.url(database_name, pool_max_size="10", pool_min_size="4")
    with open_provider({"url": url, "retry_max_attempts": 12, "retry_max_delay": 0.5}) as provider:
        wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:6]}", "restarts"))
        counter = provider.tasks.upsert_state(
            TaskState("counter", "count", wf.workflow_exec_id, wf.workflow_id, input={"n": 0})
        )
        writers = Writers(provider, wf.workflow_exec_id, counter.task_exec_id)
        recoveries: dict[str, list[float]] = {"fast": [], "immediate": []}
        try:
            for mode in ["fast", "immediate"] * RESTARTS_PER_MODE:
                time.sleep(0.3)
                cluster.restart(mode)
                back = cluster.wait_ready()
                provider.tasks.get_state(counter.task_exec_id)
                recoveries[mode].append(time.monotonic() - back)
        finally:
            writers.finish()
        assert not writers.errors, f"a call failed with a non-transient error: {writers.errors[0]!r}"
        stored = {
            s.task_exec_id
            for s in iter_all(provider, wf.workflow_exec_id)
            if s.task_exec_id != counter.task_exec_id
        }
        final = provider.tasks.get_state(counter.task_exec_id)
    report(
        f"{2 * RESTARTS_PER_MODE} restarts under {THREADS} writers: {len(writers.acknowledged)} acknowledged "
        f"writes, {len(writers.failed)} failed, {len(writers.unknown)} unknown; {writers.increments} increments "
        f"acknowledged, {writers.unknown_increments} unknown; first call after the server is back: fast max "
        f"{max(recoveries['fast']):.3f}s, immediate max {max(recoveries['immediate']):.3f}s"
    )
    assert writers.acknowledged <= stored, "an acknowledged write was lost"
    assert not stored & writers.failed, "a write that reported failure was applied"
    assert stored <= writers.acknowledged | writers.unknown
    n = final.input["n"] if final.input else None
    assert isinstance(n, int)
    assert writers.increments <= n <= writers.increments + writers.unknown_increments, "an increment twice"
    assert max(recoveries["fast"] + recoveries["immediate"]) < 1.5


def iter_all(provider: Provider, workflow_exec_id: str) -> Iterator[TaskState]:
    cursor = None
    while True:
        page = provider.tasks.list_states(
            TaskFilter(workflow_exec_id=workflow_exec_id), limit=1000, cursor=cursor
        )
        yield from page.items
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def use_every_connection(provider: Provider, pool_size: int) -> None:
    """Hold all ``pool_size`` connections at once, so that every one of them is open and idle afterwards."""
    barrier = threading.Barrier(pool_size)

    def hold(_: Repositories) -> None:
        barrier.wait(10)

    threads = [threading.Thread(target=provider.run_in_transaction, args=(hold,)) for _ in range(pool_size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not barrier.broken, "the pool did not lend all its connections at once"


@pytest.mark.parametrize("pool_size", [1, 4, 10])
def test_a_pool_whose_connections_all_died_serves_the_next_call_within_a_second(
    cluster: Cluster, database_name: str, pool_size: int
) -> None:
    proxy = CommitProxy(cluster.port)
    url = proxy.url(database_name, pool_min_size=str(pool_size), pool_max_size=str(pool_size))
    try:
        with open_provider(url) as provider:
            wf = provider.workflows.upsert_state(WorkflowState("wf", "w"))
            timings = []
            for _ in range(5):
                use_every_connection(provider, pool_size)
                cut = proxy.cut_all()
                assert cut >= pool_size, "every connection of the pool dies"
                started = time.monotonic()
                assert provider.workflows.get_state(wf.workflow_exec_id).workflow_id == "w"
                timings.append(time.monotonic() - started)
    finally:
        proxy.stop()
    report(f"pool of {pool_size}, every connection cut: next call {max(timings):.3f}s at most (5 tries)")
    assert max(timings) < 1.0


def test_a_server_that_closes_idle_sessions_never_makes_a_call_fail(
    cluster: Cluster, database_name: str
) -> None:
    cluster.sql(f"ALTER DATABASE {database_name} SET idle_session_timeout = '300ms'")
    with open_provider(cluster.url(database_name, pool_min_size="4", pool_max_size="4")) as provider:
        wf = provider.workflows.upsert_state(WorkflowState("wf", "w"))
        slowest = 0.0
        for pause in [0.1, 0.5, 0.35, 1.2, 0.05, 0.7, 2.0, 0.4]:
            time.sleep(pause)
            started = time.monotonic()
            assert provider.workflows.get_state(wf.workflow_exec_id).workflow_id == "w"
            slowest = max(slowest, time.monotonic() - started)
    report(f"idle_session_timeout=300ms: every call succeeded, slowest {slowest:.3f}s")
    assert slowest < 1.0
