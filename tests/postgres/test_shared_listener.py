"""Every ``wait_for_work`` waiter of a provider shares one listening connection (issue 24, item 7).

20 waiters of a provider whose pool holds at most 2 connections used 22 backends before (each waiter connected
and listened on its own, 9.5 ms a call even when work was there). Now the provider holds its pool and one
listening connection, whatever the number of waiters; a listening connection that dies is replaced, and its
waiters still wake for the next work.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import psycopg
import pytest

from planflow import TaskFilter, TaskState, WorkflowState, open_async_provider, open_provider
from tests.pg import with_query

pytestmark = pytest.mark.postgres

WAITERS = 20


def backends(url: str, application: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application]
        ).fetchone()
    assert row is not None
    return int(row[0])


def named(url: str) -> tuple[str, str]:
    application = f"pf-listen-{uuid.uuid4().hex[:8]}"
    return with_query(url, application_name=application), application


def test_twenty_waiting_threads_share_one_listening_connection(postgres_url: str) -> None:
    url, application = named(postgres_url)
    with open_provider({"url": url, "pool_max_size": 2, "pool_min_size": 1}) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-listen", "w"))
        work = TaskFilter(workflow_exec_id="wf-listen")
        woke: list[bool] = []
        waiting = threading.Barrier(WAITERS + 1)

        def waiter() -> None:
            waiting.wait(30)
            woke.append(provider.tasks.wait_for_work(work, timeout=60))

        threads = [threading.Thread(target=waiter, daemon=True) for _ in range(WAITERS)]
        for thread in threads:
            thread.start()
        waiting.wait(30)
        time.sleep(0.5)  # every waiter is waiting now
        held = backends(postgres_url, application)
        provider.tasks.upsert_state(TaskState("wf-listen/t", "t", "wf-listen", "w"))
        for thread in threads:
            thread.join(60)
    assert woke == [True] * WAITERS
    assert held <= 2 + 1, f"{held} backends for a pool of 2 and {WAITERS} waiters"


def test_twenty_waiting_coroutines_share_one_listening_connection(postgres_url: str) -> None:
    url, application = named(postgres_url)

    async def main() -> tuple[list[bool], int]:
        async with open_async_provider({"url": url, "pool_max_size": 2, "pool_min_size": 1}) as provider:
            await provider.workflows.upsert_state(WorkflowState("wf-listen", "w"))
            work = TaskFilter(workflow_exec_id="wf-listen")
            waiters = [
                asyncio.create_task(provider.tasks.wait_for_work(work, timeout=60)) for _ in range(WAITERS)
            ]
            await asyncio.sleep(0.5)
            held = await asyncio.to_thread(backends, postgres_url, application)
            await provider.tasks.upsert_state(TaskState("wf-listen/t", "t", "wf-listen", "w"))
            return list(await asyncio.gather(*waiters)), held

    woke, held = asyncio.run(main())
    assert woke == [True] * WAITERS
    assert held <= 2 + 1, f"{held} backends for a pool of 2 and {WAITERS} waiters"


def test_a_listening_connection_that_dies_is_replaced_and_its_waiters_still_wake(postgres_url: str) -> None:
    url, application = named(postgres_url)
    with open_provider({"url": url, "pool_max_size": 2}) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-listen", "w"))
        work = TaskFilter(workflow_exec_id="wf-listen")
        # A first wait opens the listening connection; then the server ends it.
        assert provider.tasks.wait_for_work(work, timeout=0.1) is False
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND query LIKE 'LISTEN%%') k",
                [application],
            ).fetchone()
        assert killed == (1,)
        woke: list[bool] = []
        thread = threading.Thread(target=lambda: woke.append(provider.tasks.wait_for_work(work, timeout=60)))
        thread.start()
        time.sleep(0.5)
        provider.tasks.upsert_state(TaskState("wf-listen/t", "t", "wf-listen", "w"))
        thread.join(60)
    assert woke == [True]


def test_a_wait_when_work_is_there_opens_no_connection_after_the_first(postgres_url: str) -> None:
    url, application = named(postgres_url)
    with open_provider({"url": url, "pool_max_size": 1, "pool_min_size": 1}) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-listen", "w"))
        provider.tasks.upsert_state(TaskState("wf-listen/t", "t", "wf-listen", "w"))
        work = TaskFilter(workflow_exec_id="wf-listen")
        assert provider.tasks.wait_for_work(work, timeout=5) is True
        assert backends(postgres_url, application) == 2  # the pool's one and the listener
        for _ in range(50):
            assert provider.tasks.wait_for_work(work, timeout=5) is True
        assert backends(postgres_url, application) == 2
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            opened = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND backend_start > "
                "(SELECT min(backend_start) FROM pg_stat_activity WHERE application_name = %s "
                "AND query LIKE 'LISTEN%%')",
                [application, application],
            ).fetchone()
        assert opened == (0,)  # no connection opened after the listener's
