"""A populated schema-6 store upgrades to schema 7 in place, on SQLite and PostgreSQL.

The store is made by the migration runner knowing only the migrations up to schema 6, then filled by plain SQL
as schema-6 code stored rows: usage entries without ``cached_tokens`` and ``reasoning_tokens``. After the
upgrade those read as 0, totals equal the sum of the parts, the listings run newest first over the old rows,
and the purge takes the old finished workflow with its tasks.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

import planflow.infra.sql.migrations as runner
from planflow import Provider, TaskFilter, TaskStatus, UsageEntry, UsageSummary, open_provider
from planflow.infra.sql.migrations import load_migrations

OLD = 6  # schema 6: the last before retention (0007)
T0 = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def usage(prompt: int, completion: int) -> str:
    """A usage column as schema-6 code wrote it: six fields per entry."""
    return (
        f'[{{"provider":"openai","model":"gpt-x","source":"task","prompt_tokens":{prompt},'
        f'"completion_tokens":{completion},"total_tokens":{prompt + completion}}}]'
    )


def rows(ts: Callable[[datetime], object]) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    workflows = [
        ("wf-old", "flow", "SUCCESS", usage(1, 2), 3, ts(T0), ts(T0 + timedelta(minutes=1))),
        ("wf-live", "flow", "RUNNING", None, 1, ts(T0), ts(T0)),
    ]
    tasks = [
        (f"t{i}", f"s{i}", "wf-old" if i < 6 else "wf-live", "task", "SUCCESS" if i % 2 else "FAILED",
         None if i in {0, 6} else ("t0" if i < 6 else "t6"), usage(10 * i, i) if i % 3 else None, 1,
         ts(T0 + timedelta(seconds=i)), ts(T0 + timedelta(seconds=i)))
        for i in range(9)
    ]  # fmt: skip
    return workflows, tasks


WORKFLOW_INSERT = (
    "INSERT INTO workflow_states (workflow_exec_id, workflow_id, status, usage, version, created_at, updated_at) "
    "VALUES ({})"
)
TASK_INSERT = (
    "INSERT INTO task_states (task_exec_id, task_id, workflow_exec_id, workflow_id, component, status, "
    "execution_type, parent_state_id, usage, version, created_at, updated_at) "
    "VALUES (?, ?, ?, 'flow', ?, ?, 'basic', ?, ?, ?, ?, ?)"
)


@pytest.fixture
def upgrade(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Until ``upgrade()`` is called, the migration runner knows only the migrations up to schema 6."""
    monkeypatch.setattr(runner, "load_migrations", lambda driver: load_migrations(driver)[:OLD])
    return monkeypatch.undo


def check_upgraded(provider: Provider) -> None:
    every = [s.version for s in provider.migration_status()]
    assert [s.version for s in provider.migration_status() if s.applied_at is not None] == every
    wf = provider.workflows.get_state("wf-old")
    assert wf.usage == UsageSummary((UsageEntry("openai", "gpt-x", "task", 1, 2, 3, 0, 0),))
    entry = provider.tasks.get_state("t1").usage
    assert entry is not None and [(e.cached_tokens, e.reasoning_tokens) for e in entry.entries] == [(0, 0)]

    total = provider.workflows.usage_total("wf-old")
    parts = [1 + 2] + [10 * i + i for i in range(6) if i % 3]
    assert [e.total_tokens for e in total.entries] == [sum(parts)]
    assert total.entries[0].prompt_tokens == 1 + sum(10 * i for i in range(6) if i % 3)
    assert (total.entries[0].cached_tokens, total.entries[0].reasoning_tokens) == (0, 0)
    merged = provider.tasks.merge_usage(
        "t1",
        UsageSummary((UsageEntry("openai", "gpt-x", "task", 1, 1, 2, cached_tokens=5, reasoning_tokens=7),)),
    )
    assert [(e.total_tokens, e.cached_tokens, e.reasoning_tokens) for e in merged.entries] == [(13, 5, 7)]

    newest = provider.tasks.list_states(TaskFilter(statuses={TaskStatus.FAILED}), order="desc").items
    assert [s.task_exec_id for s in newest] == ["t8", "t6", "t4", "t2", "t0"]
    assert provider.workflows.purge(finished_before=datetime(2025, 7, 1, tzinfo=UTC)) == 1
    assert sorted(s.task_exec_id for s in provider.tasks.list_states().items) == ["t6", "t7", "t8"]


def test_a_populated_sqlite_store_at_schema_6_upgrades_to_7(
    tmp_path: Path, upgrade: Callable[[], None]
) -> None:
    path = tmp_path / "old.db"
    with open_provider(f"sqlite:///{path}") as provider:
        assert len(provider.migration_status()) == OLD
    workflows, tasks = rows(lambda moment: moment.isoformat(timespec="microseconds"))
    raw = sqlite3.connect(path)
    with raw:
        raw.executemany(WORKFLOW_INSERT.format(", ".join("?" * 7)), workflows)
        raw.executemany(TASK_INSERT, [(t[0], t[1], t[2], "task", *t[4:]) for t in tasks])
    raw.close()
    upgrade()
    with open_provider(f"sqlite:///{path}") as provider:
        check_upgraded(provider)
    raw = sqlite3.connect(path)
    indexes = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"workflow_states_purge", "workflow_states_updated"} <= indexes
    assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    raw.close()


@pytest.mark.postgres
def test_a_populated_postgres_store_at_schema_6_upgrades_to_7(
    postgres_url: str, upgrade: Callable[[], None]
) -> None:
    with open_provider(postgres_url) as provider:
        assert len(provider.migration_status()) == OLD
    workflows, tasks = rows(lambda moment: moment)
    with psycopg.connect(postgres_url, autocommit=True) as raw, raw.transaction():
        raw.cursor().executemany(WORKFLOW_INSERT.format(", ".join(["%s"] * 7)), workflows)
        raw.cursor().executemany(
            TASK_INSERT.replace("?", "%s"), [(t[0], t[1], t[2], "task", *t[4:]) for t in tasks]
        )
    upgrade()
    with open_provider(postgres_url) as provider:
        check_upgraded(provider)
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        indexes = {
            row[0]
            for row in raw.execute("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
        }
    assert {"workflow_states_purge", "workflow_states_updated"} <= indexes
