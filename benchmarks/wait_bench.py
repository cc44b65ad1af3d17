"""How soon ``tasks.wait_for_work`` wakes after a commit makes work claimable (issues 16 and 24).

    .venv/bin/python -m benchmarks.wait_bench [--rounds 100]

A waiter waits for a workflow of its own; the writer adds one pending task once the waiter is waiting, and the
wake-up is the time from the writer's commit returning to the waiter's ``wait_for_work`` returning, on the
machine's one wall clock. Waiters: a thread of the writing process (SQLite's in-process signal; PostgreSQL's
shared listening connection), and a process of its own (SQLite's ``PRAGMA data_version`` poll, every 50 ms;
PostgreSQL's LISTEN/NOTIFY). The tests (``tests/test_wait_for_work.py``) prove that every commit wakes the
waiter; the figures are here, since a timing asserted in a test fails on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager

from benchmarks.compare import postgres_schema, sqlite_file
from planflow import TaskFilter, open_provider
from tests.test_wait_for_work import across_processes, add_work, prepare, wf


def in_process(url: str, rounds: int) -> list[float]:
    """Wake-up delays of a waiting thread of the writing process, in seconds."""
    delays: list[float] = []
    with open_provider(url) as provider:
        prepare(provider)
        for i in range(rounds):
            woke: list[float] = []
            waiting = threading.Event()

            def wait(i: int, waiting: threading.Event, woke: list[float]) -> None:
                waiting.set()
                if provider.tasks.wait_for_work(TaskFilter(workflow_exec_id=wf(i)), timeout=30):
                    woke.append(time.time())

            thread = threading.Thread(target=wait, args=(i, waiting, woke))
            thread.start()
            waiting.wait()
            time.sleep(0.02)
            committed = add_work(provider, i)
            thread.join(30)
            delays.append(max(0.0, woke[0] - committed) if woke else float("inf"))
    return delays


def line(name: str, delays: list[float]) -> str:
    p99 = statistics.quantiles(delays, n=100)[98]
    return (
        f"{name:40} p50 {statistics.median(delays) * 1000:7.2f} ms   p99 {p99 * 1000:7.2f} ms   "
        f"max {max(delays) * 1000:7.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=100, help="commits per waiter (at most 100)")
    rounds = min(parser.parse_args().rounds, 100)
    runs: list[tuple[str, Callable[[str], list[float]], Callable[[], AbstractContextManager[str]]]] = [
        ("sqlite, thread of the writer", lambda url: in_process(url, rounds), sqlite_file),
        ("sqlite, another process (poll)", across_processes, sqlite_file),
        ("postgres, thread of the writer", lambda url: in_process(url, rounds), postgres_schema),
        ("postgres, another process (NOTIFY)", across_processes, postgres_schema),
    ]
    for name, measure, place in runs:
        with place() as where:
            url = where if "://" in where else f"sqlite:///{where}"
            print(line(name, measure(url)), flush=True)


if __name__ == "__main__":
    main()
