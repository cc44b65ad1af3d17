"""The hot calls, one at a time, against the raw drivers running the same statements (issues 25 and 26).

    .venv/bin/python -m benchmarks.hot_calls [--driver sqlite|postgres|all] [--calls 300] [--rounds 7]
        [--clock wall|cpu]

Per call: ``get_state``, ``update_state(state, version)``, ``upsert_state`` of a new task, ``merge_usage``,
``claim(limit=1)`` and ``claim(limit=50)`` filtered by workflow, ``heartbeat`` of one task. Variants, each on a
store of its own with the same rows, interleaved round by round (rotated order), medians of the rounds:

- ``planflow``: the synchronous API.
- ``raw``: hand-written ``sqlite3`` / psycopg code running planflow's statements, rows mapped to the same
  ``TaskState`` objects, without planflow's checks, retries and error translation. SQLite in WAL mode with
  ``synchronous=NORMAL`` and SQLite's defaults otherwise (its own checkpoints, no journal size limit); PostgreSQL
  the bare statement in autocommit (no commit token: what planflow adds to learn a lost COMMIT's outcome is part
  of what is measured), ``merge_usage`` as BEGIN, the locking read, the update and COMMIT.
- ``planflow async`` and ``raw async``: the asynchronous API against ``aiosqlite`` / psycopg's
  ``AsyncConnectionPool`` running the same statements, awaited one after the other.

Targets (issue 26): planflow/raw <= 1.15 for every call, sync; async SQLite at least 0.5x sync on ``get_state``
and 2x aiosqlite; async PostgreSQL at least 0.9x a hand-written pool.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Json
from psycopg.types.string import TextLoader
from psycopg_pool import AsyncConnectionPool

from benchmarks.compare import postgres_schema, sqlite_file
from benchmarks.stores.rawcodec import (
    dumps,
    state_from_row,
    usage_from_items,
    usage_items,
    usage_text,
    values,
)
from planflow import (
    TaskFilter,
    TaskState,
    TaskStatus,
    UsageEntry,
    UsageSummary,
    WorkflowState,
    open_async_provider,
    open_provider,
)
from planflow.infra.postgres.connection import to_pyformat
from planflow.infra.postgres.dialect import POSTGRES
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sqlite.dialect import SQLITE

CALLS = ("get_state", "update_state", "upsert_state", "merge_usage", "claim(1)", "claim(50)", "heartbeat")
TASKS = 2_000
CLAIMABLE = 60
ONE = UsageSummary((UsageEntry("openai", "gpt-4o", "task", 10, 5, 15),))
LEASE = 30.0
WORK = TaskFilter(workflow_exec_id="wf-claims")


def seed(url: str) -> None:
    """The rows every variant starts from: tasks to read and update, pending tasks to claim."""
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-hot", "bench"))
        provider.workflows.upsert_state(WorkflowState("wf-claims", "bench"))
        provider.tasks.bulk_upsert(
            TaskState(f"task-{i:05d}", "t", "wf-hot", "bench", input={"i": i}, usage=ONE)
            for i in range(TASKS)
        )


def reset_claims(url: str, count: int) -> None:
    """``count`` pending tasks to claim (untimed, before each round)."""
    with open_provider(url) as provider:
        provider.tasks.bulk_upsert(
            TaskState(f"claim-{i:05d}", "c", "wf-claims", "bench", status=TaskStatus.PENDING)
            for i in range(count)
        )


@dataclass
class Caller:
    """One variant's calls on its own store: each ``calls[name](i)`` makes call number ``i`` of its kind."""

    calls: dict[str, Callable[[int], object]]
    close: Callable[[], None]
    versions: dict[str, int] = field(default_factory=dict[str, int])


