"""A populated store written at an older schema upgrades in place, its data intact, on SQLite and PostgreSQL.

The store is made by the migration runner knowing only the migrations up to schema 5 (the last before claims
with leases), then filled by plain SQL in the shape schema 5 has: no planflow code of today writes it.
Opening it with today's planflow applies the rest; every row reads back as it was written, with the new
columns empty, and the upgraded rows take part in the new operations (a pending task is claimable).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import planflow.infra.sql.migrations as runner
from planflow import Provider, TaskFilter, TaskStatus, UsageEntry, UsageSummary, open_provider
from planflow.infra.sql.migrations import load_migrations

OLD = 5  # schema 5: the last before claims with leases (0006)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
USAGE = '[{"provider":"openai","model":"gpt-x","source":"llm","prompt_tokens":3,"completion_tokens":4,"total_tokens":7}]'

WORKFLOW_COLUMNS = (
    "workflow_exec_id, workflow_id, status, usage, input, output, error, version, created_at, updated_at"
)
TASK_COLUMNS = (
    "task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, execution_type, parent_state_id, "
    "agent_id, action_id, tool_id, input, output, error, usage, version, created_at, updated_at"
)


def old_rows(ts: Callable[[datetime], object]) -> tuple[list[Sequence[object]], list[Sequence[object]]]:
    """What a schema-5 store holds: one running workflow with a root task, a pending child and a finished one."""
    workflows = [
        ("wf-1", "flow", "RUNNING", USAGE, '{"q":"hi"}', None, None, 4, ts(T0), ts(T0 + timedelta(seconds=9)))
    ]
    tasks = [
        ("root", "plan", "wf-1", "flow", "agent", "RUNNING", "composite", None, "agent-1", None, None,
         '{"goal":"x"}', None, None, USAGE, 3, ts(T0), ts(T0 + timedelta(seconds=5))),
        ("child-1", "search", "wf-1", "flow", "tool", "PENDING", "basic", "root", None, "act-1", "web",
         None, None, None, None, 1, ts(T0 + timedelta(seconds=1)), ts(T0 + timedelta(seconds=1))),
        ("child-2", "write", "wf-1", "flow", "task", "SUCCESS", "basic", "root", None, None, None,
         None, '{"text":"done","n":[1,2]}', None, None, 2, ts(T0 + timedelta(seconds=2)), ts(T0 + timedelta(seconds=8))),
    ]  # fmt: skip
    return workflows, tasks


@pytest.fixture
def upgrade(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Until ``upgrade()`` is called, the migration runner knows only the migrations up to schema 5."""
    monkeypatch.setattr(runner, "load_migrations", lambda driver: load_migrations(driver)[:OLD])
    return monkeypatch.undo


def check_upgraded(provider: Provider) -> None:
    newest = load_migrations(provider.driver)[-1].version
    assert [s.version for s in provider.migration_status() if s.applied_at is not None] == list(
        range(1, newest + 1)
    )
    usage = UsageSummary((UsageEntry("openai", "gpt-x", "llm", 3, 4, 7),))

    wf = provider.workflows.get_state("wf-1")
    assert (wf.status, wf.version, wf.input, wf.usage) == (TaskStatus.RUNNING, 4, {"q": "hi"}, usage)
    assert (wf.created_at, wf.updated_at) == (T0, T0 + timedelta(seconds=9))

    root = provider.tasks.get_state("root")
    assert (root.status, root.version, root.agent_id, root.input, root.usage) == (
        TaskStatus.RUNNING, 3, "agent-1", {"goal": "x"}, usage,
    )  # fmt: skip
    assert (root.claimed_by, root.lease_expires_at) == (None, None)
    # Schema 10's queue columns read as their defaults: priority 0, due at once, never attempted, unlimited.
    assert (root.priority, root.run_after, root.attempt, root.max_attempts) == (0, None, 0, None)
    assert (root.concurrency_key, root.dedup_key, root.last_error) == (None, None, None)
    done = provider.tasks.get_state("child-2")
    assert (done.output, done.updated_at, done.parent_state_id) == (
        {"text": "done", "n": [1, 2]},
        T0 + timedelta(seconds=8),
        "root",
    )
    tree = provider.tasks.get_task_tree("root")
    assert sorted((n.depth, n.state.task_exec_id) for n in tree) == [
        (0, "root"),
        (1, "child-1"),
        (1, "child-2"),
    ]

    # The upgraded rows serve the new operations: the old PENDING task is claimable, the RUNNING one (no lease)
    # is not taken from whoever runs it.
    claimed = provider.tasks.claim(TaskFilter(workflow_exec_id="wf-1"), worker="w", limit=10, lease=30)
    assert [s.task_exec_id for s in claimed] == ["child-1"]
    assert claimed[0].version == 2 and claimed[0].tool_id == "web"
    assert claimed[0].attempt == 1  # schema 10: the claim counted the upgraded task's first attempt


def test_a_populated_sqlite_store_at_schema_5_upgrades_intact(
    tmp_path: Path, upgrade: Callable[[], None]
) -> None:
    path = tmp_path / "old.db"
    with open_provider(f"sqlite:///{path}") as provider:
        assert len(provider.migration_status()) == OLD
    raw = sqlite3.connect(path)
    workflows, tasks = old_rows(lambda moment: moment.isoformat(timespec="microseconds"))
    with raw:
        raw.executemany(
            f"INSERT INTO workflow_states ({WORKFLOW_COLUMNS}) VALUES ({', '.join('?' * 10)})", workflows
        )
        raw.executemany(f"INSERT INTO task_states ({TASK_COLUMNS}) VALUES ({', '.join('?' * 18)})", tasks)
    raw.close()

    upgrade()
    with open_provider(f"sqlite:///{path}") as provider:
        check_upgraded(provider)
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    raw.close()


@pytest.mark.postgres
def test_a_populated_postgres_store_at_schema_5_upgrades_intact(
    postgres_url: str, upgrade: Callable[[], None]
) -> None:
    with open_provider(postgres_url) as provider:
        assert len(provider.migration_status()) == OLD
    workflows, tasks = old_rows(lambda moment: moment)
    with psycopg.connect(postgres_url, autocommit=True) as raw, raw.transaction():
        raw.cursor().executemany(
            f"INSERT INTO workflow_states ({WORKFLOW_COLUMNS}) VALUES ({', '.join(['%s'] * 10)})", workflows
        )
        raw.cursor().executemany(
            f"INSERT INTO task_states ({TASK_COLUMNS}) VALUES ({', '.join(['%s'] * 18)})", tasks
        )

    upgrade()
    with open_provider(postgres_url) as provider:
        check_upgraded(provider)
