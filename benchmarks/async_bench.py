"""The asynchronous API (issue 15), interleaved with hand-written asyncio code and SQLAlchemy's asyncio ORM.

    .venv/bin/python -m benchmarks.async_bench [--quick]

1. PostgreSQL, 64 (and 1 and 8) coroutines each doing ``get_state`` then ``update_state(expected)`` on tasks of
   their own among 1 000: throughput and per-cycle p50/p99 latency of
   - planflow's async API;
   - hand-written psycopg async code on an ``AsyncConnectionPool`` running the same statements (the update as
     planflow sends it: one autocommitted statement whose first CTE inserts the commit token), target
     planflow >= 0.9x;
   - the same hand-written code with the UPDATE alone in autocommit (no exactly-once), for reference;
   - SQLAlchemy 2.0's asyncio ORM (psycopg's async dialect) on the same tables, target planflow >= 2x.
2. SQLite: 10 000 ``get_state`` and 10 000 ``update_state`` awaited one after the other, and by 8 coroutines,
   through the async API against the same calls of the sync API (target <= 1.5x).
3. Event-loop lag (p99 of a 1 ms ticker) while 8 coroutines write to SQLite: target < 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import TupleRow
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from benchmarks.compare import postgres_schema, sqlite_file
from planflow import TaskState, WorkflowState, open_async_provider, open_provider
from planflow.infra.postgres.commits import with_token
from planflow.infra.postgres.connection import to_pyformat
from planflow.infra.postgres.dialect import load_ts
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql.tables import TASK_STATES

TASKS = 1_000


def seed(url: str) -> list[str]:
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-async", "bench"))
        ids = [f"task-{i:04d}" for i in range(TASKS)]
        provider.tasks.bulk_upsert(
            TaskState(i, "t", "wf-async", "bench", input={"i": n}) for n, i in enumerate(ids)
        )
    return ids


Cycle = Callable[[str, int], Awaitable[None]]


async def drive(cycle: Cycle, ids: list[str], coroutines: int, cycles: int) -> tuple[float, list[float]]:
    """Run ``cycles`` get-then-update cycles from ``coroutines`` coroutines (each on ids of its own)."""
    latencies: list[float] = []
    per = cycles // coroutines

    async def worker(index: int) -> None:
        mine = ids[index::coroutines]
        for number in range(per):
            started = time.perf_counter()
            await cycle(mine[number % len(mine)], number)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(coroutines)))
    return time.perf_counter() - started, latencies


async def postgres(rounds: int, cycles: int) -> None:
    with postgres_schema() as url:
        ids = seed(url)
        provider = await open_async_provider({"url": url, "pool_max_size": 16, "pool_min_size": 16})

        async def configure(conn: AsyncConnection[TupleRow]) -> None:
            conn.adapters.register_loader("jsonb", TextLoader)

        pool: AsyncConnectionPool[AsyncConnection[TupleRow]] = AsyncConnectionPool(
            url, min_size=16, max_size=16, kwargs={"autocommit": True}, configure=configure, open=False
        )
        await pool.open(wait=True)
        get_sql, update_sql = to_pyformat(tasks_sql.GET), to_pyformat(tasks_sql.UPDATE_VERSIONED)
        token_sql = to_pyformat(with_token(tasks_sql.UPDATE_VERSIONED))

        async def planflow(task_exec_id: str, number: int) -> None:
            state = await provider.tasks.get_state(task_exec_id)
            await provider.tasks.update_state(state.evolve(output={"n": number}), state.version)

        async def raw_read(task_exec_id: str) -> TaskState:
            async with pool.connection() as conn:
                cursor = await conn.execute(get_sql, [task_exec_id])
                row = await cursor.fetchone()
            assert row is not None
            return TASK_STATES.from_row(row, load_ts)

        def update_params(state: TaskState, number: int) -> list[object]:
            values = TASK_STATES.params(state.evolve(output={"n": number}), _jsonb, lambda moment: moment)
            return tasks_sql.versioned_params(values, _now(), state.version)

        async def raw_same(task_exec_id: str, number: int) -> None:
            state = await raw_read(task_exec_id)
            async with pool.connection() as conn:
                cursor = await conn.execute(token_sql, [str(uuid.uuid4()), *update_params(state, number)])
                assert await cursor.fetchone() is not None

        async def raw_autocommit(task_exec_id: str, number: int) -> None:
            state = await raw_read(task_exec_id)
            async with pool.connection() as conn:
                cursor = await conn.execute(update_sql, update_params(state, number))
                assert await cursor.fetchone() is not None

        orm = await OrmAsync.open(url)
        variants: dict[str, Cycle] = {
            "planflow": planflow,
            "raw, same statements": raw_same,
            "raw, UPDATE in autocommit": raw_autocommit,
            "sqlalchemy asyncio": orm.cycle,
        }
        for coroutines in (1, 8, 64):
            n = cycles if coroutines > 1 else cycles // 4
            medians: dict[str, list[float]] = {name: [] for name in variants}
            lat: dict[str, list[float]] = {name: [] for name in variants}
            names = list(variants)
            for turn in range(rounds + 1):
                for name in names[turn % len(names) :] + names[: turn % len(names)]:
                    elapsed, latencies = await drive(variants[name], ids, coroutines, n)
                    if turn:
                        medians[name].append(n / elapsed)
                        lat[name] += latencies
            print(f"postgres, {coroutines} coroutine(s), {n} get+update cycles a round:")
            base = statistics.median(medians["planflow"])
            for name in names:
                rate = statistics.median(medians[name])
                ordered = sorted(lat[name])
                p50, p99 = statistics.median(ordered), ordered[int(0.99 * len(ordered))]
                print(
                    f"  {name:28} {rate:8.0f} cycles/s  p50 {p50 * 1000:6.2f} ms  p99 {p99 * 1000:6.2f} ms  "
                    f"planflow/this {base / rate:.2f}"
                )
        await orm.close()
        await pool.close()
        await provider.aclose()


def _jsonb(text: str) -> object:
    from planflow.infra.postgres.dialect import json_param

    return json_param(text)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


class OrmAsync:
    """SQLAlchemy 2.0 asyncio ORM sessions, written as its users write them (a session per operation)."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy.ext.asyncio import async_sessionmaker

        self._engine = engine
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @classmethod
    async def open(cls, url: str) -> OrmAsync:
        from urllib.parse import parse_qs, urlsplit

        from sqlalchemy.ext.asyncio import create_async_engine

        options = parse_qs(urlsplit(url).query).get("options", [""])[0]
        base = url.split("?", maxsplit=1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        return cls(create_async_engine(base, connect_args={"options": options}, pool_size=16))

    async def cycle(self, task_exec_id: str, number: int) -> None:
        from benchmarks.stores.orm import TaskRow

        async with self._sessions() as session:
            row = await session.get(TaskRow, task_exec_id)
            assert row is not None
            state = row.to_state()
        async with self._sessions.begin() as session:
            row = await session.get(TaskRow, task_exec_id)
            assert row is not None and row.version == state.version
            row.assign(state.evolve(output={"n": number}))

    async def close(self) -> None:
        await self._engine.dispose()


async def sqlite(operations: int) -> None:
    with sqlite_file() as path:
        url = f"sqlite:///{path}"
        ids = seed(url)
        blocking = open_provider(url)
        provider = await open_async_provider(url)

        def sync_gets() -> None:
            for number in range(operations):
                blocking.tasks.get_state(ids[number % TASKS])

        def sync_updates() -> None:
            for number in range(operations):
                state = blocking.tasks.get_state(ids[number % TASKS])
                blocking.tasks.update_state(state.evolve(output={"n": number}), state.version)

        async def async_gets(coroutines: int) -> None:
            async def worker(index: int) -> None:
                for number in range(index, operations, coroutines):
                    await provider.tasks.get_state(ids[number % TASKS])

            await asyncio.gather(*(worker(i) for i in range(coroutines)))

        async def async_updates(coroutines: int) -> None:
            async def worker(index: int) -> None:
                for number in range(index, operations, coroutines):
                    state = await provider.tasks.get_state(ids[number % TASKS])
                    await provider.tasks.update_state(state.evolve(output={"n": number}), state.version)

            await asyncio.gather(*(worker(i) for i in range(coroutines)))

        for label, sync_run, async_run in (
            ("get_state", sync_gets, async_gets),
            ("get_state + update_state", sync_updates, async_updates),
        ):
            started = time.perf_counter()
            sync_run()
            sync_time = time.perf_counter() - started
            for coroutines in (1, 8):
                started = time.perf_counter()
                await async_run(coroutines)
                async_time = time.perf_counter() - started
                print(
                    f"sqlite {operations} x {label}: async with {coroutines} coroutine(s) {async_time:.2f} s, sync "
                    f"{sync_time:.2f} s, async/sync {async_time / sync_time:.2f} (target <= 1.5)"
                )
        lags = await loop_lag(provider)
        print(
            f"sqlite: event-loop lag while 8 coroutines write: p50 {statistics.median(lags) * 1000:.2f} ms, "
            f"p99 {sorted(lags)[int(0.99 * len(lags))] * 1000:.2f} ms (target < 5 ms)"
        )
        floor = await hop_floor()
        print(
            f"a bare hop to a worker thread and back on this machine (the floor of any threaded call): {floor * 1e6:.0f} µs"
        )
        await provider.aclose()
        blocking.close()


async def loop_lag(provider: Any) -> list[float]:
    lags: list[float] = []
    stop = asyncio.Event()

    async def probe() -> None:
        while not stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - started - 0.001)

    async def writer(index: int) -> None:
        for number in range(150):
            await provider.tasks.upsert_state(TaskState(f"lag-{index}-{number}", "t", "wf-async", "bench"))

    ticker = asyncio.create_task(probe())
    await asyncio.gather(*(writer(i) for i in range(8)))
    stop.set()
    await ticker
    return lags


async def hop_floor() -> float:
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    for _ in range(2000):
        await loop.run_in_executor(None, int)
    return (time.perf_counter() - started) / 2000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.async_bench", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="fewer rounds and operations")
    parser.add_argument("--driver", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.driver in ("postgres", "all"):
        asyncio.run(postgres(rounds=2 if args.quick else 5, cycles=1_000 if args.quick else 4_000))
    if args.driver in ("sqlite", "all"):
        asyncio.run(sqlite(2_000 if args.quick else 10_000))
    print(f"took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
