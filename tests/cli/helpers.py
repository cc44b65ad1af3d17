"""What the command-line tests share: running the real ``planflow`` command, and reading stores back.

Stores are compared through the repositories, record by record with dataclass equality (every field: ids,
versions, timestamps, JSON, usage), independently of the command's own checksums.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from planflow import (
    ExecutionRepository,
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskOccurrence,
    TaskState,
    TaskStatus,
    UnsupportedError,
    WorkflowState,
    open_provider,
)
from planflow.cli.demo import build_plan

SCRIPT = Path(sys.executable).with_name("planflow")
TERMINAL = {"SUCCESS", "FAILED", "CANCELED", "TIMED_OUT"}


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    @property
    def both(self) -> str:
        return self.out + self.err

    def json(self) -> object:
        assert self.code == 0, self.err
        return json.loads(self.out)


def planflow(*args: str, cwd: Path, script: bool = False, env: dict[str, str] | None = None) -> Run:
    """Run the command (``python -m planflow``, or the console script) with a clean planflow environment."""
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("PLANFLOW_DB_", "PLANFLOW_DATABASE_URL"))
    }
    environ["COLUMNS"] = "200"
    environ.update(env or {})
    command = [str(SCRIPT)] if script else [sys.executable, "-m", "planflow"]
    done = subprocess.run(
        [*command, *args], cwd=cwd, env=environ, capture_output=True, text=True, timeout=600, check=False
    )
    return Run(done.returncode, done.stdout, done.stderr)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def all_tasks(url: str) -> list[TaskState]:
    """Every task state of the store, page by page."""
    found: list[TaskState] = []
    cursor: str | None = None
    with open_provider({"url": url, "auto_migrate": False}) as provider:
        while True:
            page = provider.tasks.list_states(limit=500, cursor=cursor)
            found += page.items
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor


def snapshot(url: str) -> dict[str, object]:
    """Every record of every repository the store serves, as the repositories return them."""
    out: dict[str, object] = {}
    with open_provider({"url": url, "auto_migrate": False}) as provider:
        try:
            # Raises UnsupportedError on tinydb before all_tasks opens a second provider (refused on one file).
            provider.tasks.list_states(limit=1)
            out["tasks"] = sorted(all_tasks(url), key=lambda s: s.task_exec_id)
            workflows: list[WorkflowState] = []
            cursor: str | None = None
            while True:
                page = provider.workflows.list_states(limit=100, cursor=cursor)
                workflows += page.items
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
            out["workflows"] = sorted(workflows, key=lambda w: w.workflow_exec_id)
            users = provider.auth.list_users()
            out["users"] = sorted(users, key=lambda u: u.id)
            out["api_keys"] = sorted(
                (k for u in users for k in provider.auth.list_api_keys(u.id)), key=lambda k: k.id
            )
        except UnsupportedError:
            pass
        out["exec_tasks"] = provider.executions.list_tasks()
        out["exec_occurrences"] = provider.executions.list_occurrences()
        out["exec_executions"] = provider.executions.list_executions()
    return out


def add_auth_and_addon_data(url: str) -> None:
    """Users with API keys (one used), and the add-on's records with naive and aware datetimes."""
    with open_provider(url) as provider:
        admin = provider.auth.create_initial_admin("Admin@Example.com")
        user = provider.auth.create_user("ops@example.com")
        key = provider.auth.create_api_key(user.id)
        provider.auth.touch_api_key(key.key.id)
        provider.auth.create_api_key(admin.id)
        add_addon_data(provider.executions)


def add_addon_data(repo: ExecutionRepository) -> None:
    with repo.batch():
        for i in range(4):
            repo.add_task(
                TaskDefinition(
                    id=f"t{i}",
                    title=f"Take pill {i}",
                    description="twice a day" if i % 2 else None,
                    link=None,
                    created_at=datetime(2024, 3, 1, 8, i),
                    recurrence=timedelta(hours=12) if i % 2 else None,
                    priority="high" if i else "low",
                    preferred_slots=["morning", "evening"][: i % 3],
                    retry_policy=RetryPolicy(max_retries=i),
                    pinned_time=datetime(2024, 3, 2, 9, tzinfo=UTC) if i == 2 else None,
                )
            )
            for j in range(3):
                repo.add_occurrence(
                    TaskOccurrence(
                        f"o{i}-{j}", f"t{i}", datetime(2024, 3, 1 + j, 8), "morning" if j else None, None
                    )
                )
                repo.add_execution(
                    TaskExecution(
                        f"o{i}-{j}",
                        "missed" if j == 1 else "pending",
                        2,
                        [
                            TaskEvent("triggered", datetime(2024, 3, 1 + j, 8)),
                            TaskEvent("rescheduled", datetime(2024, 3, 1 + j, 9, 30, tzinfo=UTC)),
                        ],
                    )
                )


_AS_AT_A_TERMINAL = (
    "import runpy, signal, sys\n"
    "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
    "sys.argv = ['planflow', *sys.argv[1:]]\n"
    "runpy.run_module('planflow', run_name='__main__', alter_sys=True)\n"
)


def interrupted(*args: str, cwd: Path, ready: Callable[[], bool], env: dict[str, str] | None = None) -> Run:
    """Start the command, press Ctrl-C (SIGINT) once ``ready()`` holds, and return how it ended.

    The command runs as ``python -m planflow`` does, with SIGINT raising ``KeyboardInterrupt`` as at a terminal
    (a parent started without job control may have left SIGINT ignored, and a child inherits that).

    Raises:
        AssertionError: the command ended before ``ready()`` held, or ``ready()`` took over 60 s.
    """
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("PLANFLOW_DB_", "PLANFLOW_DATABASE_URL"))
    }
    environ["COLUMNS"] = "80"
    environ.update(env or {})
    child = subprocess.Popen(
        [sys.executable, "-c", _AS_AT_A_TERMINAL, *args],
        cwd=cwd,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not ready():
            assert child.poll() is None, (
                f"the command ended before it could be interrupted: {child.communicate()}"
            )
            assert time.monotonic() < deadline, "the command never got ready to be interrupted"
            time.sleep(0.02)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.communicate()
    return Run(child.returncode, out, err)


def assert_fits(text: str, width: int = 80) -> None:
    """Every line of ``text`` fits ``width`` columns and nothing was cut short with an ellipsis."""
    for line in text.splitlines():
        assert len(line) <= width, f"{len(line)} columns: {line!r}"
        # planflow's own "… N more" summaries are the only ellipses allowed; rich cuts cells with one.
        assert not re.search(r"…(?! [\d,]+ more)", line), f"cut short: {line!r}"


def big_workflow(url: str, tasks: int, *, seed: int = 42, failed: float = 0.05) -> str:
    """Store one finished demo-shaped workflow of ``tasks`` tasks in one bulk write; return its exec id.

    Leaves are FAILED with probability ``failed`` (else SUCCESS), so summaries have more than one status.
    """
    plan = build_plan(tasks, seed, run_id="big")
    rng = random.Random(seed)
    with open_provider(url) as provider:
        provider.workflows.upsert_state(
            WorkflowState(plan.workflow_exec_id, plan.workflow_id, status=TaskStatus.SUCCESS)
        )
        provider.tasks.bulk_upsert(
            state.evolve(status=TaskStatus.FAILED if rng.random() < failed else TaskStatus.SUCCESS)
            for state in plan.initial_states()
        )
    return plan.workflow_exec_id
