"""``tasks.wait_for_work`` wakes when a commit makes work claimable, and for nothing else.

The waiter runs in a process of its own (so that nothing in-process can carry the news: PostgreSQL's
LISTEN/NOTIFY, SQLite's ``PRAGMA data_version`` poll), or in a thread of the writer's process (SQLite's
in-process signal). Each of 100 rounds waits for a workflow of its own; the writer adds one pending task to
it once the waiter is waiting, and the wake-up is the time from the writer's commit returning to the
waiter's ``wait_for_work`` returning, on the machine's one wall clock. A waiter would sleep out its whole
timeout (longer than the writer waits for its answer) if a commit did not wake it, so the tests assert that
every commit woke it; the wake-up times are printed, not asserted (a timing belongs in a benchmark).
"""

from __future__ import annotations

import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from planflow import Provider, TaskFilter, TaskState, WorkflowState, open_provider

ROUNDS = 100
SETTLE = 0.02  # after the waiter says it is about to wait, before the write
#: How long a waiter waits for its round's work: more than the writer waits for its answer (REPLY), so a
#: commit that did not wake the waiter fails the round instead of being found when the timeout ran out.
WAIT = 60
REPLY = 30


def wf(i: int) -> str:
    return f"wf-wait-{i:03d}"


def waiter(url: str, conn: Connection) -> None:
    """Each round: say "waiting", wait for work in that round's workflow, send back when it woke."""
    with open_provider(url) as provider:
        for i in range(ROUNDS):
            conn.send("waiting")
            found = provider.tasks.wait_for_work(TaskFilter(workflow_exec_id=wf(i)), timeout=WAIT)
            conn.send((found, time.time()))


def prepare(provider: Provider) -> None:
    for i in range(ROUNDS):
        provider.workflows.upsert_state(WorkflowState(wf(i), "waiting"))


def add_work(provider: Provider, i: int) -> float:
    provider.tasks.upsert_state(TaskState(f"{wf(i)}/t", "t", wf(i), "waiting"))
    return time.time()


def rounds(provider: Provider, receive: Callable[[], object]) -> list[float]:
    """Drive the rounds against a waiter reached through ``receive``; the wake-up delays in seconds."""
    delays: list[float] = []
    for i in range(ROUNDS):
        assert receive() == "waiting"
        time.sleep(SETTLE)
        committed = add_work(provider, i)
        reply = receive()
        assert isinstance(reply, tuple), f"round {i}: the commit did not wake the waiter ({reply})"
        found, woke = reply
        assert found is True, f"round {i}: the waiter timed out"
        delays.append(max(0.0, woke - committed))
        # The wake had a cause: the task is there to claim.
        assert len(provider.tasks.claim(TaskFilter(workflow_exec_id=wf(i)), worker="w", lease=30)) == 1
    return delays


def across_processes(url: str) -> list[float]:
    with open_provider(url) as provider:
        prepare(provider)
        ours, theirs = multiprocessing.get_context("spawn").Pipe()
        process = multiprocessing.get_context("spawn").Process(target=waiter, args=(url, theirs))
        process.start()
        try:
            delays = rounds(provider, lambda: ours.recv() if ours.poll(REPLY) else f"no reply in {REPLY} s")
        finally:
            process.join(REPLY)
            if process.is_alive():
                process.kill()
        assert process.exitcode == 0
        return delays


def report(name: str, delays: list[float]) -> float:
    p99 = statistics.quantiles(delays, n=100)[98]
    print(f"\n{name}: wake-up p50 {statistics.median(delays) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
          f"max {max(delays) * 1000:.1f} ms over {len(delays)} commits")  # fmt: skip
    return p99


@pytest.mark.postgres
def test_postgres_wakes_a_waiting_process_at_every_commit(postgres_url: str) -> None:
    # rounds() fails a round whose waiter stays asleep: its timeout (WAIT) outlasts the wait for it (REPLY).
    delays = across_processes(postgres_url)
    report("postgres LISTEN/NOTIFY", delays)
    assert len(delays) == ROUNDS


def test_sqlite_wakes_a_waiting_process_at_every_commit(tmp_path: Path) -> None:
    # The data_version poll: rounds() fails a round whose waiter stays asleep; the wake-up times are printed.
    delays = across_processes(f"sqlite:///{tmp_path / 'wait.db'}")
    report("sqlite data_version poll", delays)
    assert len(delays) == ROUNDS


def test_sqlite_wakes_a_waiting_thread_of_the_writing_process_at_once(tmp_path: Path) -> None:
    with open_provider(f"sqlite:///{tmp_path / 'wait.db'}") as provider:
        prepare(provider)
        replies: list[object] = []
        arrived = threading.Condition()

        def send(message: object) -> None:
            with arrived:
                replies.append(message)
                arrived.notify()

        def receive() -> object:
            with arrived:
                assert arrived.wait_for(lambda: replies, timeout=30)
                return replies.pop(0)

        def wait_rounds() -> None:
            for i in range(ROUNDS):
                send("waiting")
                send(
                    (
                        provider.tasks.wait_for_work(TaskFilter(workflow_exec_id=wf(i)), timeout=10),
                        time.time(),
                    )
                )

        thread = threading.Thread(target=wait_rounds)
        thread.start()
        delays = rounds(provider, receive)
        thread.join(30)
    # Every commit woke the waiter (rounds() fails one that stayed asleep); how soon is printed, and measured
    # against the poll by benchmarks/wait_bench.py.
    report("sqlite in-process signal", delays)
    assert len(delays) == ROUNDS and not thread.is_alive()


@pytest.mark.parametrize("driver", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_work_for_others_and_writes_that_make_nothing_claimable_do_not_end_the_wait(
    driver: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'wait.db'}" if driver == "sqlite" else request.getfixturevalue("postgres_url")
    )
    with open_provider(url) as provider:
        prepare(provider)
        provider.tasks.upsert_state(TaskState("mine", "t", wf(0), "waiting"))
        (held,) = provider.tasks.claim(TaskFilter(workflow_exec_id=wf(0)), worker="w", lease=60)

        def noise() -> None:
            for n in range(8):
                time.sleep(0.05)
                provider.tasks.upsert_state(TaskState(f"other-{n}", "t", wf(1), "waiting"))  # another's work
                provider.tasks.heartbeat([held.task_exec_id], worker="w", lease=60)  # no new work

        thread = threading.Thread(target=noise)
        started = time.monotonic()
        thread.start()
        assert provider.tasks.wait_for_work(TaskFilter(workflow_exec_id=wf(0)), timeout=0.6) is False
        waited = time.monotonic() - started
        thread.join()
        assert waited >= 0.6
