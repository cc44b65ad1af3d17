"""A provider opened and used before ``os.fork()`` (gunicorn ``--preload``, multiprocessing, Celery prefork).

The parent keeps using it while 4 children use their copy: no process reads another's replies (the children
neither use nor close the parent's connections), nobody hangs, and every write of every process is stored once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
import traceback
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from planflow import Provider, Repositories, TaskFilter, TaskState, WorkflowState, open_provider
from tests.support import reporter

CHILDREN = 4
WRITES = 60

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX only")


report = reporter("faults")


def work(provider: Provider, who: str, workflow_exec_id: str, counter_id: str) -> None:
    def increment(tx: Repositories) -> None:
        state = tx.tasks.get_state_for_update(counter_id)
        assert state.input is not None
        count = state.input["n"]
        assert isinstance(count, int)
        tx.tasks.update_state(state.evolve(input={"n": count + 1}), state.version)

    for number in range(WRITES):
        provider.tasks.upsert_state(TaskState(f"{who}-{number}", "write", workflow_exec_id, "fork"))
        provider.run_in_transaction(increment)
        assert provider.tasks.get_state(f"{who}-{number}").task_id == "write"


def fork_children(target: Callable[[str], None]) -> list[int]:
    pids = []
    with warnings.catch_warnings():
        # Python 3.12+ warns that forking a threaded process may deadlock the child: what is proved here.
        warnings.simplefilter("ignore", DeprecationWarning)
        for index in range(CHILDREN):
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                code = 0
                try:
                    target(f"child{index}")
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            pids.append(pid)
    return pids


def wait_all(pids: list[int], timeout: float) -> list[int]:
    """Exit codes of the children; a child still running at ``timeout`` is killed and counts as a hang."""
    deadline = time.monotonic() + timeout
    codes: dict[int, int] = {}
    while len(codes) < len(pids) and time.monotonic() < deadline:
        for pid in pids:
            if pid not in codes:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    codes[pid] = os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    for pid in pids:
        if pid not in codes:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            codes[pid] = -999
    return [codes[pid] for pid in pids]


def run_fork_case(url: str) -> None:
    with open_provider(url) as provider:
        wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:6]}", "fork"))
        counter = provider.tasks.upsert_state(
            TaskState("counter", "count", wf.workflow_exec_id, wf.workflow_id, input={"n": 0})
        )
        # The pool has open connections now: what the children inherit.
        for _ in range(5):
            provider.tasks.get_state(counter.task_exec_id)
        started = time.monotonic()
        pids = fork_children(lambda who: work(provider, who, wf.workflow_exec_id, counter.task_exec_id))
        work(provider, "parent", wf.workflow_exec_id, counter.task_exec_id)
        codes = wait_all(pids, timeout=120)
        elapsed = time.monotonic() - started
        assert codes == [0] * CHILDREN, f"children exited with {codes} (-999: hung and killed)"
        stored = provider.tasks.count_states(TaskFilter(workflow_exec_id=wf.workflow_exec_id))
        final = provider.tasks.get_state(counter.task_exec_id)
    report(
        f"{url.split(':', maxsplit=1)[0]}: parent and {CHILDREN} forked children, {WRITES} writes each, {elapsed:.1f}s"
    )
    assert stored == 1 + (CHILDREN + 1) * WRITES
    assert final.input == {"n": (CHILDREN + 1) * WRITES}


def test_postgres_provider_used_before_fork_serves_parent_and_children(postgres_url: str) -> None:
    run_fork_case(postgres_url)


def test_sqlite_provider_used_before_fork_serves_parent_and_children(tmp_path: Path) -> None:
    run_fork_case(f"sqlite:///{tmp_path / 'fork.db'}")
