"""The cost of run history (issue 28): ``tasks.update_state`` with history against without.

    .venv/bin/python -m benchmarks.history_bench [--quick] [--driver sqlite|postgres|all]

Two stores of each driver, both migrated by planflow; in the one "without", the history triggers are dropped
(that is all history costs a write: the triggers append the records in the statement that changes a state).
Each round runs the same calls on both, in an order rotated round by round; medians of seconds per round and
their ratio (target: with/without <= 1.25) are reported for two workloads:

- **status**: every ``update_state`` changes the task's status (PENDING <-> RUNNING), so every call appends a
  record: the worst case.
- **output**: every ``update_state`` changes only the output (progress of a running task): no record, only the
  triggers' conditions are evaluated.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from benchmarks.compare import postgres_schema, sqlite_file
from planflow import Provider, TaskState, TaskStatus, WorkflowState, open_provider

TRIGGERS = (
    "planflow_history_task_insert",
    "planflow_history_task_update",
    "planflow_history_workflow_insert",
    "planflow_history_workflow_update",
)
FLIP = {TaskStatus.PENDING: TaskStatus.RUNNING, TaskStatus.RUNNING: TaskStatus.PENDING}


@contextmanager
def store(driver: str, *, history: bool) -> Iterator[Provider]:
    """A fresh migrated store; without its history triggers unless ``history``."""
    opened = sqlite_file() if driver == "sqlite" else postgres_schema()
    with opened as where:
        url = f"sqlite:///{where}" if driver == "sqlite" else where
        with open_provider(url) as provider:
            if not history:  # migrated by opening; the triggers go on a connection of their own
                _drop_triggers(driver, url)
            yield provider


def _drop_triggers(driver: str, url: str) -> None:
    if driver == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            for name in TRIGGERS:
                conn.execute(f"DROP TRIGGER {name}")
        conn.close()
        return
    with psycopg.connect(url, autocommit=True) as pg:
        for name in TRIGGERS:
            table = "task_states" if "task" in name else "workflow_states"
            pg.execute(sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(name), sql.Identifier(table)))


def seed(provider: Provider, tasks: int) -> list[TaskState]:
    provider.workflows.upsert_state(WorkflowState("wf", "history-bench", TaskStatus.RUNNING))
    states = [TaskState(f"t{i:05d}", "step", "wf", "history-bench", input={"i": i}) for i in range(tasks)]
    provider.tasks.bulk_upsert(states)
    return provider.tasks.list_states(limit=tasks).items


def workload(provider: Provider, states: list[TaskState], kind: str) -> Callable[[], list[TaskState]]:
    """One round: one ``update_state`` of every task; returns the states as stored."""
    current = {"states": states}

    def run() -> list[TaskState]:
        done: list[TaskState] = []
        for state in current["states"]:
            changed = (
                state.evolve(status=FLIP[state.status])
                if kind == "status"
                else state.evolve(output={"progress": state.version})
            )
            done.append(provider.tasks.update_state(changed, state.version))
        current["states"] = done
        return done

    return run


def measure(driver: str, kind: str, *, tasks: int, rounds: int) -> tuple[float, float]:
    """Median seconds per round with history and without."""
    with store(driver, history=True) as on, store(driver, history=False) as off:
        runs = {
            "with": workload(on, seed(on, tasks), kind),
            "without": workload(off, seed(off, tasks), kind),
        }
        for run in runs.values():  # warm-up
            run()
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        names = list(runs)
        for r in range(rounds):
            for name in names[r % 2 :] + names[: r % 2]:
                started = time.perf_counter()
                runs[name]()
                seconds[name].append(time.perf_counter() - started)
        records = len(on.workflows.history("wf", include_tasks=True, limit=10_000_000))
        expected = 1 + tasks * (1 + ((rounds + 1) if kind == "status" else 0))
        assert records == expected, f"{records} history records, expected {expected}"
        return statistics.median(seconds["with"]), statistics.median(seconds["without"])


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer tasks and rounds")
    parser.add_argument("--driver", choices=["sqlite", "postgres", "all"], default="all")
    args = parser.parse_args()
    tasks, rounds = (200, 5) if args.quick else (1000, 9)
    drivers = ["sqlite", "postgres"] if args.driver == "all" else [args.driver]
    print(f"update_state x {tasks} tasks per round, {rounds} rounds (medians); target with/without <= 1.25")
    for driver in drivers:
        for kind in ("status", "output"):
            with_, without = measure(driver, kind, tasks=tasks, rounds=rounds)
            print(
                f"{driver:8} {kind:6}  with history {with_ / tasks * 1e6:7.1f} us/call  "
                f"without {without / tasks * 1e6:7.1f} us/call  ratio {with_ / without:.3f}"
            )


if __name__ == "__main__":
    main()