def planflow_sync(url: str) -> Caller:
    provider = open_provider(url)
    states = {
        s.task_exec_id: s
        for s in provider.tasks.list_states(TaskFilter(workflow_exec_id="wf-hot"), limit=TASKS).items
    }
    held: list[str] = []
    run = uuid.uuid4().hex[:6]

    def update(i: int) -> object:
        state = states[f"task-{i % TASKS:05d}"]
        states[state.task_exec_id] = stored = provider.tasks.update_state(
            state.evolve(output={"n": i}), state.version
        )
        return stored

    def claim(limit: int) -> Callable[[int], object]:
        def call(_: int) -> object:
            claimed = provider.tasks.claim(WORK, worker="bench", limit=limit, lease=LEASE)
            held[:] = [c.task_exec_id for c in claimed[:1]] or held
            return claimed

        return call

    return Caller(
        {
            "get_state": lambda i: provider.tasks.get_state(f"task-{i % TASKS:05d}"),
            "update_state": update,
            "upsert_state": lambda i: provider.tasks.upsert_state(
                TaskState(f"new-{run}-{i}", "n", "wf-hot", "bench")
            ),
            "merge_usage": lambda i: provider.tasks.merge_usage(f"task-{i % TASKS:05d}", ONE),
            "claim(1)": claim(1),
            "claim(50)": claim(50),
            "heartbeat": lambda i: provider.tasks.heartbeat(
                held[:1] or ["claim-00000"], worker="bench", lease=LEASE
            ),
        },
        provider.close,
    )


