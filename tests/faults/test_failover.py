"""Failover: a primary with a synchronous streaming standby is stopped under writes and the standby promoted.

The provider is opened on a multi-host URL (``host=a,b``, ``target_session_attrs=read-write``), so that its new
connections find whichever server accepts writes. Every write acknowledged before, during and after the
failover must be on the new primary, no unit of work applied twice, and the writes resume by themselves.
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
    Repositories,
    TaskState,
    WorkflowState,
    open_provider,
)
from tests.driven import resolved_commits
from tests.faults.cluster import Cluster
from tests.support import reporter

WRITERS = 8


report = reporter("faults")


@pytest.fixture
def primary_and_standby() -> Iterator[tuple[Cluster, Cluster]]:
    """A primary whose commits wait for a standby streaming from it (``synchronous_standby_names = '*'``)."""
    primary = Cluster({"wal_level": "replica", "synchronous_standby_names": "'*'"})
    standby: Cluster | None = None
    try:
        primary.start()
        # Promoted, it must not wait for a standby of its own: it has none.
        standby = Cluster({"synchronous_standby_names": "''"}, standby_of=primary)
        standby.start()
        deadline = time.monotonic() + 60
        while primary.sql("SELECT sync_state FROM pg_stat_replication") != [("sync",)]:
            assert time.monotonic() < deadline, "the standby never became synchronous"
            time.sleep(0.05)
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def test_promoting_a_synchronous_standby_under_writes_keeps_every_acknowledged_write(
    primary_and_standby: tuple[Cluster, Cluster],
) -> None:
    primary, standby = primary_and_standby
    primary.sql("CREATE DATABASE failover")
    url = (
        f"postgresql://postgres@127.0.0.1:{primary.port},127.0.0.1:{standby.port}/failover"
        "?target_session_attrs=read-write&connect_timeout=2"
    )
    acked: list[list[str]] = [[] for _ in range(WRITERS)]
    increments = [0] * WRITERS
    unknown = [0] * WRITERS
    failures: list[str] = []
    stop = threading.Event()
    with (
        resolved_commits() as outcomes,
        open_provider({"url": url, "retry_max_attempts": 5, "pool_max_size": WRITERS}) as provider,
    ):
        wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:8]}", "failover"))
        counters = [
            provider.tasks.upsert_state(
                TaskState(f"counter-{i}", "count", wf.workflow_exec_id, wf.workflow_id, input={"n": 0})
            )
            for i in range(WRITERS)
        ]

        def increment(tx: Repositories, task_exec_id: str) -> None:
            state = tx.tasks.get_state_for_update(task_exec_id)
            assert state.input is not None
            count = state.input["n"]
            assert isinstance(count, int)
            tx.tasks.update_state(state.evolve(input={"n": count + 1}), state.version)

        def writer(index: int) -> None:
            serial = 0
            while not stop.is_set():
                task = TaskState(f"w{index}-{serial:05d}", "write", wf.workflow_exec_id, wf.workflow_id)
                try:
                    provider.tasks.upsert_state(task)  # idempotent: after a failure, the same one again
                    acked[index].append(task.task_exec_id)
                    serial += 1
                    provider.run_in_transaction(lambda tx: increment(tx, counters[index].task_exec_id))
                    increments[index] += 1
                except CommitUnknownError:
                    unknown[index] += 1
                except PlanflowError as exc:  # the failover window: no server accepts writes yet
                    failures.append(type(exc).__name__)
                    time.sleep(0.05)

        threads = [threading.Thread(target=writer, args=(i,), daemon=True) for i in range(WRITERS)]
        for thread in threads:
            thread.start()
        time.sleep(1.5)
        before = sum(map(len, acked))
        stopped = time.monotonic()
        primary.stop("immediate")
        standby.promote()
        promoted = time.monotonic()
        at_promotion = sum(map(len, acked))
        deadline = promoted + 60
        while sum(map(len, acked)) < at_promotion + 200 and time.monotonic() < deadline:
            time.sleep(0.01)
        resumed = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for thread in threads:
            thread.join(120)
        assert not any(thread.is_alive() for thread in threads), "a writer hung"
        after = sum(map(len, acked)) - at_promotion

        stored = {s.task_exec_id: s for s in provider.tasks.list_by_ids([s for ids in acked for s in ids])}
        counted = [provider.tasks.get_state(c.task_exec_id).input for c in counters]
    # Asked of the new primary directly, not through the provider.
    on_new_primary = {
        row[0] for row in standby.sql("SELECT task_exec_id FROM task_states", database="failover")
    }
    report(
        f"failover under {WRITERS} writers: {before} writes acknowledged before the primary stopped, {after} "
        f"after the standby was promoted ({promoted - stopped:.2f} s after the stop); 200 more writes "
        f"acknowledged {resumed - promoted:.2f} s after promotion; {len(failures)} calls failed in the window "
        f"({sorted(set(failures))}), {sum(unknown)} commit outcomes unknown to the caller; "
        f"commits in doubt resolved {outcomes}; {sum(increments)} acknowledged increments"
    )
    assert after >= 200, "the writes never resumed on the new primary"
    missing = [ident for ids in acked for ident in ids if ident not in on_new_primary]
    assert missing == [], f"{len(missing)} acknowledged writes are not on the new primary: {missing[:5]}"
    assert len(stored) == sum(map(len, acked))
    for index, state in enumerate(counted):
        assert state is not None
        # Each acknowledged increment applied once; one whose outcome stayed unknown may or may not have.
        assert increments[index] <= state["n"] <= increments[index] + unknown[index], (index, state, unknown)
