"""Work queues across processes: limits, delays, priorities, retries, poison work and deduplication, with real kills.

The issue's size (8 worker processes of 4 threads, 10 000 tasks, two processes SIGKILLed mid-run) runs under
``-m soak``; CI runs 4 processes of 4 threads over 2 000 tasks with one process SIGKILLed, so that a run takes
well under a minute on two busy cores. Both sizes run the same checks.

Some tasks share a concurrency key limited to 3 RUNNING, some a key limited to 25 claims per 0.5 s, some start
later (``run_after``), priorities are 0, 1 and 2, and every seventh task fails its first attempt (``tasks.fail``
with a short retry). Each worker logs every claim (the database's claim time, which is the lease end less the
lease, with the task's priority, attempt and ``run_after``) and, per task, the interval in which it held it
(taken inside the claim and before its completion, so within the task's RUNNING time). Once a third of the
tasks are done, worker processes are SIGKILLed holding what they hold; their tasks come back when the leases
lapse. The parent checks:

- at no instant do more than 3 holds of the limited key overlap (a killed worker's hold lasts until its lease
  lapses);
- no window of 0.5 s holds more than 25 claims of the rated key;
- no task was claimed before its ``run_after``, by the database's clock;
- no due task was passed over for one of lower priority: no claim of priority p happened while a task of
  higher priority was due and stayed unclaimed (see :func:`passed_over`; the check is shown to fail on a log
  that breaks the order);
- attempts are exact: each task's logged claims carry consecutive attempts ending at the stored count, the
  surviving workers claimed each task once (twice if it failed its first attempt), and the only attempts
  missing from the logs are the few a killed worker took in the instant before its kill;
- every task ends SUCCESS.

Separately, a task whose worker SIGKILLs itself whenever it holds it ends FAILED after ``max_attempts`` claims,
and 16 concurrent enqueues (4 processes x 4 threads) with one ``dedup_key`` create one task.
"""

from __future__ import annotations

import bisect
import multiprocessing
import os
import signal
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest

from planflow import ConflictError, Provider, TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider
from tests.workers import (
    join,
    kill_after_progress,
    log_line,
    log_lines,
    most_overlapping,
    run_threads,
    start,
    unfinished,
)

WORKFLOW = "wf-queue"
WORK = TaskFilter(workflow_exec_id=WORKFLOW)
LEASE = 5.0
CONCURRENT_KEY, CONCURRENCY = "limited", 3
RATED_KEY, RATE = "rated", (25, 0.5)
FAILS_FIRST = 7  # every seventh task fails its first attempt
BATCH = 4
#: How far apart two claim times of one statement's race may lie (see :func:`passed_over`).
SLACK = 1.0


@dataclass(frozen=True)
class Size:
    tasks: int
    processes: int
    threads: int
    kills: int


CI = Size(tasks=2_000, processes=4, threads=4, kills=1)
ISSUE = Size(tasks=10_000, processes=8, threads=4, kills=2)


@dataclass(frozen=True)
class Claim:
    task: str
    key: str
    priority: int
    attempt: int
    at: float  # the database's clock
    after: float | None
    worker: str


def fill(provider: Provider, tasks: int) -> None:
    provider.workflows.upsert_state(WorkflowState(WORKFLOW, "queue", status=TaskStatus.RUNNING))
    provider.tasks.set_limit(CONCURRENT_KEY, concurrency=CONCURRENCY)
    provider.tasks.set_limit(RATED_KEY, rate=RATE)
    later = datetime.now(UTC) + timedelta(seconds=1.5)

    def make(i: int) -> TaskState:
        key = CONCURRENT_KEY if i % 10 == 0 else RATED_KEY if i % 10 == 1 else None
        return TaskState(
            f"q{i:05d}",
            "job",
            WORKFLOW,
            "queue",
            priority=i % 3,
            run_after=later if i % 5 == 2 else None,
            max_attempts=4,
            concurrency_key=key,
        )

    provider.tasks.bulk_upsert(make(i) for i in range(tasks))


