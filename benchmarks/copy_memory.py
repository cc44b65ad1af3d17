"""``python -m benchmarks.copy_memory``: how much memory and time ``planflow copy`` takes as the store grows.

Seeds a source store with ``--tasks`` task states (workflows of 1 000 tasks: ten parallel parents of 99
children each, with JSON input, output and usage), and a small one with a tenth as many, then runs the real
command (``python -m planflow copy --from SOURCE --to TARGET --json``) in a child process for each and reads
the child's peak resident memory from ``os.wait4``. The floor is ``planflow status`` on the same source: the
interpreter, planflow and the drivers, before any record is held. A streaming copy stays near the floor
whatever the size; one that held the records would grow with them (100 000 such tasks are about 250 MB as
Python objects).

Source and target are SQLite files or Postgres schemas (``--from``/``--to``; Postgres uses
``$PLANFLOW_BENCH_POSTGRES_URL``, else ``$PLANFLOW_TEST_POSTGRES_URL``, else the local server), created fresh
and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.console import Console
from rich.table import Table

from benchmarks.databases import DEFAULT_POSTGRES_URL, DatabaseFactory, PostgresFactory, SqliteFactory
from planflow import ExecutionType, TaskState, TaskStatus, UsageEntry, UsageSummary, WorkflowState

PER_WORKFLOW = 1000
FAN_OUT = 99


@dataclass(frozen=True, slots=True)
class ChildRun:
    """One run of the command in a child process."""

    label: str
    tasks: int
    seconds: float
    max_rss_mb: float
    output: str


def seed(url: str, tasks: int) -> None:
    """Fill the store at ``url`` with ``tasks`` task states (a multiple of 1 000) in workflows of 1 000."""
    from planflow import open_provider

    usage = UsageSummary((UsageEntry("openai", "gpt-4o", "task", 120, 80, 200),))
    with open_provider(url) as provider:
        for w in range(tasks // PER_WORKFLOW):
            wf = f"wf-{w:05d}"
            provider.workflows.upsert_state(WorkflowState(wf, "copy-bench", status=TaskStatus.SUCCESS))
            states: list[TaskState] = []
            for p in range(PER_WORKFLOW // (FAN_OUT + 1)):
                parent = f"{wf}/p{p}"
                states.append(
                    TaskState(parent, f"p{p}", wf, "copy-bench", execution_type=ExecutionType.PARALLEL)
                )
                states += [
                    TaskState(
                        f"{parent}/c{c}",
                        f"c{c}",
                        wf,
                        "copy-bench",
                        status=TaskStatus.SUCCESS,
                        parent_state_id=parent,
                        input={"prompt": "summarise the report " * 8, "item": c},
                        output={"summary": "a short answer " * 6, "score": c / FAN_OUT},
                        usage=usage,
                    )
                    for c in range(FAN_OUT)
                ]
            provider.tasks.bulk_upsert(states)


def run_child(label: str, tasks: int, args: Sequence[str]) -> ChildRun:
    """Run ``python -m planflow ARGS``; its wall time and peak resident memory (``ru_maxrss``, KiB on Linux)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PLANFLOW_DB_", "PLANFLOW_DATABASE_URL"))}
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "planflow", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert child.stdout is not None and child.stderr is not None
    # Large outputs would block the child on a full pipe: read them before waiting.
    out, err = child.stdout.read(), child.stderr.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"planflow {' '.join(args[:1])} failed ({child.returncode}): {err.decode().strip()}")
    return ChildRun(label, tasks, seconds, usage.ru_maxrss / 1024, out.decode())


def factory_for(driver: str, workdir: str | None) -> DatabaseFactory:
    """Fresh databases of ``driver``: SQLite files under ``workdir`` (default: the system's temp folder)."""
    if driver == "sqlite":
        return SqliteFactory(workdir)
    url = os.environ.get("PLANFLOW_BENCH_POSTGRES_URL") or os.environ.get(
        "PLANFLOW_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL
    )
    return PostgresFactory(url)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.copy_memory", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--tasks", type=int, default=100_000, help="tasks in the large store (default 100 000)"
    )
    parser.add_argument("--from", dest="source", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--to", dest="target", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--workdir", help="folder for the SQLite files (default: the system's temp folder)")
    options = parser.parse_args(argv)
    if options.tasks < 2 * PER_WORKFLOW or options.tasks % PER_WORKFLOW:
        parser.error(f"--tasks must be a multiple of {PER_WORKFLOW} and at least {2 * PER_WORKFLOW}")
    small = max(PER_WORKFLOW, options.tasks // 10 // PER_WORKFLOW * PER_WORKFLOW)

    console = Console()
    sources, targets = (
        factory_for(options.source, options.workdir),
        factory_for(options.target, options.workdir),
    )
    try:
        runs: list[ChildRun] = []
        for tasks in (small, options.tasks):
            source = sources.create("copy-source")
            target = targets.create("copy-target")
            console.print(f"seeding {tasks:,} tasks into {options.source} ...")
            seed(source.url, tasks)
            if not runs:
                runs.append(run_child("floor: status", tasks, ["status", "--db", source.url]))
            run = run_child(
                f"copy {options.source} -> {options.target}",
                tasks,
                ["copy", "--from", source.url, "--to", target.url, "--json"],
            )
            report = json.loads(run.output)
            if not report["verified"]:
                raise SystemExit(f"the copy of {tasks} tasks did not verify: {report}")
            copied = {table["name"]: table["written"] for table in report["tables"]}
            if copied.get("tasks") != tasks:
                raise SystemExit(f"expected {tasks} tasks copied, the report says {copied}")
            runs.append(run)
            source.drop()
            target.drop()
    finally:
        sources.close()
        targets.close()

    floor = runs[0].max_rss_mb
    table = Table(title="planflow copy: peak memory of the command (ru_maxrss of the child process)")
    for column in ("run", "tasks", "seconds", "peak RSS MB", "above floor MB"):
        table.add_column(column, justify="left" if column == "run" else "right", no_wrap=True)
    for run in runs:
        table.add_row(
            run.label,
            f"{run.tasks:,}",
            f"{run.seconds:.1f}",
            f"{run.max_rss_mb:.1f}",
            "" if run is runs[0] else f"{run.max_rss_mb - floor:.1f}",
        )
    console.print(table)
    small_run, large_run = runs[1], runs[2]
    console.print(
        f"{large_run.tasks / small_run.tasks:.0f}x the tasks: "
        f"peak memory x{large_run.max_rss_mb / small_run.max_rss_mb:.2f}, "
        f"time x{large_run.seconds / small_run.seconds:.1f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
