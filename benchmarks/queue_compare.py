"""planflow's queue against pgqueuer and procrastinate (issue 27), on one PostgreSQL server, in one run.

    .venv/bin/pip install -e '.[bench-compare]'
    .venv/bin/python -m benchmarks.queue_compare            # small: 4 000 jobs a row, 200 trickled jobs
    .venv/bin/python -m benchmarks.queue_compare --jobs 20000 --trickle 1000   # the issue's size

Each system gets a fresh schema of the benchmark server (``PLANFLOW_BENCH_POSTGRES_URL``, else the test
server) and the server's default durability (``synchronous_commit`` as configured: the same for all three).
Each is driven as its documentation recommends, on asyncio and psycopg 3:

- planflow: ``open_async_provider``; enqueue by ``tasks.bulk_upsert`` (1 000 states a call); a worker is an
  asyncio task looping ``tasks.claim(limit=batch)``, then ``tasks.update_state(SUCCESS)`` per task, and
  ``tasks.wait_for_work`` when nothing is due.
- pgqueuer: ``Queries.enqueue`` with lists (1 000 jobs a call); a worker is a ``QueueManager`` on its own
  asyncpg connection (``AsyncpgDriver``, the driver of its documentation's examples; its ``PsycopgDriver``
  picked up a trickle 10x slower here), ``run(batch_size=batch, mode=drain)``; completions are
  buffered and written in batches by pgqueuer itself.
- procrastinate: ``Task.batch_defer_async`` (1 000 jobs a call); 8 workers are one worker with
  ``concurrency=8`` (``run_worker_async(wait=False)`` drains the queue), which fetches one job per call, so
  the batch-20 row does not apply to it.

Rows: enqueue throughput; claim + complete throughput of 8 workers at batch 1 and batch 20 (the jobs enqueued
before the clock starts, which stops when the system's own table shows no job queued or running: pgqueuer's
drain mode takes seconds more to notice an empty queue, which is not counted); 2 processes of 4 workers at
batch 1 (clocked the same way from a start signal given once both processes have connected); and the pick-up latency of a trickle (one job every 20 ms, one idle worker of each
system listening: the time from just before the enqueue call to the handler's first line). Each row runs the
three systems one after another, in an order rotated row by row; the machine is shared, so read the ratios of
one run rather than the absolute figures. ``planflow/best`` is planflow's figure over the best of the other
two (throughput: above 1 is better; latency: below 1 is better).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing.synchronize import Event
from typing import Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict

from benchmarks.compare import postgres_schema
from planflow import AsyncProvider, TaskFilter, TaskState, TaskStatus, WorkflowState, open_async_provider

ENQUEUE_BATCH = 1_000
TRICKLE_EVERY = 0.02
LEASE = 60.0


class System(Protocol):
    """One queue under test, in a schema of its own."""

    name: str

    async def setup(self) -> None: ...
    async def enqueue(self, jobs: int) -> None: ...
    async def drain(self, workers: int, batch: int) -> None: ...
    async def trickle(self, jobs: int) -> list[float]: ...
    async def close(self) -> None: ...


def chunks(total: int, size: int) -> list[range]:
    return [range(start, min(start + size, total)) for start in range(0, total, size)]


# planflow ------------------------------------------------------------------------------------------------------

WORKFLOW = "wf-bench"
WORK = TaskFilter(workflow_exec_id=WORKFLOW)


class Planflow:
    name = "planflow"

    def __init__(self, url: str) -> None:
        self.url = url
        self.serial = 0

    async def setup(self) -> None:
        self.provider: AsyncProvider = await open_async_provider(
            {"url": self.url, "pool_min_size": 8, "pool_max_size": 8}
        )
        await self.provider.workflows.upsert_state(
            WorkflowState(WORKFLOW, "bench", status=TaskStatus.RUNNING)
        )

    async def enqueue(self, jobs: int) -> None:
        for part in chunks(jobs, ENQUEUE_BATCH):
            await self.provider.tasks.bulk_upsert(self._job(i) for i in part)

    def _job(self, _: int, payload: float = 0.0) -> TaskState:
        self.serial += 1
        return TaskState(f"j{self.serial:08d}", "job", WORKFLOW, "bench", input={"at": payload})

    async def drain(self, workers: int, batch: int) -> None:
        await asyncio.gather(*(planflow_worker(self.provider, f"w{i}", batch) for i in range(workers)))

    async def trickle(self, jobs: int) -> list[float]:
        latencies: list[float] = []
        stop = asyncio.Event()

        async def worker() -> None:
            while not stop.is_set():
                claimed = await self.provider.tasks.claim(WORK, worker="listener", limit=1, lease=LEASE)
                if not claimed:
                    await self.provider.tasks.wait_for_work(WORK, timeout=0.5)
                    continue
                for state in claimed:
                    assert state.input is not None
                    latencies.append(time.time() - float(str(state.input["at"])))
                    await self.provider.tasks.update_state(
                        state.evolve(status=TaskStatus.SUCCESS), state.version
                    )

        running = asyncio.create_task(worker())
        await asyncio.sleep(0.5)
        for _ in range(jobs):
            await self.provider.tasks.upsert_state(self._job(0, time.time()))
            await asyncio.sleep(TRICKLE_EVERY)
        while len(latencies) < jobs:
            await asyncio.sleep(0.01)
        stop.set()
        await running
        return latencies

    async def close(self) -> None:
        await self.provider.aclose()


async def planflow_worker(provider: AsyncProvider, worker: str, batch: int) -> None:
    pending = TaskFilter(workflow_exec_id=WORKFLOW, status=TaskStatus.PENDING)
    while True:
        claimed = await provider.tasks.claim(WORK, worker=worker, limit=batch, lease=LEASE)
        if not claimed:
            if await provider.tasks.count_states(pending) == 0:
                return
            await provider.tasks.wait_for_work(WORK, timeout=0.1)
            continue
        for state in claimed:
            await provider.tasks.update_state(state.evolve(status=TaskStatus.SUCCESS), state.version)


# pgqueuer ------------------------------------------------------------------------------------------------------


async def asyncpg_connect(url: str) -> Any:
    """An asyncpg connection (pgqueuer's documented driver) to the schema ``url`` selects by its options."""
    import asyncpg

    info = conninfo_to_dict(url)
    settings: dict[str, str] = {}
    options = str(info.pop("options", ""))
    if options.startswith("-c"):
        name, value = options[2:].split("=", 1)
        settings[name] = value
    return await asyncpg.connect(
        host=str(info.get("host", "127.0.0.1")),
        port=int(str(info.get("port", 5432))),
        user=str(info.get("user", "postgres")),
        database=str(info.get("dbname", "postgres")),
        server_settings=settings,
    )


class PgQueuer:
    name = "pgqueuer"

    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        self.conn = await asyncpg_connect(self.url)
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()

    async def enqueue(self, jobs: int) -> None:
        for part in chunks(jobs, ENQUEUE_BATCH):
            await self.queries.enqueue(["job"] * len(part), [b"0"] * len(part), [0] * len(part))

    async def drain(self, workers: int, batch: int) -> None:
        await pgqueuer_drain(self.url, workers, batch)

    async def trickle(self, jobs: int) -> list[float]:
        from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

        latencies: list[float] = []
        conn = await asyncpg_connect(self.url)
        manager = QueueManager(Queries(AsyncpgDriver(conn)))

        @manager.entrypoint("job")
        async def job(job: Job) -> None:  # pyright: ignore[reportUnusedFunction]
            latencies.append(time.time() - float(job.payload or b"0"))
            if len(latencies) >= jobs:
                manager.shutdown.set()

        running = asyncio.create_task(manager.run(batch_size=1))
        await asyncio.sleep(0.5)
        for _ in range(jobs):
            await self.queries.enqueue("job", str(time.time()).encode())
            await asyncio.sleep(TRICKLE_EVERY)
        await running
        await conn.close()
        return latencies

    async def close(self) -> None:
        await self.conn.close()


async def pgqueuer_drain(
    url: str, workers: int, batch: int, ready: Callable[[], Awaitable[None]] | None = None
) -> None:
    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
    from pgqueuer.types import QueueExecutionMode

    conns = [await asyncpg_connect(url) for _ in range(workers)]
    managers = [QueueManager(Queries(AsyncpgDriver(conn))) for conn in conns]
    for manager in managers:

        @manager.entrypoint("job")
        async def job(job: Job) -> None:  # pyright: ignore[reportUnusedFunction]
            pass

    if ready is not None:
        await ready()
    await asyncio.gather(
        *(
            m.run(batch_size=batch, mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))
            for m in managers
        )
    )
    for conn in conns:
        await conn.close()