def work(url: str, process: int, threads: int, log_path: str) -> None:
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with open_provider(url) as provider:

        def thread(index: int) -> None:
            worker = f"p{process}-t{index}"
            while True:
                claimed = provider.tasks.claim(WORK, worker=worker, limit=BATCH, lease=LEASE)
                if not claimed:
                    if unfinished(provider, WORKFLOW) == 0:
                        return
                    provider.tasks.wait_for_work(WORK, timeout=0.05)
                    continue
                held_from = time.time()
                for state in claimed:
                    assert state.lease_expires_at is not None
                    at = (state.lease_expires_at - timedelta(seconds=LEASE)).timestamp()
                    after = "-" if state.run_after is None else state.run_after.timestamp()
                    task, key = state.task_exec_id, state.concurrency_key
                    log_line(log, "claim", task, key, state.priority, state.attempt, at, after, worker)
                for state in claimed:
                    task, key = state.task_exec_id, state.concurrency_key
                    try:
                        if int(task[1:]) % FAILS_FIRST == 0 and state.attempt == 1:
                            log_line(log, "hold", task, key, state.attempt, held_from, time.time())
                            provider.tasks.fail(task, worker=worker, error={"n": task}, retry_in=0.05)
                            continue
                        time.sleep(0.01)  # the work: long enough that a kill finds tasks held
                        log_line(log, "hold", task, key, state.attempt, held_from, time.time())
                        provider.tasks.update_state(state.evolve(status=TaskStatus.SUCCESS), state.version)
                    except ConflictError:  # its lease lapsed on a stalled machine and another took it
                        log_line(log, "lost", task, state.attempt)

        try:
            run_threads(threads, log, thread)
        finally:
            os.close(log)


def passed_over(claims: list[Claim], due: dict[tuple[str, int], float]) -> list[tuple[Claim, Claim]]:
    """Claims that took a task of lower priority while one of higher priority was due and left unclaimed.

    ``due`` gives, for the claims whose due time is known (``(task, attempt)``: its ``run_after``, or ``-inf``
    for a task due from its creation before the workers started), when that attempt became claimable. A
    violation is a claim ``c`` and such a claim ``u`` of higher priority, neither under a limit, with
    ``u`` due at least ``SLACK`` before ``c`` and claimed at least ``SLACK`` after it. The slack absorbs the
    one race that is not a violation: two claims run side by side, the one that locked ``u`` first reads its
    clock later (a descheduled backend), and the other skips the locked row. A claim that ordered by creation
    instead of priority leaves high-priority tasks waiting for seconds.
    """
    found: list[tuple[Claim, Claim]] = []
    for level in sorted({c.priority for c in claims}):
        spans = sorted(
            (
                (due[(u.task, u.attempt)] + SLACK, u.at - SLACK, u)
                for u in claims
                if u.priority == level and u.key == "None" and (u.task, u.attempt) in due
            ),
            key=lambda span: span[0],
        )
        spans = [s for s in spans if s[0] <= s[1]]
        starts = [s[0] for s in spans]
        reach: list[tuple[float, Claim | None]] = []  # the furthest end among spans starting up to here
        for _, end, u in spans:
            reach.append(max(reach[-1], (end, u), key=lambda r: r[0]) if reach else (end, u))
        for c in claims:
            if c.priority >= level:
                continue
            i = bisect.bisect_right(starts, c.at) - 1
            if i >= 0 and reach[i][0] >= c.at:
                culprit = reach[i][1]
                assert culprit is not None
                found.append((c, culprit))
    return found


def test_passed_over_flags_a_lower_priority_claim_while_a_higher_one_waits() -> None:
    u = Claim("high", "None", 2, 1, at=10.0, after=None, worker="w")
    early = Claim("low", "None", 0, 1, at=5.0, after=None, worker="w")
    close = Claim("near", "None", 0, 1, at=9.2, after=None, worker="w")  # within the slack: a race
    later = Claim("late", "None", 1, 1, at=11.0, after=None, worker="w")
    delayed = Claim("delayed", "None", 2, 1, at=20.0, after=12.0, worker="w")
    due = {("high", 1): float("-inf"), ("delayed", 1): 12.0}
    assert passed_over([u, early, close, later, delayed], due) == [(early, u)]
    assert passed_over([u, close, later, delayed], due) == []


