"""Hot paths of issue 14, against hand-written SQL doing the minimal work, interleaved in one run.

    .venv/bin/python -m benchmarks.hot_paths [--driver sqlite|postgres|all] [--quick]

1. ``complete_workflow`` of a workflow of 5 000 tasks (100 top-level): planflow against the minimal unit (lock
   the workflow row, read the top-level tasks' id, status and output, write the result): target <= 1.5x; the
   whole call, an upper bound of how long the row (SQLite: the database) stays locked, <= 5 ms.
2. ``get_child_by_task_id`` among 10 000 and 30 000 children of one parent: time per call.
3. ``list_tasks_in_workflow`` of 5 000 states of 1 000 task ids (5 executions each): planflow (the newest per
   task id chosen in SQL) against decoding every row and keeping the newest in Python (what it did before).
4. Peak memory of iterating 100 000 tasks (``iter_states``, ``iter_task_tree``) in a fresh process, against
   materialising them (``get_task_tree``): target <= 60 MiB.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.string import TextLoader

from benchmarks.compare import interleave, ms, postgres_schema, sqlite_file, us
from planflow import Provider, TaskState, TaskStatus, WorkflowState, open_provider
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql import workflows as workflows_sql
from planflow.infra.sql.codec import loads
from planflow.infra.sql.tables import TASK_STATES

COMPLETE_TOP = 100
COMPLETE_TASKS = 5_000


@contextmanager
def store(driver: str) -> Iterator[tuple[Provider, Callable[[], Any], str]]:
    """A provider on a fresh database, a factory of raw connections to it, and the placeholder style."""
    if driver == "sqlite":
        with sqlite_file() as path, open_provider(f"sqlite:///{path}") as provider:
            yield provider, lambda: sqlite3.connect(path, isolation_level=None), "?"
    else:

        def connect() -> psycopg.Connection[Any]:
            # JSON as text, as planflow reads it, so that both sides decode it the same way.
            conn = psycopg.connect(url, autocommit=True)
            conn.adapters.register_loader("jsonb", TextLoader)
            return conn

        with postgres_schema() as url, open_provider(url) as provider:
            yield provider, connect, "%s"


def q(sql: str, style: str) -> str:
    return sql if style == "?" else sql.replace("?", "%s")


def seed_complete(provider: Provider) -> str:
    wf = provider.workflows.upsert_state(WorkflowState("wf-complete", "bench", status=TaskStatus.RUNNING))
    states: list[TaskState] = []
    per_top = COMPLETE_TASKS // COMPLETE_TOP - 1
    for top in range(COMPLETE_TOP):
        parent = f"top-{top:03d}"
        states.append(
            TaskState(
                parent,
                f"step-{top}",
                wf.workflow_exec_id,
                "bench",
                status=TaskStatus.SUCCESS,
                output={"n": top},
            )
        )
        states += [
            TaskState(
                f"{parent}/{i}",
                "child",
                wf.workflow_exec_id,
                "bench",
                status=TaskStatus.SUCCESS,
                parent_state_id=parent,
                output={"i": i},
            )
            for i in range(per_top)
        ]
    provider.tasks.bulk_upsert(states)
    return wf.workflow_exec_id


def bench_complete(driver: str, rounds: int) -> dict[str, object]:
    with store(driver) as (provider, connect, style):
        wf = seed_complete(provider)
        raw = connect()
        lock = "BEGIN IMMEDIATE" if style == "?" else "BEGIN"
        for_update = "" if style == "?" else " FOR UPDATE"

        def reset() -> None:
            raw.execute(
                q("UPDATE workflow_states SET status = 'RUNNING' WHERE workflow_exec_id = ?", style), [wf]
            )

        def minimal() -> None:
            raw.execute(lock)
            raw.execute(
                q(f"SELECT status FROM workflow_states WHERE workflow_exec_id = ?{for_update}", style), [wf]
            ).fetchone()
            top = raw.execute(q(workflows_sql.TOP_LEVEL, style), [wf]).fetchall()
            output = json.dumps({task_id: None if out is None else loads(out) for task_id, _, out in top})
            raw.execute(
                q(
                    "UPDATE workflow_states SET status = 'SUCCESS', output = ?, version = version + 1 WHERE workflow_exec_id = ?",
                    style,
                ),
                [output, wf],
            )
            raw.execute("COMMIT")

        result = interleave(
            {"planflow": lambda: provider.workflows.complete_workflow(wf), "minimal": minimal},
            rounds=rounds,
            before=reset,
        )
        raw.close()
    ratio = result.ratio("planflow", "minimal")
    hold = result.median("planflow")
    print(
        f"{driver:8} complete_workflow, {COMPLETE_TASKS} tasks ({COMPLETE_TOP} top-level): planflow {ms(hold)}, "
        f"minimal {ms(result.median('minimal'))}, ratio {ratio:.2f} (target <= 1.5), lock held <= {ms(hold)} "
        f"(target <= 5 ms)"
    )
    return {"ratio": ratio, "planflow_s": hold, "minimal_s": result.median("minimal")}


def bench_child_lookup(driver: str, rounds: int, children: int) -> dict[str, object]:
    with store(driver) as (provider, connect, style):
        wf = provider.workflows.upsert_state(WorkflowState("wf-children", "bench"))
        provider.tasks.upsert_state(TaskState("parent", "p", wf.workflow_exec_id, "bench"))
        provider.tasks.bulk_upsert(
            TaskState(
                f"child-{i}", f"task-{i % 1000}", wf.workflow_exec_id, "bench", parent_state_id="parent"
            )
            for i in range(children)
        )
        raw = connect()
        calls = 500

        def planflow() -> None:
            for i in range(calls):
                provider.tasks.get_child_by_task_id("parent", f"task-{i % 1000}")

        def hand_written() -> None:
            for i in range(calls):
                TASK_STATES.from_row(
                    raw.execute(q(tasks_sql.CHILD_BY_TASK, style), ["parent", f"task-{i % 1000}"]).fetchone(),
                    provider_load_ts(driver),
                )

        result = interleave({"planflow": planflow, "raw": hand_written}, rounds=rounds)
        raw.close()
    per_call = result.median("planflow") / calls
    print(
        f"{driver:8} get_child_by_task_id among {children} children: planflow {us(per_call)} a call, "
        f"raw {us(result.median('raw') / calls)} (ratio {result.ratio('planflow', 'raw'):.2f})"
    )
    return {"children": children, "planflow_call_s": per_call, "ratio": result.ratio("planflow", "raw")}


def provider_load_ts(driver: str) -> Callable[[Any], Any]:
    if driver == "sqlite":
        from planflow.infra.sqlite.dialect import load_ts
    else:
        from planflow.infra.postgres.dialect import load_ts
    return load_ts


def bench_latest(driver: str, rounds: int) -> dict[str, object]:
    with store(driver) as (provider, connect, style):
        wf = provider.workflows.upsert_state(WorkflowState("wf-latest", "bench"))
        provider.tasks.bulk_upsert(
            TaskState(
                f"exec-{i}", f"task-{i % 1000}", wf.workflow_exec_id, "bench", output={"round": i // 1000}
            )
            for i in range(5_000)
        )
        raw = connect()
        load_ts = provider_load_ts(driver)

        def in_python() -> dict[str, TaskState]:
            rows = raw.execute(q(tasks_sql.IN_WORKFLOW, style), [wf.workflow_exec_id]).fetchall()
            return {s.task_id: s for s in (TASK_STATES.from_row(row, load_ts) for row in rows)}

        def in_sql() -> dict[str, TaskState]:
            rows = raw.execute(q(workflows_sql.TASKS, style), [wf.workflow_exec_id]).fetchall()
            return {s.task_id: s for s in (TASK_STATES.from_row(row, load_ts) for row in rows)}

        assert provider.tasks.list_tasks_in_workflow(wf.workflow_exec_id) == in_python()
        result = interleave(
            {
                "planflow": lambda: provider.tasks.list_tasks_in_workflow(wf.workflow_exec_id),
                "decode all, keep newest": in_python,
                "raw, newest in SQL": in_sql,
            },
            rounds=rounds,
        )
        raw.close()
    print(
        f"{driver:8} list_tasks_in_workflow, 5000 states of 1000 task ids: planflow {ms(result.median('planflow'))}, "
        f"decoding every row {ms(result.median('decode all, keep newest'))} "
        f"({result.ratio('decode all, keep newest', 'planflow'):.2f}x planflow), raw newest-in-SQL "
        f"{ms(result.median('raw, newest in SQL'))} (planflow/raw {result.ratio('planflow', 'raw, newest in SQL'):.2f})"
    )
    return {"speedup_over_decoding_all": result.ratio("decode all, keep newest", "planflow")}


MEMORY_PROBE = """
import resource, sys
from planflow import open_provider
mode, url = sys.argv[1], sys.argv[2]
with open_provider(url) as provider:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if mode == "iter_states":
        count = sum(1 for _ in provider.tasks.iter_states())
    elif mode == "iter_task_tree":
        count = sum(1 for _ in provider.tasks.iter_task_tree("root"))
    else:
        count = len(provider.tasks.get_task_tree("root"))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(count, before, peak)