class RawStatements:
    """planflow's statements for one dialect, as the raw variants send them."""

    def __init__(self, dialect: Dialect, text: Callable[[str], Any]) -> None:
        where = " AND workflow_exec_id = ?"
        self.get = text(tasks_sql.GET)
        self.update_in_place = text(tasks_sql.update_in_place_sql(dialect)) if dialect.split_update else None
        self.update = text(tasks_sql.UPDATE_VERSIONED)
        self.upsert = text(tasks_sql.UPSERT_RETURNING)
        self.select_usage = text(f"SELECT usage FROM task_states WHERE task_exec_id = ?{dialect.for_update}")
        self.update_usage = text(
            "UPDATE task_states SET usage = ?, version = version + 1, updated_at = ? WHERE task_exec_id = ?"
        )
        self.claim = text(tasks_sql.claim_sql(where, dialect))
        self.heartbeat = text(tasks_sql.heartbeat_sql(dialect))
        self.dialect = dialect

    def claim_params(self, limit: int) -> list[object]:
        return tasks_sql.claim_params(
            self.dialect, ["wf-claims"], limit=limit, worker="bench", lease=LEASE, stamp=datetime.now(UTC)
        )


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def raw_sqlite(path: str) -> Caller:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, cached_statements=512)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA busy_timeout = 5000")
    sql = RawStatements(SQLITE, str)
    load = datetime.fromisoformat
    versions: dict[str, int] = {}
    held: list[str] = []
    run = uuid.uuid4().hex[:6]

    def get(i: int) -> object:
        return state_from_row(conn.execute(sql.get, [f"task-{i % TASKS:05d}"]).fetchone(), load)

    def update(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        state = versions.get(key)
        current = get(i) if state is None else None
        version = state if state is not None else current.version  # type: ignore[union-attr]
        given = TaskState(key, "t", "wf-hot", "bench", input={"i": i % TASKS}, output={"n": i}, usage=ONE)
        row_values = values(given, lambda v: None if v is None else dumps(v), usage_text, _iso)
        stamp = _iso(datetime.now(UTC))
        assert sql.update_in_place is not None
        rows = conn.execute(
            sql.update_in_place, tasks_sql.in_place_params(row_values, stamp, version)
        ).fetchall()
        if not rows:
            rows = conn.execute(sql.update, tasks_sql.versioned_params(row_values, stamp, version)).fetchall()
        versions[key] = rows[0][0]
        return given.evolve(version=rows[0][0], created_at=load(rows[0][1]), updated_at=load(stamp))

    def upsert(i: int) -> object:
        given = TaskState(f"new-{run}-{i}", "n", "wf-hot", "bench")
        stamp = _iso(datetime.now(UTC))
        row_values = values(given, lambda v: None if v is None else dumps(v), usage_text, _iso)
        row = conn.execute(sql.upsert, [*row_values, stamp, stamp]).fetchall()[0]
        return given.evolve(version=row[0], created_at=load(row[1]), updated_at=load(stamp))

    def merge(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute(sql.select_usage, [key]).fetchone()
            merged = (usage_from_items(None if row[0] is None else _loads(row[0])) or UsageSummary()).merge(
                ONE
            )
            conn.execute(sql.update_usage, [dumps(usage_items(merged)), _iso(datetime.now(UTC)), key])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return merged

    def claim(limit: int) -> Callable[[int], object]:
        def call(_: int) -> object:
            rows = conn.execute(sql.claim, sql.claim_params(limit)).fetchall()
            claimed = sorted(
                (state_from_row(r, load) for r in rows), key=lambda s: (s.created_at, s.task_exec_id)
            )
            held[:] = [c.task_exec_id for c in claimed[:1]] or held
            return claimed

        return call

    def beat(_: int) -> object:
        ids = held[:1] or ["claim-00000"]
        return conn.execute(
            sql.heartbeat, [*SQLITE.at_params(LEASE), SQLITE.ids_param(ids), "bench"]
        ).fetchall()

    return Caller(
        {
            "get_state": get,
            "update_state": update,
            "upsert_state": upsert,
            "merge_usage": merge,
            "claim(1)": claim(1),
            "claim(50)": claim(50),
            "heartbeat": beat,
        },
        conn.close,
    )


def _loads(text: str) -> Any:
    import json

    return json.loads(text)


def raw_postgres(url: str) -> Caller:
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET TimeZone = 'UTC'")
    conn.adapters.register_loader("json", TextLoader)
    conn.adapters.register_loader("jsonb", TextLoader)
    sql = RawStatements(POSTGRES, to_pyformat)
    versions: dict[str, int] = {}
    held: list[str] = []
    run = uuid.uuid4().hex[:6]
    load = _as_utc

    def get(i: int) -> object:
        return state_from_row(conn.execute(sql.get, [f"task-{i % TASKS:05d}"]).fetchone(), load)  # type: ignore[arg-type]

    def jsonb(value: object) -> object:
        return None if value is None else Json(value, dumps=dumps)

    def update(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        version = versions.get(key)
        if version is None:
            version = get(i).version  # type: ignore[attr-defined]
        given = TaskState(key, "t", "wf-hot", "bench", input={"i": i % TASKS}, output={"n": i}, usage=ONE)
        row_values = values(given, jsonb, lambda u: jsonb(usage_items(u)), lambda m: m)
        stamp = datetime.now(UTC)
        row = conn.execute(sql.update, tasks_sql.versioned_params(row_values, stamp, version)).fetchone()
        assert row is not None
        versions[key] = row[0]
        return given.evolve(version=row[0], created_at=load(row[1]), updated_at=stamp)

    def upsert(i: int) -> object:
        given = TaskState(f"new-{run}-{i}", "n", "wf-hot", "bench")
        stamp = datetime.now(UTC)
        row_values = values(given, jsonb, lambda u: jsonb(usage_items(u)), lambda m: m)
        row = conn.execute(sql.upsert, [*row_values, stamp, stamp]).fetchone()
        assert row is not None
        return given.evolve(version=row[0], created_at=load(row[1]), updated_at=stamp)

    def merge(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        with conn.transaction():
            row = conn.execute(sql.select_usage, [key]).fetchone()
            assert row is not None
            merged = (usage_from_items(None if row[0] is None else _loads(row[0])) or UsageSummary()).merge(
                ONE
            )
            conn.execute(sql.update_usage, [jsonb(usage_items(merged)), datetime.now(UTC), key])
        return merged

    def claim(limit: int) -> Callable[[int], object]:
        def call(_: int) -> object:
            rows = conn.execute(sql.claim, sql.claim_params(limit)).fetchall()
            claimed = sorted(
                (state_from_row(r, load) for r in rows), key=lambda s: (s.created_at, s.task_exec_id)
            )
            held[:] = [c.task_exec_id for c in claimed[:1]] or held
            return claimed

        return call

    def beat(_: int) -> object:
        ids = held[:1] or ["claim-00000"]
        return conn.execute(sql.heartbeat, [*POSTGRES.at_params(LEASE), ids, "bench"]).fetchall()

    return Caller(
        {
            "get_state": get,
            "update_state": update,
            "upsert_state": upsert,
            "merge_usage": merge,
            "claim(1)": claim(1),
            "claim(50)": claim(50),
            "heartbeat": beat,
        },
        conn.close,
    )


def _as_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


# Asynchronous variants: each call awaited on one event loop, one after the other -------------------------


@dataclass
class AsyncCaller:
    calls: dict[str, Callable[[int], Awaitable[object]]]
    close: Callable[[], Awaitable[None]]


async def planflow_async(url: str) -> AsyncCaller:
    provider = await open_async_provider(url)
    page = await provider.tasks.list_states(TaskFilter(workflow_exec_id="wf-hot"), limit=TASKS)
    states = {s.task_exec_id: s for s in page.items}
    run = uuid.uuid4().hex[:6]

    async def update(i: int) -> object:
        state = states[f"task-{i % TASKS:05d}"]
        stored = await provider.tasks.update_state(state.evolve(output={"n": i}), state.version)
        states[state.task_exec_id] = stored
        return stored

    return AsyncCaller(
        {
            "get_state": lambda i: provider.tasks.get_state(f"task-{i % TASKS:05d}"),
            "update_state": update,
            "upsert_state": lambda i: provider.tasks.upsert_state(
                TaskState(f"anew-{run}-{i}", "n", "wf-hot", "bench")
            ),
            "merge_usage": lambda i: provider.tasks.merge_usage(f"task-{i % TASKS:05d}", ONE),
        },
        provider.aclose,
    )


async def raw_aiosqlite(path: str) -> AsyncCaller:
    import aiosqlite

    conn = await aiosqlite.connect(path, isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "foreign_keys = ON", "busy_timeout = 5000"):
        await conn.execute(f"PRAGMA {pragma}")
    sql = RawStatements(SQLITE, str)
    load = datetime.fromisoformat
    versions: dict[str, int] = {}
    run = uuid.uuid4().hex[:6]

    async def get(i: int) -> object:
        async with conn.execute(sql.get, [f"task-{i % TASKS:05d}"]) as cursor:
            row = await cursor.fetchone()
        return state_from_row(row, load)  # type: ignore[arg-type]

    async def update(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        version = versions.get(key)
        if version is None:
            version = (await get(i)).version  # type: ignore[attr-defined]
        given = TaskState(key, "t", "wf-hot", "bench", input={"i": i % TASKS}, output={"n": i}, usage=ONE)
        row_values = values(given, lambda v: None if v is None else dumps(v), usage_text, _iso)
        stamp = _iso(datetime.now(UTC))
        assert sql.update_in_place is not None
        rows = list(
            await conn.execute_fetchall(
                sql.update_in_place, tasks_sql.in_place_params(row_values, stamp, version)
            )
        )
        if not rows:
            rows = list(
                await conn.execute_fetchall(
                    sql.update, tasks_sql.versioned_params(row_values, stamp, version)
                )
            )
        versions[key] = rows[0][0]
        return given.evolve(version=rows[0][0], created_at=load(rows[0][1]), updated_at=load(stamp))

    async def upsert(i: int) -> object:
        given = TaskState(f"anew-{run}-{i}", "n", "wf-hot", "bench")
        stamp = _iso(datetime.now(UTC))
        row_values = values(given, lambda v: None if v is None else dumps(v), usage_text, _iso)
        rows = list(await conn.execute_fetchall(sql.upsert, [*row_values, stamp, stamp]))
        return given.evolve(version=rows[0][0], created_at=load(rows[0][1]), updated_at=load(stamp))

    async def merge(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        await conn.execute("BEGIN IMMEDIATE")
        try:
            rows = list(await conn.execute_fetchall(sql.select_usage, [key]))
            merged = (usage_from_items(_loads(rows[0][0])) or UsageSummary()).merge(ONE)
            await conn.execute(sql.update_usage, [dumps(usage_items(merged)), _iso(datetime.now(UTC)), key])
        except BaseException:
            await conn.execute("ROLLBACK")
            raise
        await conn.execute("COMMIT")
        return merged

    return AsyncCaller(
        {"get_state": get, "update_state": update, "upsert_state": upsert, "merge_usage": merge}, conn.close
    )


async def raw_async_postgres(url: str) -> AsyncCaller:
    async def configure(conn: Any) -> None:
        conn.adapters.register_loader("json", TextLoader)
        conn.adapters.register_loader("jsonb", TextLoader)
        await conn.execute("SET TimeZone = 'UTC'")

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        url,
        min_size=1,
        max_size=4,
        kwargs={"autocommit": True},
        configure=configure,
        open=False,
    )
    await pool.open(wait=True)
    sql = RawStatements(POSTGRES, to_pyformat)
    versions: dict[str, int] = {}
    run = uuid.uuid4().hex[:6]

    def jsonb(value: object) -> object:
        return None if value is None else Json(value, dumps=dumps)

    async def get(i: int) -> object:
        async with pool.connection() as conn:
            cursor = await conn.execute(sql.get, [f"task-{i % TASKS:05d}"])
            row = await cursor.fetchone()
        return state_from_row(row, _as_utc)

    async def update(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        version = versions.get(key)
        if version is None:
            version = (await get(i)).version  # type: ignore[attr-defined]
        given = TaskState(key, "t", "wf-hot", "bench", input={"i": i % TASKS}, output={"n": i}, usage=ONE)
        row_values = values(given, jsonb, lambda u: jsonb(usage_items(u)), lambda m: m)
        stamp = datetime.now(UTC)
        async with pool.connection() as conn:
            cursor = await conn.execute(sql.update, tasks_sql.versioned_params(row_values, stamp, version))
            row = await cursor.fetchone()
        versions[key] = row[0]
        return given.evolve(version=row[0], created_at=_as_utc(row[1]), updated_at=stamp)

    async def upsert(i: int) -> object:
        given = TaskState(f"anew-{run}-{i}", "n", "wf-hot", "bench")
        stamp = datetime.now(UTC)
        row_values = values(given, jsonb, lambda u: jsonb(usage_items(u)), lambda m: m)
        async with pool.connection() as conn:
            cursor = await conn.execute(sql.upsert, [*row_values, stamp, stamp])
            row = await cursor.fetchone()
        return given.evolve(version=row[0], created_at=_as_utc(row[1]), updated_at=stamp)

    async def merge(i: int) -> object:
        key = f"task-{i % TASKS:05d}"
        async with pool.connection() as conn, conn.transaction():
            cursor = await conn.execute(sql.select_usage, [key])
            row = await cursor.fetchone()
            merged = (usage_from_items(_loads(row[0])) or UsageSummary()).merge(ONE)
            await conn.execute(sql.update_usage, [jsonb(usage_items(merged)), datetime.now(UTC), key])
        return merged

    return AsyncCaller(
        {"get_state": get, "update_state": update, "upsert_state": upsert, "merge_usage": merge}, pool.close
    )


# The run ---------------------------------------------------------------------------------------------------


@contextmanager
def stores(driver: str, count: int) -> Iterator[list[str]]:
    """``count`` seeded stores of ``driver`` (URLs), removed afterwards."""
    places: list[AbstractContextManager[str]] = [
        postgres_schema() if driver == "postgres" else sqlite_file() for _ in range(count)
    ]
    urls = [place.__enter__() for place in places]
    urls = [url if "://" in url else f"sqlite:///{url}" for url in urls]
    try:
        for url in urls:
            seed(url)
        yield urls
    finally:
        for place in places:
            place.__exit__(None, None, None)


def measure(
    driver: str, calls: int, rounds: int, clock: Callable[[], float] = time.perf_counter
) -> dict[str, dict[str, float]]:
    """Median microseconds per call, by call and variant."""
    with stores(driver, 4) as (pf_url, raw_url, apf_url, araw_url):
        path = raw_url.removeprefix("sqlite:///")
        callers = {
            "planflow": planflow_sync(pf_url),
            "raw": raw_sqlite(path) if driver == "sqlite" else raw_postgres(raw_url),
        }
        claims = {"planflow": pf_url, "raw": raw_url}
        loop = asyncio.new_event_loop()
        async_callers = {
            "planflow async": loop.run_until_complete(planflow_async(apf_url)),
            "raw async": loop.run_until_complete(
                raw_aiosqlite(araw_url.removeprefix("sqlite:///"))
                if driver == "sqlite"
                else raw_async_postgres(araw_url)
            ),
        }
        medians: dict[str, dict[str, float]] = {}
        try:
            for name in CALLS:
                samples: dict[str, list[float]] = {}
                variants = [*callers, *(v for v in async_callers if name in async_callers[v].calls)]
                for turn in range(rounds + 1):
                    order = variants[turn % len(variants) :] + variants[: turn % len(variants)]
                    for variant in order:
                        if name.startswith("claim") or name == "heartbeat":
                            reset_claims(claims[variant], CLAIMABLE if name != "claim(50)" else 50 * calls)
                        started = clock()
                        if variant in callers:
                            call = callers[variant].calls[name]
                            for i in range(calls):
                                call(turn * calls + i)
                        else:
                            acall = async_callers[variant].calls[name]

                            async def many(
                                acall: Callable[[int], Awaitable[object]] = acall, turn: int = turn
                            ) -> None:
                                for i in range(calls):
                                    await acall(turn * calls + i)

                            loop.run_until_complete(many())
                        if turn:
                            samples.setdefault(variant, []).append((clock() - started) / calls)
                medians[name] = {
                    variant: statistics.median(values) * 1e6 for variant, values in samples.items()
                }
                print(line(driver, name, medians[name]), flush=True)
        finally:
            for caller in callers.values():
                caller.close()
            for acaller in async_callers.values():
                loop.run_until_complete(acaller.close())
            loop.close()
    return medians


def line(driver: str, name: str, medians: dict[str, float]) -> str:
    shown = "  ".join(f"{variant} {value:7.1f} µs" for variant, value in medians.items())
    ratio = medians["planflow"] / medians["raw"]
    extra = ""
    if "planflow async" in medians:
        extra = (
            f"  async/raw async {medians['planflow async'] / medians['raw async']:.2f}"
            f"  async/sync {medians['planflow'] / medians['planflow async']:.2f}x speed"
        )
    return f"{driver:8} {name:13} {shown}  planflow/raw {ratio:.2f}{extra}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--driver", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--calls", type=int, default=300, help="calls of each kind per round")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--clock",
        choices=["wall", "cpu"],
        default="wall",
        help="cpu: this process's CPU time (all its threads), which other processes on a busy machine disturb "
        "less; it leaves out time spent waiting (a PostgreSQL server's work, fsync, a lock)",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    for driver in ("sqlite", "postgres") if args.driver == "all" else (args.driver,):
        measure(driver, args.calls, args.rounds, clock)


if __name__ == "__main__":
    main()
