"""Claim throughput (issue 16): 8 worker threads drain pending tasks with ``tasks.claim``, in batches of 1 and 50,
against hand-written SQL doing the same claim.

    .venv/bin/python -m benchmarks.claims_bench [--quick]

Each round fills a fresh workflow with pending tasks, then 8 threads claim until nothing is left; the variants
take turns round by round, and the ratio is of the median round times (target planflow/raw <= 1.15):

- PostgreSQL: planflow's ``tasks.claim`` against the classic hand-written queue claim on a psycopg pool, in
  autocommit: ``UPDATE ... WHERE task_exec_id IN (SELECT ... WHERE status = 'PENDING' ORDER BY ... LIMIT n
  FOR UPDATE SKIP LOCKED) RETURNING *``, rows decoded to ``TaskState`` by hand-written code.
- SQLite: the same ``UPDATE ... RETURNING`` (without ``SKIP LOCKED``), one autocommit connection per thread.

planflow's claim does more than the hand-written one: it also takes over RUNNING tasks whose lease lapsed
(a second arm of the query), and on PostgreSQL it sends a commit token with the statement, so that a lost
reply is resolved rather than guessed. The SQLite write-lock hold per claim batch is the statement's time,
measured alone (one thread, nothing else writing): the lock is held from the statement's start to its end.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from benchmarks.compare import postgres_schema, sqlite_file
from benchmarks.stores.rawcodec import iso, now, state_from_row
from planflow import Provider, TaskFilter, TaskState, WorkflowState, open_provider
from planflow.infra.sql.tasks import RETURNING_ALL

WORKERS = 8
LEASE = 60.0
Claim = Callable[[str, int], list[TaskState]]  # (workflow_exec_id, limit) -> claimed


def hand_written_claim(skip_locked: str, placeholder: str) -> str:
    """The queue claim as a user writes it: pending tasks of one workflow, oldest first."""
    p = placeholder
    return (
        "UPDATE task_states SET status = 'RUNNING', claimed_by = {p}, lease_expires_at = {p}, version = version + 1, "
        "updated_at = {p} WHERE task_exec_id IN (SELECT task_exec_id FROM task_states WHERE status = 'PENDING' "
        "AND workflow_exec_id = {p} ORDER BY created_at, task_exec_id LIMIT {p}{skip})" + RETURNING_ALL
    ).format(p=p, skip=skip_locked)


def fill(provider: Provider, tasks: int) -> str:
    wf = f"wf-{uuid.uuid4().hex[:8]}"
    provider.workflows.upsert_state(WorkflowState(wf, "claims-bench"))
    provider.tasks.bulk_upsert(
        TaskState(f"{wf}/{i:06d}", "t", wf, "claims-bench", input={"i": i}) for i in range(tasks)
    )
    return wf


def drain(claim: Claim, wf: str, batch: int, tasks: int) -> float:
    """Seconds for ``WORKERS`` threads to claim all ``tasks`` of ``wf``, checking each was claimed once."""
    got: list[list[str]] = [[] for _ in range(WORKERS)]
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            while claimed := claim(wf, batch):
                got[index].extend(s.task_exec_id for s in claimed)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(WORKERS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    every = [t for ids in got for t in ids]
    assert len(every) == len(set(every)) == tasks, "a task was claimed twice, or never"
    return elapsed


def compare(
    name: str, provider: Provider, variants: dict[str, Claim], rounds: int, sizes: dict[int, int]
) -> None:
    for batch, tasks in sizes.items():
        times: dict[str, list[float]] = {variant: [] for variant in variants}
        for turn in range(rounds + 1):  # the first round warms up and is dropped
            order = list(variants) if turn % 2 == 0 else list(reversed(variants))
            for variant in order:
                wf = fill(provider, tasks)
                elapsed = drain(variants[variant], wf, batch, tasks)
                if turn:
                    times[variant].append(elapsed)
        medians = {variant: statistics.median(t) for variant, t in times.items()}
        planflow, raw = medians["planflow"], medians["hand-written"]
        print(
            f"{name:10} batch {batch:>2}: {tasks:>6} tasks, planflow {tasks / planflow:>8,.0f} claims/s, "
            f"hand-written {tasks / raw:>8,.0f} claims/s, planflow/raw {planflow / raw:.2f}"
        )


def planflow_claim(provider: Provider) -> Claim:
    def claim(wf: str, limit: int) -> list[TaskState]:
        return provider.tasks.claim(TaskFilter(workflow_exec_id=wf), worker="bench", limit=limit, lease=LEASE)

    return claim


def sqlite_bench(rounds: int, sizes: dict[int, int]) -> None:
    with sqlite_file() as path, open_provider(f"sqlite:///{path}") as provider:
        sql = hand_written_claim("", "?")
        local = threading.local()
        opened: list[sqlite3.Connection] = []

        def connection() -> sqlite3.Connection:
            conn: sqlite3.Connection | None = getattr(local, "conn", None)
            if conn is None:
                conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                conn.execute("PRAGMA foreign_keys = ON")
                local.conn = conn
                opened.append(conn)
            return conn

        def raw(wf: str, limit: int) -> list[TaskState]:
            moment = now()
            params = ["bench", iso(moment + timedelta(seconds=LEASE)), iso(moment), wf, limit]
            rows = connection().execute(sql, params).fetchall()
            return sorted(
                (state_from_row(r, datetime.fromisoformat) for r in rows),
                key=lambda s: (s.created_at, s.task_exec_id),
            )

        compare(
            "sqlite", provider, {"planflow": planflow_claim(provider), "hand-written": raw}, rounds, sizes
        )
        lock_hold(provider, {"planflow": planflow_claim(provider), "hand-written": raw})
        for conn in opened:
            conn.close()


def lock_hold(provider: Provider, variants: dict[str, Claim]) -> None:
    """One thread, nothing else writing: each claim's time is its statement's, which holds the write lock."""
    for batch in (1, 50):
        for variant, claim in variants.items():
            wf = fill(provider, 200 * batch)
            spans: list[float] = []
            for _ in range(200):
                started = time.perf_counter()
                claim(wf, batch)
                spans.append(time.perf_counter() - started)
            p99 = statistics.quantiles(spans, n=100)[98]
            print(
                f"sqlite     batch {batch:>2}: {variant:12} write lock held per claim p50 "
                f"{statistics.median(spans) * 1e6:,.0f} us, p99 {p99 * 1e6:,.0f} us"
            )


def postgres_bench(rounds: int, sizes: dict[int, int]) -> None:
    with (
        postgres_schema() as url,
        open_provider({"url": url, "pool_max_size": WORKERS, "pool_min_size": WORKERS}) as provider,
    ):
        sql = hand_written_claim(" FOR UPDATE SKIP LOCKED", "%s")

        def configure(conn: psycopg.Connection[Any]) -> None:
            conn.adapters.register_loader("jsonb", TextLoader)

        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            min_size=WORKERS,
            max_size=WORKERS,
            kwargs={"autocommit": True},
            configure=configure,
            open=True,
        )
        pool.wait()

        def raw(wf: str, limit: int) -> list[TaskState]:
            moment = now()
            with pool.connection() as conn:
                rows = conn.execute(
                    sql, ["bench", moment + timedelta(seconds=LEASE), moment, wf, limit]
                ).fetchall()
            return sorted(
                (state_from_row(r, lambda v: v) for r in rows), key=lambda s: (s.created_at, s.task_exec_id)
            )

        try:
            compare(
                "postgres",
                provider,
                {"planflow": planflow_claim(provider), "hand-written": raw},
                rounds,
                sizes,
            )
        finally:
            pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds (a smoke run)")
    args = parser.parse_args()
    rounds = 3 if args.quick else 7
    sizes = {1: 2_000, 50: 20_000} if args.quick else {1: 5_000, 50: 50_000}
    sqlite_bench(rounds, sizes)
    postgres_bench(rounds, sizes)


if __name__ == "__main__":
    main()
