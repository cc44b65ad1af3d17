"""Retention and listings (issue 17): a newest-first page of failures since a moment, and the purge rate.

    .venv/bin/python -m benchmarks.retention_bench [--quick]

- **Listing.** ``tasks.list_states(TaskFilter(statuses={FAILED, TIMED_OUT}, created_after=...), limit=100,
  order="desc")`` on 1 000 and on 100 000 tasks (20 000 with ``--quick``), against hand-written driver code
  running planflow's statement (one ``UNION ALL`` arm per status, merged in order along the status index), its
  parameters built once and its rows decoded by hand (``benchmarks.stores.rawcodec``). Targets: planflow/raw <= 1.2,
  and planflow's time on the large table within 2x of the small one. For comparison, the statement a user
  would first write, ``status IN (...) ... ORDER BY created_at DESC LIMIT 100``, is timed too ("IN list"): it
  sorts every match, so it grows with the table.
- **Purge.** ``workflows.purge`` of finished workflows with 500 tasks each (batches of 500 tasks, each its own
  transaction), in rows (workflows and tasks) per second, against one hand-written ``DELETE`` of the same
  workflows in a single transaction (the floor, which holds the write lock throughout).

Variants take turns call by call (listing) or round by round (purge); medians are reported.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.string import TextLoader

from benchmarks.compare import postgres_schema, sqlite_file
from benchmarks.stores.rawcodec import state_from_row
from planflow import Provider, TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider
from planflow.infra.postgres.connection import to_pyformat
from planflow.infra.postgres.dialect import POSTGRES
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.statements import listing
from planflow.infra.sqlite.dialect import SQLITE

T0 = datetime(2025, 1, 1, tzinfo=UTC)
STATUSES = list(TaskStatus)
WANTED = (TaskStatus.FAILED, TaskStatus.TIMED_OUT)
PAGE = 100
#: The page's lower bound: the first tenth of the table is older.
SINCE_FRACTION = 0.1
Page = Callable[[], list[TaskState]]


def fill_tasks(provider: Provider, count: int) -> None:
    """``count`` tasks of one workflow, one a second from T0, the statuses in turn (a quarter are wanted)."""
    provider.workflows.upsert_state(WorkflowState("wf", "retention-bench", TaskStatus.RUNNING))
    provider.tasks.import_states(
        TaskState(
            f"t{i:07d}",
            "step",
            "wf",
            "retention-bench",
            status=STATUSES[i % len(STATUSES)],
            output={"i": i},
            version=1,
            created_at=T0 + timedelta(seconds=i),
            updated_at=T0 + timedelta(seconds=i),
        )
        for i in range(count)
    )


def since(count: int) -> datetime:
    return T0 + timedelta(seconds=int(count * SINCE_FRACTION))


def planflow_page(provider: Provider, count: int) -> Page:
    wanted = TaskFilter(statuses=set(WANTED), created_after=since(count))
    return lambda: provider.tasks.list_states(wanted, limit=PAGE, order="desc").items


def statement(dialect: Dialect, count: int) -> tuple[str, list[object]]:
    """planflow's own statement for the page and its parameters, built once (the raw stores run planflow's
    statements: what differs is binding, decoding, checks and error translation, per call)."""
    wanted = TaskFilter(statuses=set(WANTED), created_after=since(count))
    return listing(tasks_sql.TABLE, wanted, cursor=None, order="desc", limit=PAGE, dialect=dialect)


def in_list_statement() -> str:
    return (
        f"{tasks_sql.TABLE.select} WHERE status IN (?, ?) AND created_at > ? "
        "ORDER BY created_at DESC, task_exec_id DESC LIMIT ?"
    )


def measure(variants: dict[str, Page], calls: int) -> dict[str, float]:
    """Median seconds per call of each variant, taking turns call by call after a warm-up."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    for page in variants.values():
        for _ in range(5):
            assert len(page()) == PAGE
    for turn in range(calls):
        order = list(variants) if turn % 2 == 0 else list(reversed(variants))
        for name in order:
            started = time.perf_counter()
            page = variants[name]()
            times[name].append(time.perf_counter() - started)
            assert len(page) == PAGE
    return {name: statistics.median(t) for name, t in times.items()}


def report_listing(driver: str, by_size: dict[int, dict[str, float]]) -> None:
    small, large = min(by_size), max(by_size)
    for size, medians in by_size.items():
        planflow, raw, naive = medians["planflow"], medians["hand-written"], medians["IN list"]
        print(
            f"{driver:8} list {size:>7,} tasks: planflow {planflow * 1e6:>7,.0f} us, hand-written "
            f"{raw * 1e6:>7,.0f} us, IN list {naive * 1e6:>9,.0f} us; planflow/raw {planflow / raw:.2f}"
        )
    growth = by_size[large]["planflow"] / by_size[small]["planflow"]
    print(f"{driver:8} list {large:,} / {small:,} tasks: planflow {growth:.2f}x (target <= 2)")


def hand_written_page(
    fetch: Callable[[Any, list[object]], list[Any]],
    sql: Any,
    params: list[object],
    load_ts: Callable[[Any], datetime],
) -> Page:
    """A page read by driver code: ``fetch(sql, params)`` and rows decoded by hand."""
    return lambda: [state_from_row(r, load_ts) for r in fetch(sql, params)]