# procrastinate -------------------------------------------------------------------------------------------------


def procrastinate_app(url: str, pool: int) -> Any:
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=pool))

    @app.task(name="job")
    async def job(at: float) -> None:  # pyright: ignore[reportUnusedFunction]
        if at:
            app.latencies.append(time.time() - at)  # pyright: ignore[reportAttributeAccessIssue]

    app.latencies = []  # pyright: ignore[reportAttributeAccessIssue]
    return app


class Procrastinate:
    name = "procrastinate"

    def __init__(self, url: str) -> None:
        self.url = url

    async def setup(self) -> None:
        self.app = procrastinate_app(self.url, 10)
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def enqueue(self, jobs: int) -> None:
        for part in chunks(jobs, ENQUEUE_BATCH):
            await self.app.tasks["job"].batch_defer_async(*({"at": 0.0} for _ in part))

    async def drain(self, workers: int, batch: int) -> None:
        await self.app.run_worker_async(
            concurrency=workers, wait=False, install_signal_handlers=False, fetch_job_polling_interval=0.1
        )

    async def trickle(self, jobs: int) -> list[float]:
        self.app.latencies = []
        running = asyncio.create_task(
            self.app.run_worker_async(concurrency=1, wait=True, install_signal_handlers=False)
        )
        await asyncio.sleep(0.5)
        for _ in range(jobs):
            await self.app.tasks["job"].defer_async(at=time.time())
            await asyncio.sleep(TRICKLE_EVERY)
        while len(self.app.latencies) < jobs:
            await asyncio.sleep(0.01)
        running.cancel()
        with suppress(asyncio.CancelledError):
            await running
        return list(self.app.latencies)

    async def close(self) -> None:
        await self.app.close_async()