def limits_delays_priorities_and_attempts_hold(url: str, tmp_path: Path, size: Size) -> None:
    logs = [tmp_path / f"worker-{p}.log" for p in range(size.processes)]
    with open_provider(url) as provider:
        fill(provider, size.tasks)
        processes = start(work, [(url, p, size.threads, str(logs[p])) for p in range(size.processes)])
        victims = processes[: size.kills]
        kill_after_progress(provider, WORKFLOW, size.tasks // 3, victims)
        join(processes)
        states = {s.task_exec_id: s for s in provider.tasks.iter_states(WORK)}
    assert [p.exitcode for p in victims] == [-signal.SIGKILL] * size.kills
    assert [p.exitcode for p in processes[size.kills :]] == [0] * (size.processes - size.kills)
    dead = {f"p{p}-t{t}" for p in range(size.kills) for t in range(size.threads)}

    claims: list[Claim] = []
    holds: dict[tuple[str, int], tuple[str, float, float]] = {}
    lost: Counter[str] = Counter()
    for fields in log_lines(logs):
        kind, *rest = fields
        assert kind in ("claim", "hold", "lost"), fields
        if kind == "claim":
            task, key, priority, attempt, at, after, worker = rest
            claims.append(
                Claim(
                    task,
                    key,
                    int(priority),
                    int(attempt),
                    float(at),
                    None if after == "-" else float(after),
                    worker,
                )
            )
        elif kind == "hold":
            task, key, attempt, start_, end = rest
            holds[(task, int(attempt))] = (key, float(start_), float(end))
        else:
            lost[rest[0]] += 1

    # Nothing claimed before its run_after, by the database's clock (1 ms: SQLite's clock has milliseconds).
    early = [c for c in claims if c.after is not None and c.at < c.after - 0.001]
    assert early == [], f"claimed before run_after: {early[:3]}"

    # The concurrency limit: never more than 3 holds of the key at once. A hold cut short by a kill lasted
    # until the lease lapsed (less 5 ms of clock reading); no hold outlasts its lease.
    limited: list[tuple[float, float]] = []
    for c in claims:
        if c.key != CONCURRENT_KEY:
            continue
        hold = holds.get((c.task, c.attempt))
        if hold is None:
            assert c.worker in dead, f"a live worker logged no hold of {c}"
            limited.append((c.at, c.at + LEASE - 0.005))
        else:
            limited.append((hold[1], min(hold[2], c.at + LEASE - 0.005)))
    assert most_overlapping(limited) <= CONCURRENCY

    # The rate limit: within any window of 0.5 s, at most 25 claims of the key.
    count, per = RATE
    times = sorted(c.at for c in claims if c.key == RATED_KEY)
    crowded = [(a, b) for a, b in zip(times, times[count:], strict=False) if b - a < per - 0.001]
    assert crowded == [], f"{len(crowded)} windows of {per} s held more than {count} claims"

    # Attempts exact.
    assert Counter(s.status for s in states.values()) == {TaskStatus.SUCCESS: size.tasks}
    by_task: dict[str, list[Claim]] = {}
    for c in claims:
        by_task.setdefault(c.task, []).append(c)
    unlogged = 0
    for task, state in states.items():
        taken = sorted(by_task.get(task, []), key=lambda c: c.attempt)
        attempts = [c.attempt for c in taken]
        assert len(set(attempts)) == len(attempts), f"two claims of {task} counted one attempt: {taken}"
        assert attempts and attempts[-1] == state.attempt, (task, attempts, state.attempt)
        base = 2 if int(task[1:]) % FAILS_FIRST == 0 else 1
        living = sum(c.worker not in dead for c in taken) - lost[task]
        if len(taken) == state.attempt and all(c.worker not in dead for c in taken):
            assert living == base, (task, taken)
        else:  # a killed worker took an attempt, and may have finished or failed the task before its kill
            assert 0 <= living <= base, (task, taken)
        unlogged += state.attempt - len(taken)
    assert 0 <= unlogged <= size.kills * size.threads * BATCH
    reclaimed = {c.task for c in claims if c.worker in dead and c.attempt < states[c.task].attempt}
    assert reclaimed or unlogged, "the kills hit no worker holding a task"

    # No due task passed over for a lower priority: the attempts whose due time the log gives (first
    # attempts, and the retry after a live worker's fail), unkeyed (a limit may rightly hold a task back).
    due: dict[tuple[str, int], float] = {}
    for task, taken in by_task.items():
        first = next((c for c in taken if c.attempt == 1), None)
        if first is None:
            continue
        due[(task, 1)] = first.after if first.after is not None else float("-inf")
        retry = next((c for c in taken if c.attempt == 2), None)
        if int(task[1:]) % FAILS_FIRST == 0 and first.worker not in dead and not lost[task] and retry:
            assert retry.after is not None
            due[(task, 2)] = retry.after
    skipped = passed_over(claims, due)
    assert skipped == [], f"{len(skipped)} claims passed over a due task of higher priority: {skipped[:3]}"
    print(
        f"\n{url.split(':', maxsplit=1)[0]} {size}: {len(claims)} logged claims ({unlogged} lost with the "
        f"kills), at most {most_overlapping(limited)} holds of {CONCURRENT_KEY!r} at once, {len(times)} rated "
        f"claims, {len(reclaimed)} reclaimed after the kills, {len(due)} attempts checked for priority, {sum(lost.values())} leases lost by the living"
    )


def suicidal(url: str, ready: str) -> None:
    """Claim the poison task and die holding it (SIGKILL), as a task that crashes its worker would."""
    with open_provider(url) as provider:
        Path(ready).touch()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if provider.tasks.claim(TaskFilter(task_exec_id="poison"), worker=f"pid{os.getpid()}", lease=0.3):
                os.kill(os.getpid(), signal.SIGKILL)
            if provider.tasks.get_state("poison").status is TaskStatus.FAILED:
                return
            time.sleep(0.05)


def poison_ends_failed(url: str, tmp_path: Path) -> None:
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-poison", "poison"))
        provider.tasks.upsert_state(TaskState("poison", "crash", "wf-poison", "poison", max_attempts=3))
    kills = 0
    for round_ in range(6):
        (process,) = start(suicidal, [(url, str(tmp_path / f"ready-{round_}"))])
        process.join(timeout=60)
        if process.exitcode == -signal.SIGKILL:
            kills += 1
            continue
        assert process.exitcode == 0
        break
    with open_provider(url) as provider:
        dead = provider.tasks.get_state("poison")
        stats = provider.tasks.queue_stats()
    assert kills == 3 and dead.attempt == 3 and dead.status is TaskStatus.FAILED
    assert dead.last_error is not None and dead.last_error["error"] == "attempts exhausted"
    assert stats.dead == 1


def enqueue(url: str, process: int, threads: int, go: Event, out: str) -> None:
    log = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    with open_provider(url) as provider:

        def thread(index: int) -> None:
            go.wait(30)
            for key in range(10):
                state = TaskState(
                    f"d{key}-p{process}-t{index}", "job", "wf-dedup", "dedup", dedup_key=f"key-{key}"
                )
                log_line(log, "got", provider.tasks.upsert_state(state).task_exec_id)

        try:
            run_threads(threads, log, thread)
        finally:
            os.close(log)


def concurrent_enqueues_create_one_task(url: str, tmp_path: Path, size: Size) -> None:
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-dedup", "dedup"))
    go = multiprocessing.get_context("spawn").Event()
    outs = [tmp_path / f"enqueued-{p}" for p in range(size.processes)]
    processes = start(enqueue, [(url, p, size.threads, go, str(outs[p])) for p in range(size.processes)])
    time.sleep(2)  # the processes have opened their providers
    go.set()
    join(processes)
    assert [p.exitcode for p in processes] == [0] * size.processes
    lines = log_lines(outs)
    assert {kind for kind, *_ in lines} == {"got"}, lines
    returned = [fields[1] for fields in lines]
    assert len(returned) == size.processes * size.threads * 10
    with open_provider(url) as provider:
        stored = list(provider.tasks.iter_states(TaskFilter(workflow_exec_id="wf-dedup")))
    assert sorted(s.dedup_key or "" for s in stored) == [f"key-{k}" for k in range(10)]
    holder = {s.dedup_key: s.task_exec_id for s in stored}
    for task_exec_id in returned:  # every enqueue got the one task of its key
        assert holder[f"key-{task_exec_id.split('-')[0][1:]}"] == task_exec_id
    assert set(returned) == set(holder.values())


def test_sqlite_file_limits_delays_priorities_and_attempts_hold_across_processes(tmp_path: Path) -> None:
    limits_delays_priorities_and_attempts_hold(f"sqlite:///{tmp_path / 'queue.db'}", tmp_path, CI)


def test_sqlite_file_a_task_that_kills_its_worker_ends_failed(tmp_path: Path) -> None:
    poison_ends_failed(f"sqlite:///{tmp_path / 'queue.db'}", tmp_path)


def test_sqlite_file_concurrent_enqueues_with_one_dedup_key_create_one_task(tmp_path: Path) -> None:
    concurrent_enqueues_create_one_task(f"sqlite:///{tmp_path / 'queue.db'}", tmp_path, CI)


@pytest.mark.postgres
def test_postgres_limits_delays_priorities_and_attempts_hold_across_processes(
    postgres_url: str, tmp_path: Path
) -> None:
    limits_delays_priorities_and_attempts_hold(postgres_url, tmp_path, CI)


@pytest.mark.postgres
def test_postgres_a_task_that_kills_its_worker_ends_failed(postgres_url: str, tmp_path: Path) -> None:
    poison_ends_failed(postgres_url, tmp_path)


@pytest.mark.postgres
def test_postgres_concurrent_enqueues_with_one_dedup_key_create_one_task(
    postgres_url: str, tmp_path: Path
) -> None:
    concurrent_enqueues_create_one_task(postgres_url, tmp_path, CI)


@pytest.mark.soak
def test_sqlite_file_issue_size_limits_delays_priorities_and_attempts_hold(tmp_path: Path) -> None:
    limits_delays_priorities_and_attempts_hold(f"sqlite:///{tmp_path / 'queue.db'}", tmp_path, ISSUE)


@pytest.mark.soak
@pytest.mark.postgres
def test_postgres_issue_size_limits_delays_priorities_and_attempts_hold(
    postgres_url: str, tmp_path: Path
) -> None:
    limits_delays_priorities_and_attempts_hold(postgres_url, tmp_path, ISSUE)


@pytest.mark.soak
@pytest.mark.postgres
def test_postgres_issue_size_concurrent_enqueues_with_one_dedup_key_create_one_task(
    postgres_url: str, tmp_path: Path
) -> None:
    concurrent_enqueues_create_one_task(postgres_url, tmp_path, ISSUE)