def sqlite_listing(sizes: list[int], calls: int) -> None:
    by_size: dict[int, dict[str, float]] = {}
    for size in sizes:
        with sqlite_file() as path, open_provider(f"sqlite:///{path}") as provider:
            fill_tasks(provider, size)
            raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            raw.execute("PRAGMA foreign_keys = ON")

            def fetch(sql: Any, params: list[object], raw: sqlite3.Connection = raw) -> list[Any]:
                return raw.execute(sql, params).fetchall()

            sql, params = statement(SQLITE, size)
            naive = [WANTED[0].value, WANTED[1].value, SQLITE.ts_param(since(size)), PAGE]
            by_size[size] = measure(
                {
                    "planflow": planflow_page(provider, size),
                    "hand-written": hand_written_page(fetch, sql, params, datetime.fromisoformat),
                    "IN list": hand_written_page(fetch, in_list_statement(), naive, datetime.fromisoformat),
                },
                calls,
            )
            raw.close()
    report_listing("sqlite", by_size)


def postgres_listing(sizes: list[int], calls: int) -> None:
    by_size: dict[int, dict[str, float]] = {}
    for size in sizes:
        with postgres_schema() as url, open_provider(url) as provider:
            fill_tasks(provider, size)
            raw = psycopg.connect(url, autocommit=True)
            raw.adapters.register_loader("jsonb", TextLoader)
            raw.execute("ANALYZE task_states")

            def fetch(sql: Any, params: list[object], raw: psycopg.Connection[Any] = raw) -> list[Any]:
                return raw.execute(sql, params).fetchall()

            text, params = statement(POSTGRES, size)
            naive = [WANTED[0].value, WANTED[1].value, since(size), PAGE]
            by_size[size] = measure(
                {
                    "planflow": planflow_page(provider, size),
                    "hand-written": hand_written_page(fetch, to_pyformat(text), params, lambda v: v),
                    "IN list": hand_written_page(fetch, to_pyformat(in_list_statement()), naive, lambda v: v),
                },
                calls,
            )
            raw.close()
    report_listing("postgres", by_size)


# Purge ------------------------------------------------------------------------------------------------------

OLD = datetime(2020, 1, 1, tzinfo=UTC)
TASKS_EACH = 500


def fill_finished(provider: Provider, workflows: int, round_number: int) -> list[str]:
    ids = [f"done-{round_number}-{w:04d}" for w in range(workflows)]
    provider.workflows.import_states(
        WorkflowState(wf, "nightly", TaskStatus.SUCCESS, version=1, created_at=OLD, updated_at=OLD)
        for wf in ids
    )
    provider.tasks.import_states(
        TaskState(
            f"{wf}-{i:04d}",
            f"step-{i}",
            wf,
            "nightly",
            status=TaskStatus.SUCCESS,
            parent_state_id=None if i % 2 == 0 else f"{wf}-0000",
            output={"done": True},
            version=1,
            created_at=OLD + timedelta(seconds=i),
            updated_at=OLD + timedelta(seconds=i),
        )
        for wf in ids
        for i in range(TASKS_EACH)
    )
    return ids


HAND_WRITTEN_PURGE = "DELETE FROM workflow_states WHERE status IN ('SUCCESS', 'FAILED', 'CANCELED', 'TIMED_OUT') AND updated_at < ?"


def purge_bench(driver: str, url: str, provider: Provider, workflows: int, rounds: int) -> None:
    rows = workflows * (TASKS_EACH + 1)
    cutoff = datetime(2021, 1, 1, tzinfo=UTC)
    rates: dict[str, list[float]] = {"planflow": [], "hand-written": []}

    def hand_written() -> int:
        if driver == "sqlite":
            conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("BEGIN IMMEDIATE")
            deleted = conn.execute(HAND_WRITTEN_PURGE, [SQLITE.ts_param(cutoff)]).rowcount
            conn.execute("COMMIT")
            conn.close()
            return deleted
        with psycopg.connect(url) as conn:
            return conn.execute(to_pyformat(HAND_WRITTEN_PURGE), [cutoff]).rowcount

    for number in range(rounds):
        for variant in ("planflow", "hand-written") if number % 2 == 0 else ("hand-written", "planflow"):
            fill_finished(provider, workflows, number)
            started = time.perf_counter()
            if variant == "planflow":
                deleted = provider.workflows.purge(finished_before=cutoff)
            else:
                deleted = hand_written()
            elapsed = time.perf_counter() - started
            assert deleted == workflows, (variant, deleted)
            rates[variant].append(rows / elapsed)
    planflow, raw = statistics.median(rates["planflow"]), statistics.median(rates["hand-written"])
    print(
        f"{driver:8} purge {workflows} workflows x {TASKS_EACH} tasks: planflow {planflow:>8,.0f} rows/s "
        f"(batches of {TASKS_EACH} tasks), one hand-written DELETE {raw:>8,.0f} rows/s; raw/planflow "
        f"{raw / planflow:.2f}"
    )


def sqlite_purge(workflows: int, rounds: int) -> None:
    with sqlite_file() as path, open_provider(f"sqlite:///{path}") as provider:
        purge_bench("sqlite", f"sqlite:///{path}", provider, workflows, rounds)


def postgres_purge(workflows: int, rounds: int) -> None:
    with postgres_schema() as url, open_provider(url) as provider:
        purge_bench("postgres", url, provider, workflows, rounds)


def run(sizes: list[int], calls: int, workflows: int, rounds: int) -> None:
    """Every measurement at these sizes (the smoke test runs it tiny)."""
    sqlite_listing(sizes, calls)
    postgres_listing(sizes, calls)
    sqlite_purge(workflows, rounds)
    postgres_purge(workflows, rounds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller tables and fewer rounds (a smoke run)")
    args = parser.parse_args(argv)
    if args.quick:
        run([1_000, 20_000], calls=200, workflows=20, rounds=3)
    else:
        run([1_000, 100_000], calls=500, workflows=100, rounds=3)


if __name__ == "__main__":
    main()
