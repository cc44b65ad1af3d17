"""Reads on standbys (``read_url``), against a private primary and a streaming standby that lags on purpose.

The standby applies each commit ``recovery_min_apply_delay`` after the primary made it, so a read sent to it
right after a write would see the older row. What the tests prove:

- a read after the caller's own write never returns older data, from 8 threads (and from asyncio tasks),
  whether the standby catches up within ``standby_wait`` (it then serves the read) or not (the primary does);
- reads that follow no write are served by the standby: counted on each server by ``pg_stat_database``
  (transactions committed in the test's database, read once every backend of the provider has exited, so
  that their statistics were flushed);
- a stopped standby costs nothing but a log line: reads go to the primary and nothing fails; a standby down
  when the provider opens is no error either.

The failover under writes is proven, unchanged, by ``test_failover.py``.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from planflow import PlanflowConfig, TaskState, TaskStatus, WorkflowState, open_async_provider, open_provider
from planflow.config import resolve_config
from tests.faults.cluster import Cluster
from tests.support import reporter

THREADS = 8
#: Each commit reaches the standby's data this long after the primary made it.
APPLY_DELAY_MS = 50

report = reporter("standby")


def _streaming(primary: Cluster) -> bool:
    return primary.sql("SELECT state FROM pg_stat_replication") == [("streaming",)]


def _start_pair() -> tuple[Cluster, Cluster]:
    primary = Cluster({"wal_level": "replica"})
    primary.start()
    try:
        standby = Cluster({"recovery_min_apply_delay": f"'{APPLY_DELAY_MS}ms'"}, standby_of=primary)
        standby.start()
    except BaseException:
        primary.destroy()
        raise
    deadline = time.monotonic() + 60
    while not _streaming(primary):
        assert time.monotonic() < deadline, "the standby never streamed"
        time.sleep(0.05)
    return primary, standby


@pytest.fixture(scope="module")
def lagging_pair() -> Iterator[tuple[Cluster, Cluster]]:
    """A primary and an asynchronous streaming standby applying every commit 50 ms late, for the module."""
    primary, standby = _start_pair()
    yield primary, standby
    standby.destroy()
    primary.destroy()


@pytest.fixture
def own_pair() -> Iterator[tuple[Cluster, Cluster]]:
    """The same, for one test that stops the standby."""
    primary, standby = _start_pair()
    yield primary, standby
    standby.destroy()
    primary.destroy()


def _database(primary: Cluster, standby: Cluster) -> str:
    """A new database on the primary, once the standby has it too."""
    name = f"reads_{uuid.uuid4().hex[:8]}"
    primary.sql(f"CREATE DATABASE {name}")
    deadline = time.monotonic() + 30
    while not standby.sql("SELECT 1 FROM pg_database WHERE datname = %s", [name]):
        assert time.monotonic() < deadline, "the standby never got the database"
        time.sleep(0.02)
    return name


def _config(primary: Cluster, standby: Cluster, database: str, **settings: object) -> PlanflowConfig:
    return resolve_config(
        {
            "url": primary.url(database),
            "read_url": standby.url(database),
            "pool_max_size": THREADS + 2,
            **settings,
        }
    )


def _transactions(server: Cluster, database: str) -> int:
    """Transactions ``server`` ran in ``database``, once no client is connected to it (their statistics are
    flushed when their backends exit)."""
    deadline = time.monotonic() + 30
    while server.sql(
        "SELECT 1 FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'", [database]
    ):
        assert time.monotonic() < deadline, "the provider's connections never went away"
        time.sleep(0.02)
    rows = server.sql(
        "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s", [database]
    )
    return int(rows[0][0])  # pyright: ignore[reportArgumentType]


def _task_scans(server: Cluster, database: str) -> int:
    """Scans of ``task_states`` that ``server`` ran (call after :func:`_transactions`: statistics flushed)."""
    rows = server.sql(
        "SELECT COALESCE(seq_scan, 0) + COALESCE(idx_scan, 0) FROM pg_stat_user_tables WHERE relname = 'task_states'",
        database=database,
    )
    return int(rows[0][0])  # pyright: ignore[reportArgumentType]


def _caught_up(primary: Cluster, standby: Cluster) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    (target,) = primary.sql("SELECT pg_current_wal_insert_lsn()::text")[0]
    deadline = time.monotonic() + 30
    while not standby.sql("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])[0][0]:
        assert time.monotonic() < deadline, "the standby never caught up"
        time.sleep(0.01)


def _seed(config: PlanflowConfig, tasks: int) -> list[TaskState]:
    with open_provider(config) as provider:
        wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:8]}", "reads"))
        return [
            provider.tasks.upsert_state(
                TaskState(f"t{i}", f"step{i}", wf.workflow_exec_id, wf.workflow_id, input={"n": 0})
            )
            for i in range(tasks)
        ]


def _standby_is_behind(primary: Cluster, standby: Cluster, database: str, task: TaskState) -> bool:
    """Write ``task`` on the primary and read it on the standby at once: whether the standby had it not yet."""
    marker = uuid.uuid4().hex
    primary.sql(
        "UPDATE task_states SET input = jsonb_build_object('marker', %s::text) WHERE task_exec_id = %s",
        [marker, task.task_exec_id],
        database=database,
    )
    rows = standby.sql(
        "SELECT input->>'marker' FROM task_states WHERE task_exec_id = %s",
        [task.task_exec_id],
        database=database,
    )
    return rows != [(marker,)]


@pytest.mark.parametrize(
    ("pairs", "standby_wait"),
    [
        # The figure, in every run: 10 000 pairs served by a standby that catches up within the bound.
        pytest.param(10_000, 0.1, id="10000-pairs-standby-catches-up"),
        pytest.param(2_000, 0.005, id="2000-pairs-primary-after-the-bound"),
    ],
)
def test_a_read_after_the_callers_own_write_never_returns_older_data(
    lagging_pair: tuple[Cluster, Cluster], pairs: int, standby_wait: float
) -> None:
    primary, standby = lagging_pair
    database = _database(primary, standby)
    config = _config(primary, standby, database, standby_wait=standby_wait)
    tasks = _seed(config, THREADS)
    _caught_up(primary, standby)
    behind = sum(_standby_is_behind(primary, standby, database, tasks[0]) for _ in range(5))
    assert behind > 0, "the standby was never behind: the test would prove nothing"
    before = (_transactions(primary, database), _transactions(standby, database))
    scans_before = _task_scans(standby, database)

    stale: list[tuple[str, int, int]] = []
    failures: list[BaseException] = []
    per_thread = pairs // THREADS
    with open_provider(config) as provider:

        def pairs_of(index: int) -> None:
            try:
                state = provider.tasks.get_state(tasks[index].task_exec_id)
                for n in range(1, per_thread + 1):
                    state = provider.tasks.update_state(state.evolve(input={"n": n}), state.version)
                    read = provider.tasks.get_state(state.task_exec_id)
                    if read.version < state.version or read.input != {"n": n}:
                        stale.append((state.task_exec_id, state.version, read.version))
            except BaseException as exc:  # reported below, with the thread's name
                failures.append(exc)

        threads = [threading.Thread(target=pairs_of, args=(i,)) for i in range(THREADS)]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(600)
        elapsed = time.monotonic() - started
    after = (_transactions(primary, database), _transactions(standby, database))
    on_primary, on_standby = after[0] - before[0], after[1] - before[1]
    # The first read of each thread follows no write: it may be the standby's whatever the bound.
    served = _task_scans(standby, database) - scans_before - THREADS
    done = per_thread * THREADS
    report(
        f"{done} write-then-read pairs from {THREADS} threads, standby {APPLY_DELAY_MS} ms behind (behind in "
        f"{behind} of 5 direct probes), standby_wait={standby_wait}s: {len(stale)} stale reads; {elapsed:.1f} s; "
        f"reads after a write served by the standby: {served}; transactions on the primary {on_primary}, on the "
        f"standby {on_standby} (its replay checks included)"
    )
    assert failures == []
    assert stale == []
    if standby_wait >= 0.1:
        # 50 ms of delay within a 100 ms bound: the standby serves reads after waiting for them.
        assert served >= done // 4
    else:
        # The bound is shorter than the delay: the primary serves the reads that follow a write.
        assert served <= done // 20


def test_async_reads_after_their_tasks_own_writes_never_return_older_data(
    lagging_pair: tuple[Cluster, Cluster],
) -> None:
    primary, standby = lagging_pair
    database = _database(primary, standby)
    config = _config(primary, standby, database)
    tasks = _seed(config, THREADS)
    _caught_up(primary, standby)
    per_task = 50

    async def run() -> list[tuple[str, int, int]]:
        stale: list[tuple[str, int, int]] = []
        async with await open_async_provider(config) as provider:

            async def pairs_of(index: int) -> None:
                state = await provider.tasks.get_state(tasks[index].task_exec_id)
                for n in range(1, per_task + 1):
                    state = await provider.tasks.update_state(state.evolve(input={"n": n}), state.version)
                    read = await provider.tasks.get_state(state.task_exec_id)
                    if read.version < state.version or read.input != {"n": n}:
                        stale.append((state.task_exec_id, state.version, read.version))

            await asyncio.gather(*(pairs_of(i) for i in range(THREADS)))
        return stale

    stale = asyncio.run(run())
    report(
        f"{per_task * THREADS} write-then-read pairs from {THREADS} asyncio tasks: {len(stale)} stale reads"
    )
    assert stale == []


def test_reads_that_follow_no_write_are_served_by_the_standby(lagging_pair: tuple[Cluster, Cluster]) -> None:
    primary, standby = lagging_pair
    database = _database(primary, standby)
    config = _config(primary, standby, database)
    tasks = _seed(config, 20)
    _caught_up(primary, standby)
    before = (_transactions(primary, database), _transactions(standby, database))
    rounds = 100
    with open_provider(config) as provider:
        for _ in range(rounds):
            assert provider.tasks.get_state(tasks[3].task_exec_id).input == {"n": 0}
            assert len(provider.tasks.list_tasks_in_workflow(tasks[0].workflow_exec_id)) == 20
            assert provider.tasks.count_states() == 20
            assert (
                len(provider.tasks.list_tasks_by_status(tasks[0].workflow_exec_id, TaskStatus.PENDING)) == 20
            )
    after = (_transactions(primary, database), _transactions(standby, database))
    on_primary, on_standby = after[0] - before[0], after[1] - before[1]
    reads = 4 * rounds
    report(
        f"{reads} reads following no write: transactions on the primary {on_primary} (opening the provider), "
        f"on the standby {on_standby}"
    )
    assert on_standby >= reads
    assert on_primary < reads // 10


def test_a_stopped_standby_costs_nothing_but_a_log_line(
    own_pair: tuple[Cluster, Cluster], caplog: pytest.LogCaptureFixture
) -> None:
    primary, standby = own_pair
    database = _database(primary, standby)
    config = _config(primary, standby, database)
    tasks = _seed(config, 1)
    _caught_up(primary, standby)
    caplog.set_level(logging.INFO, logger="planflow.postgres")
    with open_provider(config) as provider:
        state = provider.tasks.get_state(tasks[0].task_exec_id)
        standby.stop("fast")
        for n in range(1, 201):
            state = provider.tasks.update_state(state.evolve(input={"n": n}), state.version)
            assert provider.tasks.get_state(state.task_exec_id).input == {"n": n}
            assert provider.tasks.count_states() == 1
        skipped = [r for r in caplog.records if r.name == "planflow.postgres" and "standby" in r.getMessage()]
        standby.start()
        # Reads that follow no write (a fresh thread) find the standby again once it answers.
        back = threading.Event()

        def reader() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                provider.tasks.get_state(state.task_exec_id)
                if any("serves reads again" in r.getMessage() for r in caplog.records):
                    back.set()
                    return
                time.sleep(0.05)

        thread = threading.Thread(target=reader)
        thread.start()
        thread.join(60)
    report(f"standby stopped under 200 write-then-read pairs: log lines {[r.getMessage() for r in skipped]}")
    assert len(skipped) == 1
    assert skipped[0].levelno == logging.WARNING
    assert back.is_set(), "the standby never served reads again after it restarted"


def test_a_standby_down_when_the_provider_opens_is_no_error(own_pair: tuple[Cluster, Cluster]) -> None:
    primary, standby = own_pair
    database = _database(primary, standby)
    config = _config(primary, standby, database)
    tasks = _seed(config, 1)
    standby.stop("fast")
    with open_provider(config) as provider:
        assert provider.tasks.get_state(tasks[0].task_exec_id).task_exec_id == tasks[0].task_exec_id
        assert provider.tasks.count_states() == 1
