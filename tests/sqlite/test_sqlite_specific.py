"""What only the SQLite driver promises: file permissions, locking, many processes on one file, :memory:."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from planflow import (
    ConfigError,
    ConflictError,
    PlanflowConfig,
    RetrySettings,
    TaskState,
    TaskStatus,
    TransientError,
    WorkflowState,
    open_provider,
)


def test_database_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "private.db"
    with open_provider(f"sqlite:///{path}") as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "w"))
        files = [p for p in tmp_path.iterdir() if p.name.startswith("private.db")]
        assert {p.name for p in files} >= {"private.db", "private.db-wal"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


def test_file_uses_wal_and_enforces_foreign_keys(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    with open_provider(f"sqlite:///{path}"):
        raw = sqlite3.connect(path)
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        raw.close()


def test_missing_folder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_provider(f"sqlite:///{tmp_path}/no/such/folder/x.db")


def test_memory_database_is_shared_by_the_providers_threads() -> None:
    with open_provider("sqlite://:memory:") as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "w"))
        seen: list[str] = []
        thread = threading.Thread(target=lambda: seen.append(provider.workflows.get_state("wf").workflow_id))
        thread.start()
        thread.join()
        assert seen == ["w"]


def test_two_memory_providers_are_separate_databases() -> None:
    with open_provider("sqlite://:memory:") as first, open_provider("sqlite://:memory:") as second:
        first.workflows.upsert_state(WorkflowState("wf", "w"))
        assert second.workflows.list_states().items == []


def test_get_state_for_update_holds_the_write_lock_unlike_a_plain_read(tmp_path: Path) -> None:
    path = tmp_path / "lock.db"
    with open_provider(f"sqlite:///{path}") as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "w"))
        provider.tasks.upsert_state(TaskState("t", "t", "wf", "w"))
        other = sqlite3.connect(path, timeout=0.05, isolation_level=None)
        provider.tasks.get_state("t")
        other.execute("BEGIN IMMEDIATE")  # a plain read leaves the write lock free
        other.execute("ROLLBACK")
        with provider.transaction() as tx:
            tx.tasks.get_state_for_update("t")
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # released at commit
        other.execute("ROLLBACK")
        other.close()


def test_busy_database_surfaces_transient_error_only_after_the_retry_budget(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    config = PlanflowConfig(
        driver="sqlite",
        path=str(path),
        busy_timeout=0.05,
        retry=RetrySettings(max_attempts=3, base_delay=0.01),
    )
    with open_provider(config) as provider:
        holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        holder.execute("BEGIN IMMEDIATE")
        started = time.perf_counter()
        with pytest.raises(TransientError, match="gave up after 3 attempts"):
            provider.workflows.upsert_state(WorkflowState("wf", "w"))
        assert time.perf_counter() - started >= 3 * 0.05
        # Released while the provider retries: the write goes through without surfacing an error.
        threading.Timer(0.1, lambda: holder.execute("ROLLBACK")).start()
        patient = PlanflowConfig(
            driver="sqlite",
            path=str(path),
            busy_timeout=0.05,
            retry=RetrySettings(max_attempts=50, base_delay=0.01),
        )
        with open_provider(patient) as waiting:
            assert waiting.workflows.upsert_state(WorkflowState("wf", "w")).version == 1
        holder.close()


def _writer(path: str, worker: int, rounds: int, queue: multiprocessing.Queue[tuple[int, int, int]]) -> None:
    conflicts = successes = 0
    with open_provider(f"sqlite:///{path}") as provider:
        for i in range(rounds):
            provider.tasks.upsert_state(
                TaskState(f"w{worker}-{i}", "t", "wf", "w", status=TaskStatus.SUCCESS)
            )
            while True:
                current = provider.tasks.get_state("counter")
                assert current.output is not None
                count = current.output["n"]
                assert isinstance(count, int)
                try:
                    provider.tasks.update_state(current.evolve(output={"n": count + 1}), current.version)
                except ConflictError:
                    conflicts += 1
                    continue
                successes += 1
                break
    queue.put((worker, successes, conflicts))


def test_several_processes_write_one_file_without_errors_or_lost_updates(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with open_provider(f"sqlite:///{path}") as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "w"))
        provider.tasks.upsert_state(TaskState("counter", "counter", "wf", "w", output={"n": 0}))
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[tuple[int, int, int]] = context.Queue()
    workers, rounds = 4, 60
    processes = [context.Process(target=_writer, args=(str(path), n, rounds, queue)) for n in range(workers)]
    for process in processes:
        process.start()
    results = [queue.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    with open_provider(f"sqlite:///{path}") as provider:
        counter = provider.tasks.get_state("counter")
        assert counter.output == {"n": workers * rounds}
        assert counter.version == 1 + workers * rounds
        assert sum(r[1] for r in results) == workers * rounds
        ids = [f"w{n}-{i}" for n in range(workers) for i in range(rounds)]
        assert len(provider.tasks.list_by_ids(ids)) == workers * rounds
    print(f"conflicts resolved across {workers} processes: {sum(r[2] for r in results)}")


def test_closed_provider_refuses_work(tmp_path: Path) -> None:
    from planflow import PlanflowError

    provider = open_provider(f"sqlite:///{tmp_path / 'closed.db'}")
    provider.close()
    provider.close()
    with pytest.raises(PlanflowError, match="closed"):
        provider.workflows.list_states()


def test_umask_does_not_loosen_file_mode(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        with open_provider(f"sqlite:///{tmp_path / 'umask.db'}"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "umask.db").stat().st_mode) == 0o600