"""


def bench_memory(driver: str, tasks: int) -> dict[str, object]:
    with store(driver) as (provider, _, _style):
        wf = provider.workflows.upsert_state(WorkflowState("wf-memory", "bench"))
        provider.tasks.upsert_state(TaskState("root", "root", wf.workflow_exec_id, "bench"))
        provider.tasks.bulk_upsert(
            TaskState(
                f"t-{i}",
                "t",
                wf.workflow_exec_id,
                "bench",
                parent_state_id="root" if i < 100 else f"t-{i % 100}",
                input={"i": i, "text": "x" * 40},
            )
            for i in range(tasks - 1)
        )
        url = provider_url(provider)
        figures: dict[str, object] = {}
        for mode in ("iter_states", "iter_task_tree", "get_task_tree"):
            out = subprocess.run(
                [sys.executable, "-c", MEMORY_PROBE, mode, url], check=True, capture_output=True, text=True
            ).stdout.split()
            count, before, peak = int(out[0]), int(out[1]) / 1024, int(out[2]) / 1024
            figures[mode] = {"count": count, "peak_mib": peak, "before_mib": before}
            target = " (target <= 60 MiB)" if mode != "get_task_tree" else " (materialised, for comparison)"
            print(
                f"{driver:8} {mode} of {count} tasks: peak RSS {peak:.0f} MiB, {before:.0f} MiB before{target}"
            )
    return figures


def provider_url(provider: Provider) -> str:
    config = provider.config
    return config.url if config.driver == "postgres" and config.url else f"sqlite:///{config.path}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.hot_paths", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--driver", choices=["sqlite", "postgres", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="fewer rounds and a 20 000-task memory probe")
    args = parser.parse_args(argv)
    rounds = 3 if args.quick else 9
    drivers = ["sqlite", "postgres"] if args.driver == "all" else [args.driver]
    started = time.monotonic()
    report: dict[str, object] = {}
    for driver in drivers:
        report[driver] = {
            "complete_workflow": bench_complete(driver, rounds),
            "child_lookup": [bench_child_lookup(driver, rounds, n) for n in (10_000, 30_000)],
            "latest_per_task": bench_latest(driver, rounds),
            "memory": bench_memory(driver, 20_000 if args.quick else 100_000),
        }
    print(f"took {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
