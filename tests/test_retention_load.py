"""Retention and listings under load, on a SQLite file and on PostgreSQL.

- ``workflows.purge`` deletes 100 000 finished tasks in 200 workflows on a SQLite file (20 000 in 40 on
  PostgreSQL) while 4 threads keep writing other workflows: every purged workflow is gone with its tasks, every
  other row is intact, no writer sees an error (no "database is locked"), and the longest batch is printed
  (run with ``-s``) next to the writers' longest call.
- Paging newest first through 10 000 tasks while another thread inserts: no task is listed twice and none that
  existed at the start is skipped.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from planflow import Provider, TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider

OLD = datetime(2020, 1, 1, tzinfo=UTC)
WRITERS = 4
#: What a writer does between two tasks (a worker works between writes), in seconds.
THINK = 0.002


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(driver, URL) of a fresh store: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'load.db'}"
    else:
        new_url: Callable[[], str] = request.getfixturevalue("new_postgres_url")
        yield "postgres", new_url()


def finished_workflows(provider: Provider, url: str, count: int, tasks_each: int) -> None:
    """``count`` SUCCESS workflows last written in 2020 with ``tasks_each`` tasks each (half of them children of
    the first). On SQLite written by plain SQL in one transaction (as schema 7 stores them), which takes a
    third of the time of 100 checked imports; on PostgreSQL by ``import_states``."""
    workflows = [f"done-{w:04d}" for w in range(count)]
    ts = OLD.isoformat(timespec="microseconds")
    tasks = [
        (
            f"{wf}-{i:04d}",
            f"step-{i}",
            wf,
            None if i % 2 == 0 else f"{wf}-0000",
            (OLD + timedelta(seconds=i)).isoformat(timespec="microseconds"),
        )
        for wf in workflows
        for i in range(tasks_each)
    ]
    if url.startswith("sqlite"):
        raw = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        raw.execute("BEGIN")
        raw.executemany(
            "INSERT INTO workflow_states (workflow_exec_id, workflow_id, status, version, created_at, updated_at)"
            " VALUES (?, 'nightly', 'SUCCESS', 1, ?, ?)",
            [(wf, ts, ts) for wf in workflows],
        )
        raw.executemany(
            "INSERT INTO task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status,"
            " execution_type, parent_state_id, output, version, created_at, updated_at)"
            " VALUES (?, ?, ?, 'nightly', 'task', 'SUCCESS', 'basic', ?, '{\"done\":true}', 1, ?, ?)",
            [(*row, row[4]) for row in tasks],
        )
        raw.execute("COMMIT")
        raw.close()
        return
    provider.workflows.import_states(
        WorkflowState(wf, "nightly", TaskStatus.SUCCESS, version=1, created_at=OLD, updated_at=OLD)
        for wf in workflows
    )
    provider.tasks.import_states(
        TaskState(
            task_exec_id,
            task_id,
            wf,
            "nightly",
            status=TaskStatus.SUCCESS,
            parent_state_id=parent,
            output={"done": True},
            version=1,
            created_at=datetime.fromisoformat(created),
            updated_at=datetime.fromisoformat(created),
        )
        for task_exec_id, task_id, wf, parent, created in tasks
    )


def snapshot(provider: Provider) -> dict[str, tuple[str, int]]:
    """Every task's (workflow, version), by id."""
    return {s.task_exec_id: (s.workflow_exec_id, s.version) for s in provider.tasks.iter_states()}


