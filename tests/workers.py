"""What the multi-process worker tests share: worker processes of threads that log one line per ``write`` (so a
SIGKILL loses no logged line), starting, killing and joining them, and the overlap of logged intervals.

Used by ``tests/test_claim_workers.py`` (exactly-once claims) and ``tests/test_queue_workers.py`` (limits,
delays, priorities, retries and deduplication).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from pathlib import Path

import pytest

from planflow import Provider, TaskFilter, TaskStatus


def unfinished(provider: Provider, workflow: str) -> int:
    """How many tasks of ``workflow`` are still PENDING or RUNNING."""
    return sum(
        provider.tasks.count_states(TaskFilter(workflow_exec_id=workflow, status=status))
        for status in (TaskStatus.PENDING, TaskStatus.RUNNING)
    )


def run_threads(threads: int, log: int, body: Callable[[int], None]) -> None:
    """Run ``body(index)`` on ``threads`` threads; a failure is logged as an ``error`` line and raised at the end."""
    failures: list[BaseException] = []

    def thread(index: int) -> None:
        try:
            body(index)
        except BaseException as exc:
            failures.append(exc)
            os.write(log, f"error t{index} {exc!r}\n".encode())

    running = [threading.Thread(target=thread, args=(i,)) for i in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    if failures:
        raise failures[0]


def log_line(log: int, *fields: object) -> None:
    """Append one line of space-separated fields to ``log`` in one ``write``."""
    os.write(log, (" ".join(str(f) for f in fields) + "\n").encode())


def start(target: Callable[..., None], args: Sequence[tuple[object, ...]]) -> list[BaseProcess]:
    """Start one spawned process per argument tuple."""
    context = multiprocessing.get_context("spawn")
    processes: list[BaseProcess] = [context.Process(target=target, args=a) for a in args]
    for process in processes:
        process.start()
    return processes


def join(processes: list[BaseProcess], timeout: float = 300) -> None:
    """Wait for every process; fail the test (killing the stragglers) if one outlives ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            pytest.fail(f"a worker process did not finish within {timeout} s")


def kill_after_progress(
    provider: Provider, workflow: str, done: int, victims: list[BaseProcess], timeout: float = 120
) -> None:
    """SIGKILL ``victims`` once ``done`` tasks of ``workflow`` are SUCCESS (fails if no progress in time)."""
    deadline = time.monotonic() + timeout
    success = TaskFilter(workflow_exec_id=workflow, status=TaskStatus.SUCCESS)
    while provider.tasks.count_states(success) < done:
        assert time.monotonic() < deadline, "the workers made no progress"
        time.sleep(0.05)
    for process in victims:
        os.kill(process.pid or 0, signal.SIGKILL)


def log_lines(paths: list[Path]) -> list[list[str]]:
    """Every logged line of ``paths``, split into fields."""
    return [line.split() for path in paths if path.exists() for line in path.read_text().splitlines()]


def most_overlapping(intervals: list[tuple[float, float]]) -> int:
    """The most intervals that overlap at any instant (an end sorts before a start at the same instant)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = current = 0
    for _, change in events:
        current += change
        most = max(most, current)
    return most