# two processes -------------------------------------------------------------------------------------------------


def process_worker(system: str, url: str, workers: int, connected: Event, go: Event) -> None:
    async def ready() -> None:
        connected.set()
        await asyncio.to_thread(go.wait, 60)

    async def main() -> None:
        if system == "planflow":
            async with open_async_provider(
                {"url": url, "pool_min_size": workers, "pool_max_size": workers}
            ) as provider:
                await ready()
                await asyncio.gather(*(planflow_worker(provider, f"w{i}", 1) for i in range(workers)))
        elif system == "pgqueuer":
            await pgqueuer_drain(url, workers, 1, ready)
        else:
            app = procrastinate_app(url, workers + 2)
            async with app.open_async():
                await ready()
                await app.run_worker_async(
                    concurrency=workers,
                    wait=False,
                    install_signal_handlers=False,
                    fetch_job_polling_interval=0.1,
                )

    asyncio.run(main())


def start_processes(
    system: str, url: str, workers: int
) -> tuple[list[multiprocessing.process.BaseProcess], Event]:
    """Two worker processes of ``system``, connected and waiting for the returned event."""
    context = multiprocessing.get_context("spawn")
    connected = [context.Event() for _ in range(2)]
    go = context.Event()
    processes: list[multiprocessing.process.BaseProcess] = [
        context.Process(target=process_worker, args=(system, url, workers, connected[p], go))
        for p in range(2)
    ]
    for process in processes:
        process.start()
    for event in connected:
        if not event.wait(60):
            raise RuntimeError(f"a {system} worker process did not connect")
    return processes, go


def join_processes(system: str, processes: list[multiprocessing.process.BaseProcess]) -> None:
    for process in processes:
        process.join(300)
    if [p.exitcode for p in processes] != [0, 0]:
        raise RuntimeError(f"{system} worker processes exited with {[p.exitcode for p in processes]}")


# the run -------------------------------------------------------------------------------------------------------


@dataclass
class Row:
    title: str
    unit: str
    higher_is_better: bool
    figures: dict[str, float | None]