def timing_transactions(provider: Provider, thread: threading.Thread) -> list[float]:
    """The durations of the units of work ``thread`` runs from now on, each from when its work starts (the
    write lock held: SQLite's BEGIN IMMEDIATE and this process's turn to write come before) to its commit."""
    database: Any = provider._backend.core.database  # type: ignore[attr-defined]
    original = database.run
    held: list[float] = []

    async def run(work: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is not thread:
            return await original(work, **kwargs)
        began: list[float] = []

        async def timed(connection: Any) -> Any:
            began.append(time.perf_counter())
            return await work(connection)

        result = await original(timed, **kwargs)
        held.append(time.perf_counter() - began[-1])
        return result

    database.run = run
    return held


def test_purge_of_many_finished_tasks_while_writers_write_other_workflows(store: tuple[str, str]) -> None:
    driver, url = store
    workflows, tasks_each = (200, 500) if driver == "sqlite" else (40, 500)
    with open_provider(url) as provider:
        started = time.perf_counter()
        finished_workflows(provider, url, workflows, tasks_each)
        # Kept: old but still running, and finished recently.
        running = WorkflowState(
            "kept-running", "nightly", TaskStatus.RUNNING, version=1, created_at=OLD, updated_at=OLD
        )
        provider.workflows.import_states([running])
        provider.tasks.bulk_upsert(
            TaskState(f"kept-running-{i}", f"s{i}", "kept-running", "nightly") for i in range(300)
        )
        recent = provider.workflows.upsert_state(WorkflowState("kept-recent", "nightly", TaskStatus.SUCCESS))
        provider.tasks.bulk_upsert(
            TaskState(f"kept-recent-{i}", f"s{i}", "kept-recent", "nightly", status=TaskStatus.SUCCESS)
            for i in range(300)
        )
        kept_before = {k: v for k, v in snapshot(provider).items() if k.startswith("kept-")}
        assert provider.tasks.count_states() == workflows * tasks_each + 600
        filled = time.perf_counter() - started

        stop = threading.Event()
        errors: list[BaseException] = []
        latencies: list[float] = []
        written: dict[str, int] = {}
        lock = threading.Lock()

        def writer(number: int) -> None:
            wf = provider.workflows.upsert_state(WorkflowState(f"live-{number}", "live", TaskStatus.RUNNING))
            count = 0
            worst = 0.0
            try:
                while not stop.is_set():
                    began = time.perf_counter()
                    state = provider.tasks.upsert_state(
                        TaskState(f"live-{number}-{count}", f"s{count}", wf.workflow_exec_id, "live")
                    )
                    state = provider.tasks.update_state(
                        state.evolve(status=TaskStatus.SUCCESS), state.version
                    )
                    worst = max(worst, time.perf_counter() - began)
                    with lock:
                        written[state.task_exec_id] = state.version
                    count += 1
                    time.sleep(THINK)
            except BaseException as exc:  # every error counts, "database is locked" first of all
                errors.append(exc)
            latencies.append(worst)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
        for thread in threads:
            thread.start()
        time.sleep(0.2)
        held = timing_transactions(provider, threading.current_thread())
        batches: list[int] = []
        began = time.perf_counter()
        purged = provider.workflows.purge(
            finished_before=datetime.now(UTC) - timedelta(hours=1), progress=batches.append
        )
        took = time.perf_counter() - began
        time.sleep(0.2)
        stop.set()
        for thread in threads:
            thread.join(30)

        assert errors == []
        assert purged == workflows == sum(batches)
        rows = workflows * (tasks_each + 1)
        held.sort()
        print(
            f"\n[{driver}] filled {workflows * tasks_each} tasks in {filled:.1f} s; purged {purged} workflows "
            f"({rows} rows) in {took:.2f} s = {rows / took:,.0f} rows/s, {len(held)} transactions holding the "
            f"write lock {held[len(held) // 2] * 1000:.1f} ms (median), {held[-1] * 1000:.1f} ms (longest); "
            f"{len(written)} tasks written meanwhile by {WRITERS} writers, longest write "
            f"{max(latencies) * 1000:.1f} ms"
        )
        left = snapshot(provider)
        assert not [k for k in left if k.startswith("done-")]
        assert {w.workflow_exec_id for w in provider.workflows.iter_states()} == {
            "kept-running",
            "kept-recent",
            *(f"live-{n}" for n in range(WRITERS)),
        }
        assert {k: v for k, v in left.items() if k.startswith("kept-")} == kept_before
        assert {k: v[1] for k, v in left.items() if k.startswith("live-")} == written
        assert recent.status is TaskStatus.SUCCESS


def test_paging_newest_first_while_rows_are_added_lists_every_row_once(store: tuple[str, str]) -> None:
    _, url = store
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "paging", TaskStatus.RUNNING))
        start = datetime.now(UTC) - timedelta(days=1)
        initial = [
            TaskState(
                f"t{i:05d}",
                "s",
                "wf",
                "paging",
                status=TaskStatus.FAILED if i % 3 else TaskStatus.SUCCESS,
                version=1,
                created_at=start + timedelta(seconds=i // 3),  # three rows share each moment
                updated_at=start,
            )
            for i in range(10_000)
        ]
        provider.tasks.import_states(initial)

        stop = threading.Event()
        errors: list[BaseException] = []
        added: list[str] = []

        def inserter() -> None:
            try:
                n = 0
                while not stop.is_set():
                    # New rows both newest of all and inside the range already being paged.
                    provider.tasks.upsert_state(
                        TaskState(f"new-{n}", "s", "wf", "paging", status=TaskStatus.FAILED)
                    )
                    middle = start + timedelta(seconds=(n * 7919) % 3333, microseconds=1)
                    provider.tasks.import_states(
                        [
                            TaskState(
                                f"mid-{n}",
                                "s",
                                "wf",
                                "paging",
                                status=TaskStatus.SUCCESS,
                                version=1,
                                created_at=middle,
                                updated_at=middle,
                            )
                        ]
                    )
                    added.extend((f"new-{n}", f"mid-{n}"))
                    n += 1
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=inserter)
        thread.start()
        try:
            for flt in (None, TaskFilter(statuses={TaskStatus.FAILED, TaskStatus.SUCCESS})):
                seen: list[str] = []
                cursor = None
                while True:
                    page = provider.tasks.list_states(flt, limit=100, cursor=cursor, order="desc")
                    seen.extend(s.task_exec_id for s in page.items)
                    time.sleep(0.001)  # let the inserter in between pages
                    if page.next_cursor is None:
                        break
                    cursor = page.next_cursor
                assert len(seen) == len(set(seen)), "a row was listed twice"
                assert {s.task_exec_id for s in initial} <= set(seen), "a row that existed was skipped"
        finally:
            stop.set()
            thread.join(30)
        assert errors == [] and len(added) > 10
