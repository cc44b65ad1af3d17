"""Leases run on the database's clock: workers whose own clocks disagree still agree on when a lease lapses.

A second process whose clock runs a minute ahead (``time-machine`` moves every Python clock of that process;
SQLite's and PostgreSQL's clocks are untouched, as on a machine whose clock drifted) tries to claim tasks that
this process holds with a 30 s lease. By its own clock those leases lapsed 30 s ago; by the database's they
have 30 s to go, and it claims nothing. Its heartbeats and waits read the database's clock too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from planflow import TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider

TASKS = 20
WORK = TaskFilter(workflow_exec_id="wf-clocks")

#: The other worker: its clock a minute ahead, it claims what it can and reports what it sees.
SKEWED_WORKER = textwrap.dedent(
    """
    import json, sys
    from datetime import UTC, datetime, timedelta
    import time_machine
    from planflow import TaskFilter, open_provider

    url = sys.argv[1]
    ahead = datetime.now(UTC) + timedelta(seconds=60)
    with time_machine.travel(ahead, tick=True):
        assert abs((datetime.now(UTC) - ahead).total_seconds()) < 5
        with open_provider(url) as provider:
            work = TaskFilter(workflow_exec_id="wf-clocks")
            claimed = provider.tasks.claim(work, worker="ahead", limit=100, lease=30)
            lapsed = provider.tasks.list_lapsed(work)
            waited = provider.tasks.wait_for_work(work, timeout=0.2)
    print(json.dumps({"claimed": len(claimed), "lapsed": len(lapsed), "work": waited}))
    """
)


def skewed_worker(url: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", SKEWED_WORKER, url], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report


def leases_hold_against_a_skewed_clock(url: str) -> None:
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-clocks", "clocks", status=TaskStatus.RUNNING))
        provider.tasks.bulk_upsert(
            TaskState(f"c{i:02d}", f"t{i}", "wf-clocks", "clocks") for i in range(TASKS)
        )
        held = provider.tasks.claim(WORK, worker="local", limit=TASKS, lease=30)
        assert len(held) == TASKS
        # The lease end is the database's now + 30 s: within a few seconds of this machine's clock + 30 s.
        assert all(state.lease_expires_at is not None for state in held)

        report = skewed_worker(url)

        assert report == {"claimed": 0, "lapsed": 0, "work": False}
        still = provider.tasks.list_states(WORK, limit=100).items
        assert {state.claimed_by for state in still} == {"local"}
        assert all(state.status is TaskStatus.RUNNING for state in still)


def test_sqlite_leases_hold_against_a_worker_whose_clock_runs_ahead(tmp_path: Path) -> None:
    leases_hold_against_a_skewed_clock(f"sqlite:///{tmp_path / 'clocks.db'}")


@pytest.mark.postgres
def test_postgres_leases_hold_against_a_worker_whose_clock_runs_ahead(
    new_postgres_url: Callable[[], str],
) -> None:
    leases_hold_against_a_skewed_clock(new_postgres_url())
