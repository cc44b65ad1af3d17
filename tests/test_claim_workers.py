"""Claims across processes: 8 worker processes of 4 threads each share 10 000 pending tasks.

Each worker thread claims batches of 1 to 20, logs every claim and every completion to its process's log
(one line per ``write``, so a SIGKILL loses no logged line), then finishes each task by ``update_state`` with
the version its claim returned. The parent counts: every task claimed exactly once and finished exactly
once; when two processes are killed mid-run, the tasks they held are claimed again once their leases lapse
and finished by the others, and a killed worker's late write (a zombie's) is refused.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections import Counter
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from planflow import ConflictError, Provider, TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider
from tests.workers import join, kill_after_progress, run_threads, start, unfinished

TASKS = 10_000
PROCESSES = 8
THREADS = 4
WORKFLOW = "wf-claims"
WORK = TaskFilter(workflow_exec_id=WORKFLOW)


def fill(provider: Provider) -> None:
    provider.workflows.upsert_state(WorkflowState(WORKFLOW, "claims", status=TaskStatus.RUNNING))
    provider.tasks.bulk_upsert(
        TaskState(f"t{i:05d}", f"task-{i}", WORKFLOW, "claims", input={"n": i}) for i in range(TASKS)
    )


def work(url: str, process: int, lease: float, log_path: str) -> None:
    """One worker process: ``THREADS`` threads claiming and finishing until no task is left unfinished."""
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with open_provider(url) as provider:

        def thread(index: int) -> None:
            worker = f"p{process}-t{index}"
            rng = random.Random(process * 100 + index)
            while True:
                claimed = provider.tasks.claim(WORK, worker=worker, limit=rng.randint(1, 20), lease=lease)
                if not claimed:
                    if unfinished(provider, WORKFLOW) == 0:
                        return
                    provider.tasks.wait_for_work(WORK, timeout=0.5)
                    continue
                for state in claimed:
                    os.write(log, f"claim {state.task_exec_id} {worker} {state.version}\n".encode())
                beat = time.monotonic()
                lost: set[str] = set()
                for state in claimed:
                    if time.monotonic() - beat > lease / 3:  # a slow batch keeps its leases, as workers do
                        rest = [s.task_exec_id for s in claimed if s.task_exec_id not in lost]
                        lost.update(provider.tasks.heartbeat(rest, worker=worker, lease=lease).lost)
                        beat = time.monotonic()
                    if state.task_exec_id in lost:
                        os.write(log, f"lost {state.task_exec_id} {worker}\n".encode())
                        continue
                    finished = state.evolve(status=TaskStatus.SUCCESS, output={"by": worker})
                    try:
                        provider.tasks.update_state(finished, state.version)
                    except ConflictError:  # its lease lapsed before a heartbeat and another took it
                        os.write(log, f"lost {state.task_exec_id} {worker}\n".encode())
                        continue
                    os.write(log, f"done {state.task_exec_id} {worker}\n".encode())

        try:
            run_threads(THREADS, log, thread)
        finally:
            os.close(log)


class Logs:
    """What the workers logged: claims (task, worker, version), completions and lost leases (task, worker)."""

    def __init__(self, paths: list[Path]) -> None:
        self.claims: list[tuple[str, str, int]] = []
        self.done: list[tuple[str, str]] = []
        self.lost: set[tuple[str, str]] = set()
        self.errors: list[str] = []
        for path in paths:
            for line in path.read_text().splitlines():
                kind, rest = line.split(" ", 1)
                if kind == "claim":
                    task, worker, version = rest.split()
                    self.claims.append((task, worker, int(version)))
                elif kind in ("done", "lost"):
                    task, worker = rest.split()
                    (self.done.append if kind == "done" else self.lost.add)((task, worker))
                else:
                    self.errors.append(line)


def start_workers(url: str, tmp_path: Path, lease: float) -> tuple[list[BaseProcess], list[Path]]:
    logs = [tmp_path / f"worker-{p}.log" for p in range(PROCESSES)]
    return start(work, [(url, p, lease, str(logs[p])) for p in range(PROCESSES)]), logs


def every_task_finished_once(provider: Provider) -> list[TaskState]:
    states = list(provider.tasks.iter_states(WORK))
    assert len(states) == TASKS
    assert Counter(s.status for s in states) == {TaskStatus.SUCCESS: TASKS}
    assert all(s.output == {"by": s.claimed_by} for s in states), (
        "a task was finished by a worker not holding it"
    )
    return states


def exactly_once(url: str, tmp_path: Path) -> None:
    with open_provider(url) as provider:
        fill(provider)
    processes, logs = start_workers(url, tmp_path, lease=60)
    join(processes)
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    log = Logs(logs)
    assert log.errors == [] and log.lost == set()
    claimed = Counter(task for task, _, _ in log.claims)
    assert len(claimed) == TASKS and set(claimed.values()) == {1}, "a task was claimed twice, or never"
    assert Counter(task for task, _ in log.done) == claimed
    with open_provider(url) as provider:
        states = every_task_finished_once(provider)
    # Created at version 1, claimed (2), finished (3): any second claim or write would show.
    assert {s.version for s in states} == {3}
    workers = Counter(worker.split("-")[0] for _, worker, _ in log.claims)
    assert len(workers) == PROCESSES, f"some process claimed nothing: {workers}"


def killed_workers_are_reclaimed(url: str, tmp_path: Path) -> None:
    lease = 2.0
    with open_provider(url) as provider:
        fill(provider)
        processes, logs = start_workers(url, tmp_path, lease=lease)
        victims = processes[:2]
        kill_after_progress(provider, WORKFLOW, TASKS // 3, victims)
        join(processes)
        assert [p.exitcode for p in victims] == [-signal.SIGKILL] * 2
        assert [p.exitcode for p in processes[2:]] == [0] * (PROCESSES - 2)

        log = Logs(logs)
        assert log.errors == []
        dead = {f"p{p}-t{t}" for p in range(2) for t in range(THREADS)}
        states = every_task_finished_once(provider)
        assert Counter(task for task, _ in log.done).most_common(1)[0][1] == 1, "a task was finished twice"
        by_task: dict[str, list[tuple[str, int]]] = {}
        for task, worker, version in log.claims:
            by_task.setdefault(task, []).append((worker, version))
        for holders in by_task.values():
            holders.sort(
                key=lambda holder: holder[1]
            )  # in the order of the claims (the logs are per process)
        # Each task was finished by the last worker whose claim of it is logged, with the version that claim
        # gave: no write came from a holder that had lost it. A task claimed twice was first held by a killed
        # worker (or by a survivor that lost its lease while slow, and logged so), then by a survivor. A task
        # with no logged claim was taken and finished by a killed worker the instant before the kill, its log
        # lines lost with it.
        reclaimed: set[str] = set()
        for state in states:
            holders = by_task.get(state.task_exec_id)
            if holders is None:
                assert state.claimed_by in dead and state.version == 3
                continue
            worker, version = holders[-1]
            assert (state.claimed_by, state.version) == (worker, version + 1)
            for (before, held), (_, took) in itertools.pairwise(holders):
                assert before in dead or (state.task_exec_id, before) in log.lost
                assert took == held + 1  # each claim took over the one before: nothing in between wrote
            if any(before in dead for before, _ in holders[:-1]):
                reclaimed.add(state.task_exec_id)
        assert reclaimed, "the kill hit no worker holding a claim"

        # A killed worker wakes up (a zombie) and writes with the version its claim gave it: fenced.
        zombie_task = sorted(reclaimed)[0]
        zombie_worker, zombie_version = next(h for h in by_task[zombie_task] if h[0] in dead)
        current = provider.tasks.get_state(zombie_task)
        with pytest.raises(ConflictError):
            provider.tasks.update_state(
                current.evolve(status=TaskStatus.FAILED, output={"by": zombie_worker}), zombie_version
            )
        assert provider.tasks.get_state(zombie_task) == current
        print(
            f"\n{url.split(':', maxsplit=1)[0]}: {len(log.claims)} logged claims, {len(reclaimed)} reclaimed after the kill, "
            f"{len(log.lost)} leases lost by slow survivors, 0 finished twice"
        )


def test_sqlite_file_every_task_is_claimed_exactly_once(tmp_path: Path) -> None:
    exactly_once(f"sqlite:///{tmp_path / 'claims.db'}", tmp_path)


def test_sqlite_file_tasks_of_killed_workers_are_reclaimed_and_zombies_fenced(tmp_path: Path) -> None:
    killed_workers_are_reclaimed(f"sqlite:///{tmp_path / 'claims.db'}", tmp_path)


@pytest.mark.postgres
def test_postgres_every_task_is_claimed_exactly_once(postgres_url: str, tmp_path: Path) -> None:
    exactly_once(postgres_url, tmp_path)


@pytest.mark.postgres
def test_postgres_tasks_of_killed_workers_are_reclaimed_and_zombies_fenced(
    postgres_url: str, tmp_path: Path
) -> None:
    killed_workers_are_reclaimed(postgres_url, tmp_path)
