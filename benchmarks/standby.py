"""Reads on standbys (issue 31): what read-your-writes costs a write, and what a standby takes off a primary.

    .venv/bin/python benchmarks/standby.py cost [--calls 2000] [--rounds 7] [--private]
    .venv/bin/python -m benchmarks.standby capacity [--seconds 5] [--threads 8]   # from the checkout's root

``cost``: ``update_state(state, version)`` one call at a time on the shared server
(``$PLANFLOW_BENCH_POSTGRES_URL``, else ``$PLANFLOW_TEST_POSTGRES_URL``, else
``postgresql://postgres@127.0.0.1:5432/test``), each variant in a schema of its own, interleaved round by round
(rotated order), median microseconds per call of the rounds (wall clock, and this process's CPU time: the client's own work,
which the load of a shared machine disturbs less) (``--private``: on a private server without fsync
instead, so that the disk of a shared machine does not drown the difference): without ``read_url``, and with ``read_url`` naming
the same server (each write then also reads the primary's WAL position for read-your-writes). Run it from
another checkout to compare versions (``PYTHONPATH=/path/to/checkout .venv/bin/python benchmarks/standby.py
cost``, run as a file so that the checkout's ``planflow`` is imported): a version without ``read_url`` runs
the first variant only.

``capacity``: a private primary and a streaming standby (``tests/faults/cluster.py``, created in a temporary
directory and removed after; both on this machine), ``--threads`` threads for ``--seconds`` each: claims per
second (``claim`` of one task of a workflow of 50 000 pending ones, then ``update_state`` to SUCCESS), writes per
second (``update_state``), reads per second (``get_state``, ``count_states`` and ``list_tasks_in_workflow`` of a
workflow of ``--threads`` tasks, in turn) on the primary alone, then the same reads with ``read_url`` on the
standby, and the transactions each server ran meanwhile (``pg_stat_database``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from planflow import PlanflowConfig, Provider, TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider
from planflow.config import resolve_config


def _server() -> str:
    return (
        os.environ.get("PLANFLOW_BENCH_POSTGRES_URL")
        or os.environ.get("PLANFLOW_TEST_POSTGRES_URL")
        or "postgresql://postgres@127.0.0.1:5432/test"
    )


def _schema_url(base: str, schema: str) -> str:
    return f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{schema}"


def cost(calls: int, rounds: int, private: bool) -> None:
    if not private:
        _cost(_server(), calls, rounds)
        return
    from tests.faults.cluster import Cluster

    # No disk in the way (fsync off): what is left is the client's work and the round trips.
    server = Cluster({"fsync": "off", "synchronous_commit": "off"})
    server.start()
    try:
        _cost(server.url(), calls, rounds)
    finally:
        server.destroy()


def _cost(base: str, calls: int, rounds: int) -> None:
    with_standbys = "read_url" in {f.name for f in PlanflowConfig.__dataclass_fields__.values()}
    variants: dict[str, dict[str, object]] = {"no read_url": {}}
    schemas: list[str] = []
    with psycopg.connect(base, autocommit=True) as admin:
        for name in ["no read_url", "read_url = same server"] if with_standbys else ["no read_url"]:
            schema = f"pfstandby_{os.getpid()}_{len(schemas)}"
            admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
            admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            schemas.append(schema)
            url = _schema_url(base, schema)
            variants[name] = {"url": url, **({"read_url": url} if name != "no read_url" else {})}
    try:
        providers = {name: open_provider(settings) for name, settings in variants.items()}
        states: dict[str, TaskState] = {}
        for name, provider in providers.items():
            wf = provider.workflows.upsert_state(WorkflowState("wf-cost", "bench"))
            states[name] = provider.tasks.upsert_state(
                TaskState("t", "t", wf.workflow_exec_id, wf.workflow_id)
            )
        samples: dict[str, list[float]] = {name: [] for name in providers}
        cpu_samples: dict[str, list[float]] = {name: [] for name in providers}
        names = list(providers)
        for r in range(rounds + 1):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                provider, state = providers[name], states[name]
                started, cpu = time.perf_counter(), time.process_time()
                for n in range(calls):
                    state = provider.tasks.update_state(state.evolve(input={"n": n}), state.version)
                elapsed, used = time.perf_counter() - started, time.process_time() - cpu
                states[name] = state
                if r:  # the first round warms up
                    samples[name].append(elapsed / calls * 1e6)
                    cpu_samples[name].append(used / calls * 1e6)
        for provider in providers.values():
            provider.close()
        import planflow

        print(f"update_state, {calls} calls x {rounds} rounds, planflow at {Path(planflow.__file__).parent}")
        for name, values in samples.items():
            print(
                f"  {name:24} median {statistics.median(values):8.1f} us/call wall, "
                f"{statistics.median(cpu_samples[name]):6.1f} us/call of this process's CPU "
                f"(wall rounds: {', '.join(f'{v:.0f}' for v in sorted(values))})"
            )
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            for schema in schemas:
                admin.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _run_for(seconds: float, threads: int, step: Callable[[int, int], int]) -> float:
    """Operations per second of ``threads`` threads calling ``step(thread, n)`` (it returns how many it did)."""
    done = [0] * threads
    stop = threading.Event()

    def worker(index: int) -> None:
        n = 0
        while not stop.is_set():
            done[index] += step(index, n)
            n += 1

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.monotonic()
    for thread in workers:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in workers:
        thread.join()
    return sum(done) / (time.monotonic() - started)


def capacity(seconds: float, threads: int) -> None:
    from tests.faults.cluster import Cluster

    primary = Cluster({"wal_level": "replica"})
    primary.start()
    standby: Cluster | None = None
    try:
        standby = Cluster(standby_of=primary)
        standby.start()
        primary.sql("CREATE DATABASE capacity")
        while not standby.sql("SELECT 1 FROM pg_database WHERE datname = 'capacity'"):
            time.sleep(0.05)

        def commits(server: Cluster) -> int:
            rows = server.sql(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'capacity'"
            )
            return int(rows[0][0])  # pyright: ignore[reportArgumentType]

        def config(**settings: object) -> PlanflowConfig:
            return resolve_config({"url": primary.url("capacity"), "pool_max_size": threads + 2, **settings})

        with open_provider(config()) as provider:
            wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:8]}", "capacity"))
            own = [
                provider.tasks.upsert_state(
                    TaskState(f"own-{i}", f"own-{i}", wf.workflow_exec_id, wf.workflow_id)
                )
                for i in range(threads)
            ]
            queued = provider.workflows.upsert_state(
                WorkflowState(f"queue-{uuid.uuid4().hex[:8]}", "capacity")
            )
            provider.tasks.bulk_upsert(
                TaskState(f"q-{i:07d}", "q", queued.workflow_exec_id, queued.workflow_id)
                for i in range(50_000)
            )
            latest = list(own)
            queue = TaskFilter(workflow_exec_id=queued.workflow_exec_id)

            def claim(index: int, n: int) -> int:
                got = provider.tasks.claim(queue, worker=f"w{index}", limit=1, lease=60)
                for state in got:
                    provider.tasks.update_state(state.evolve(status=TaskStatus.SUCCESS), state.version)
                return len(got)

            def write(index: int, n: int) -> int:
                state = latest[index]
                latest[index] = provider.tasks.update_state(state.evolve(input={"n": n}), state.version)
                return 1

            print(
                f"capacity, {threads} threads x {seconds:g} s per figure, one private primary (2-core machine)"
            )
            print(
                f"  claims/s (claim 1, then update_state to SUCCESS): {_run_for(seconds, threads, claim):8,.0f}"
            )
            print(
                f"  writes/s (update_state):                          {_run_for(seconds, threads, write):8,.0f}"
            )

        def reads_with(provider: Provider) -> Callable[[int, int], int]:
            def read(index: int, n: int) -> int:
                if n % 3 == 0:
                    provider.tasks.get_state(own[index].task_exec_id)
                elif n % 3 == 1:
                    provider.tasks.count_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id))
                else:
                    provider.tasks.list_tasks_in_workflow(wf.workflow_exec_id)
                return 1

            return read

        for label, settings in (
            ("primary alone", {}),
            ("read_url on the standby", {"read_url": standby.url("capacity")}),
        ):
            before = (commits(primary), commits(standby))
            with open_provider(config(**settings)) as provider:
                rate = _run_for(seconds, threads, reads_with(provider))
            time.sleep(1.5)  # the backends' statistics are flushed as they exit
            after = (commits(primary), commits(standby))
            print(
                f"  reads/s, {label:24} {rate:8,.0f}   transactions: primary {after[0] - before[0]:>7,}, "
                f"standby {after[1] - before[1]:>7,}"
            )
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    cost_parser = commands.add_parser("cost")
    cost_parser.add_argument("--calls", type=int, default=2000)
    cost_parser.add_argument("--rounds", type=int, default=7)
    cost_parser.add_argument(
        "--private", action="store_true", help="on a private server without fsync (tests/faults/cluster.py)"
    )
    capacity_parser = commands.add_parser("capacity")
    capacity_parser.add_argument("--seconds", type=float, default=5.0)
    capacity_parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    if args.command == "cost":
        cost(args.calls, args.rounds, args.private)
    else:
        capacity(args.seconds, args.threads)


if __name__ == "__main__":
    main()
