"""What only the asynchronous API has: tasks and their transactions, cancellation, timeouts, the event loop.

Each test runs once per driver (SQLite file, PostgreSQL, and TinyDB where it applies), natively, in
``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from planflow import (
    AsyncProvider,
    AsyncRepositories,
    NotFoundError,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowState,
    open_async_provider,
)
from tests.driven import logged_statements
from tests.support import reporter

report = reporter("async")


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'async.db'}"
    postgres_url: str = request.getfixturevalue("postgres_url")
    return postgres_url


def run(url: str, test: Callable[[AsyncProvider], Awaitable[Any]], **settings: object) -> Any:
    async def main() -> Any:
        async with await open_async_provider({"url": url, **settings}) as provider:
            await provider.workflows.upsert_state(WorkflowState("wf", "w"))
            return await test(provider)

    return asyncio.run(main())


def state(task_exec_id: str, **fields: Any) -> TaskState:
    return TaskState(task_exec_id, "t", "wf", "w", **fields)


def test_two_tasks_never_share_a_transaction_and_a_rollback_keeps_the_other_s_write(url: str) -> None:
    async def test(provider: AsyncProvider) -> list[str]:
        seen: list[str] = []

        async def holder() -> None:
            with pytest.raises(RuntimeError):
                async with provider.transaction() as tx:
                    await tx.tasks.upsert_state(state("a-uncommitted"))
                    await asyncio.sleep(0.1)  # the other task runs now
                    raise RuntimeError("roll back")

        async def other() -> None:
            await asyncio.sleep(0.02)
            try:
                await provider.tasks.get_state("a-uncommitted")
                seen.append("saw it")
            except NotFoundError:
                seen.append("outside")
            if provider.driver == "postgres":  # a SQLite file has one writer: this write waits for the holder
                await provider.tasks.upsert_state(state("b-kept"))

        await asyncio.gather(holder(), other())
        if provider.driver == "postgres":
            assert (await provider.tasks.get_state("b-kept")).version == 1
        with pytest.raises(NotFoundError):
            await provider.tasks.get_state("a-uncommitted")
        return seen

    assert run(url, test) == ["outside"]


def test_a_task_started_inside_a_transaction_is_not_in_it(url: str) -> None:
    async def test(provider: AsyncProvider) -> list[str]:
        seen: list[str] = []
        async with provider.transaction() as tx:
            await tx.tasks.upsert_state(state("parent-only"))

            async def child() -> None:
                try:
                    await provider.tasks.get_state("parent-only")
                    seen.append("joined")
                except NotFoundError:
                    seen.append("outside")

            await asyncio.create_task(child())
        return seen

    assert run(url, test) == ["outside"]


def test_a_cancelled_transaction_rolls_back_and_gives_its_connection_back(url: str) -> None:
    async def test(provider: AsyncProvider) -> None:
        started = asyncio.Event()

        async def doomed() -> None:
            async with provider.transaction() as tx:
                await tx.tasks.upsert_state(state("cancelled-write"))
                started.set()
                await asyncio.sleep(10)

        task = asyncio.create_task(doomed())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        with pytest.raises(NotFoundError):
            await provider.tasks.get_state("cancelled-write")
        # The connection (pool of one) came back: the next unit of work gets it at once.
        async with asyncio.timeout(5):
            await provider.tasks.upsert_state(state("after"))

    run(url, test, pool_max_size=1, pool_min_size=1)


def test_asyncio_timeout_around_any_call_works_and_the_store_stays_usable(url: str) -> None:
    async def test(provider: AsyncProvider) -> None:
        async with provider.transaction() as tx:
            await tx.tasks.upsert_state(state("locked"))
            other = asyncio.create_task(_update_when_free(provider))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await other  # waits for the row lock (PostgreSQL) or the write lock (SQLite)
        assert (await provider.tasks.get_state("locked")).version >= 1
        async with asyncio.timeout(10):
            await provider.tasks.upsert_state(state("locked"))

    run(url, test)


async def _update_when_free(provider: AsyncProvider) -> None:
    await provider.tasks.upsert_state(state("locked", status=TaskStatus.RUNNING))


def test_1000_cancellations_at_random_points_leak_no_connection_and_leave_the_data_consistent(
    url: str,
) -> None:
    async def test(provider: AsyncProvider) -> dict[str, int]:
        await provider.tasks.upsert_state(state("counter", input={"n": 0}))
        committed = 0

        async def increment(tx: AsyncRepositories) -> None:
            current = await tx.tasks.get_state_for_update("counter")
            assert current.input is not None
            count = current.input["n"]
            assert isinstance(count, int)
            await tx.tasks.update_state(current.evolve(input={"n": count + 1}), current.version)

        async def one() -> bool:
            await provider.run_in_transaction(increment)
            return True

        cancelled = 0
        for _ in range(1000):
            task = asyncio.create_task(one())
            await asyncio.sleep(random.uniform(0, 0.004))
            if not task.done():
                task.cancel()
            try:
                if await task:
                    committed += 1
            except asyncio.CancelledError:
                cancelled += 1
        # Every connection came back: pool_max_size (4) units of work can run at once, now.
        async with asyncio.timeout(10):
            await asyncio.gather(*(provider.run_in_transaction(increment) for _ in range(4)))
        final = await provider.tasks.get_state("counter")
        assert final.input is not None
        n = final.input["n"]
        assert isinstance(n, int)
        # A cancelled unit may have committed just before its cancellation landed; never twice, never half.
        assert committed + 4 <= n <= committed + 4 + cancelled
        assert final.version == 1 + n
        return {"committed": committed, "cancelled": cancelled, "n": n}

    figures = run(url, test, pool_max_size=4, pool_min_size=1)
    report(f"{url.split(':', maxsplit=1)[0]}: 1000 units with random cancellations: {figures}")
    assert figures["cancelled"] > 50, "hardly anything was cancelled: the test proved little"


def test_the_event_loop_is_never_blocked_by_sqlite_while_8_coroutines_write(tmp_path: Path) -> None:
    loop_threads: list[int] = []

    async def test(provider: AsyncProvider) -> list[float]:
        loop_threads.append(threading.get_ident())
        lags: list[float] = []
        stop = asyncio.Event()

        async def probe() -> None:
            while not stop.is_set():
                started = time.perf_counter()
                await asyncio.sleep(0.001)
                lags.append(time.perf_counter() - started - 0.001)

        async def writer(index: int) -> None:
            for number in range(60):
                await provider.tasks.upsert_state(state(f"w{index}-{number}", input={"blob": "x" * 2000}))
                async with provider.transaction() as tx:
                    await tx.tasks.merge_usage(f"w{index}-{number}", _usage())

        probing = asyncio.create_task(probe())
        await asyncio.gather(*(writer(i) for i in range(8)))
        stop.set()
        await probing
        return lags

    with logged_statements() as statements:
        lags = run(f"sqlite:///{tmp_path / 'lag.db'}", test)
    p99 = sorted(lags)[int(0.99 * len(lags))]
    report(
        f"loop lag while 8 coroutines write to SQLite: p50 {statistics.median(lags) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms"
    )
    # The outcome, not the lag (a loaded machine lags anyway): every statement of the writes ran on a thread of
    # its own, none on the event loop's, which only ever waited for their results.
    sql = [
        (record.thread, record.getMessage().split("): ", 1)[-1]) for record in statements
    ]  # "statement: ..."
    writes = [(thread, text) for thread, text in sql if not text.upper().startswith(("SELECT", "PRAGMA"))]
    assert len(writes) >= 8 * 60 * 2
    on_loop = [text[:60] for thread, text in writes if thread == loop_threads[0]]
    assert on_loop == [], "the event loop ran these statements itself"


def _usage() -> Any:
    from planflow import UsageEntry, UsageSummary

    return UsageSummary((UsageEntry("p", "m", "task", 1, 1, 2),))


def test_tinydb_batches_of_two_tasks_never_interleave(tmp_path: Path) -> None:
    from tests.contract.helpers import a_task

    async def main() -> list[str]:
        async with await open_async_provider(f"tinydb:///{tmp_path / 'addon.json'}") as provider:

            async def batch(name: str) -> None:
                async with provider.executions.batch():
                    await provider.executions.add_task(a_task(f"{name}-1"))
                    await asyncio.sleep(0.01)
                    await provider.executions.add_task(a_task(f"{name}-2"))

            await asyncio.gather(*(batch(f"b{i}") for i in range(6)))
            return [t.id for t in await provider.executions.list_tasks()]

    ids = asyncio.run(main())
    assert sorted(ids) == sorted(f"b{i}-{j}" for i in range(6) for j in (1, 2))
    assert all(ids[k].split("-")[0] == ids[k + 1].split("-")[0] for k in range(0, 12, 2)), ids


@pytest.mark.filterwarnings("error")
def test_open_async_provider_works_with_async_with_and_with_await_and_closes_what_it_opened(
    url: str, tmp_path: Path
) -> None:
    async def main() -> None:
        async with open_async_provider(url) as provider:  # no "await": as aiosqlite and asyncpg's pools allow
            await provider.workflows.upsert_state(WorkflowState("wf-with", "w"))
        assert provider._closed  # pyright: ignore[reportPrivateUsage]

        opened = await open_async_provider(url)
        try:
            assert (await opened.workflows.get_state("wf-with")).workflow_id == "w"
        finally:
            await opened.aclose()

        async with await open_async_provider(url) as again:  # the older spelling keeps working
            assert (await again.workflows.get_state("wf-with")).workflow_id == "w"

        async with open_async_provider(f"tinydb:///{tmp_path / 'addon.json'}") as addon:
            assert await addon.executions.list_tasks() == []

    asyncio.run(main())


def test_an_opening_never_awaited_opens_nothing_and_warns_of_nothing(tmp_path: Path) -> None:
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opening = open_async_provider(f"sqlite:///{tmp_path / 'never.db'}")
        assert asyncio.iscoroutine(opening)  # so asyncio.run, create_task and wait_for take it as before
        del opening
        gc.collect()

    assert [str(w.message) for w in caught] == []
    assert not (tmp_path / "never.db").exists()


def test_merges_timed_out_and_retried_with_their_keys_count_every_token_once(url: str) -> None:
    """asyncio.wait_for around merge_usage with a timeout that often fires mid-call: a merge that timed out may
    have committed, and its retry with the same idempotency key never adds it a second time."""
    one = UsageSummary((UsageEntry("openai", "gpt-4o", "task", 1, 0, 1),))

    async def test(provider: AsyncProvider) -> dict[str, int]:
        await provider.tasks.upsert_state(state("metered"))
        timeouts = 0
        for call in range(200):
            key = f"merge-{call}"
            # Each retry of a key may wait twice as long: on a loaded machine where every call takes longer than
            # the first bound, the retries still end (the early attempts still time out mid-call).
            for attempt in itertools.count():
                try:
                    await asyncio.wait_for(
                        provider.tasks.merge_usage("metered", one, idempotency_key=key),
                        timeout=random.uniform(0, 0.003) * 2**attempt,
                    )
                    break
                except TimeoutError:
                    timeouts += 1  # maybe applied: try again with the same key
        stored = (await provider.tasks.get_state("metered")).usage
        assert stored is not None
        return {"timeouts": timeouts, "tokens": stored.total_tokens}

    outcome = run(url, test)
    report(f"200 merges, {outcome['timeouts']} timed out and retried: {outcome['tokens']} tokens stored")
    assert outcome["tokens"] == 200
    assert outcome["timeouts"] > 0, "no call timed out: the test proved nothing"