async def remaining(system: System, url: str) -> int:
    """Jobs not yet finished, read from the system's own tables (a drain must leave none)."""
    queries = {
        "planflow": "SELECT count(*) FROM task_states WHERE status IN ('PENDING', 'RUNNING')",
        "pgqueuer": "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')",
        "procrastinate": "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')",
    }
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(queries[system.name])
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def until_done(system: System, url: str, started: float) -> float:
    """Seconds from ``started`` until the system's tables show no job queued or running (polled every 5 ms):
    the workers' own shutdown (pgqueuer's drain mode takes seconds to notice an empty queue) is not counted."""
    while await remaining(system, url):
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def run(jobs: int, trickle: int) -> list[Row]:
    with ExitStack() as stack:
        urls = {
            name: stack.enter_context(postgres_schema()) for name in ("planflow", "pgqueuer", "procrastinate")
        }
        systems: list[System] = [
            Planflow(urls["planflow"]),
            PgQueuer(urls["pgqueuer"]),
            Procrastinate(urls["procrastinate"]),
        ]
        for system in systems:
            await system.setup()
        rows: list[Row] = []
        turn = 0

        def order() -> list[System]:
            nonlocal turn
            turn += 1
            return systems[turn % 3 :] + systems[: turn % 3]

        async def timed(title: str, unit: str, measure: Callable[[System], Awaitable[float | None]]) -> None:
            figures: dict[str, float | None] = {}
            for system in order():
                figures[system.name] = await measure(system)
                assert await remaining(system, urls[system.name]) == 0, f"{system.name} left jobs: {title}"
            rows.append(Row(title, unit, True, figures))
            print(f"  {title}: " + ", ".join(f"{k} {v:,.0f}" for k, v in figures.items() if v is not None))

        async def enqueue(system: System) -> float:
            started = time.perf_counter()
            await system.enqueue(jobs)
            elapsed = time.perf_counter() - started
            await system.drain(8, 20)  # not timed: leaves the queue empty for the next row
            return jobs / elapsed

        def drain(batch: int) -> Callable[[System], Awaitable[float | None]]:
            async def measure(system: System) -> float | None:
                if batch > 1 and system.name == "procrastinate":
                    return None
                await system.enqueue(jobs)
                started = time.perf_counter()
                draining = asyncio.create_task(system.drain(8, batch))
                elapsed = await until_done(system, urls[system.name], started)
                await draining
                return jobs / elapsed

            return measure

        async def processes(system: System) -> float:
            await system.enqueue(jobs)
            workers, go = await asyncio.to_thread(start_processes, system.name, urls[system.name], 4)
            started = time.perf_counter()
            go.set()
            elapsed = await until_done(system, urls[system.name], started)
            await asyncio.to_thread(join_processes, system.name, workers)
            return jobs / elapsed

        await timed("enqueue", "jobs/s", enqueue)
        await timed("claim + complete, 8 workers, batch 1", "jobs/s", drain(1))
        await timed("claim + complete, 8 workers, batch 20", "jobs/s", drain(20))
        await timed("2 processes x 4 workers, batch 1", "jobs/s", processes)

        p50: dict[str, float | None] = {}
        p99: dict[str, float | None] = {}
        for system in order():
            latencies = sorted(await system.trickle(trickle))
            p50[system.name] = statistics.median(latencies) * 1000
            p99[system.name] = statistics.quantiles(latencies, n=100)[98] * 1000
            print(f"  trickle {system.name}: p50 {p50[system.name]:.1f} ms, p99 {p99[system.name]:.1f} ms")
        rows.append(Row("trickle pick-up p50", "ms", False, p50))
        rows.append(Row("trickle pick-up p99", "ms", False, p99))
        for system in systems:
            await system.close()
        return rows


def report(rows: list[Row], jobs: int, trickle: int) -> str:
    def cell(value: float | None, unit: str) -> str:
        if value is None:
            return "n/a"
        return f"{value:,.1f}" if unit == "ms" else f"{value:,.0f}"

    lines = [
        f"{jobs:,} jobs a row, {trickle} trickled jobs; PostgreSQL on one shared machine (ratios of one run)",
        "",
        "| | planflow | pgqueuer | procrastinate | planflow / best |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        others = [v for k, v in row.figures.items() if k != "planflow" and v is not None]
        best = max(others) if row.higher_is_better else min(others)
        mine = row.figures["planflow"]
        assert mine is not None
        lines.append(
            f"| {row.title}, {row.unit} | {cell(mine, row.unit)} | {cell(row.figures['pgqueuer'], row.unit)} | "
            f"{cell(row.figures['procrastinate'], row.unit)} | {mine / best:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=4_000, help="jobs per throughput row (default 4 000)")
    parser.add_argument("--trickle", type=int, default=200, help="jobs trickled for the latency rows")
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    rows = asyncio.run(run(args.jobs, args.trickle))
    print()
    print(report(rows, args.jobs, args.trickle))
    if args.json:
        print(json.dumps([row.__dict__ for row in rows]))


if __name__ == "__main__":
    main()
