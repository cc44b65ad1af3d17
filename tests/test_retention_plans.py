"""The plan of the listing the issue names: statuses + created_after, newest first, a page of 100.

On a populated, analysed table and with the planner left to its own choices (no setting priced out), each
status is read backwards along an index (``task_states_status`` on SQLite) and the arms are merged in order: no
table scan, no sort.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from planflow import TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider
from planflow.infra.postgres.connection import to_pyformat
from planflow.infra.postgres.dialect import POSTGRES
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql.codec import encode_cursor
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.statements import listing
from planflow.infra.sqlite.dialect import SQLITE

ROWS = 20_000
T0 = datetime(2025, 1, 1, tzinfo=UTC)
STATUSES = list(TaskStatus)
FILTER = TaskFilter(statuses={TaskStatus.FAILED, TaskStatus.TIMED_OUT}, created_after=T0 + timedelta(hours=1))


def fill(url: str) -> None:
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "plans"))
        provider.tasks.import_states(
            TaskState(
                f"t{i:06d}",
                "s",
                "wf",
                "plans",
                status=STATUSES[i % len(STATUSES)],
                version=1,
                created_at=T0 + timedelta(seconds=i),
                updated_at=T0 + timedelta(seconds=i),
            )
            for i in range(ROWS)
        )


def pages(dialect: Dialect) -> list[tuple[str, list[object]]]:
    """The first page and a later one."""
    cursor = encode_cursor(T0 + timedelta(seconds=ROWS // 2), "t010000", "desc")
    return [
        listing(tasks_sql.TABLE, FILTER, cursor=c, order="desc", limit=101, dialect=dialect)
        for c in (None, cursor)
    ]


def test_sqlite_merges_one_index_range_per_status_without_a_sort(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    fill(f"sqlite:///{path}")
    raw = sqlite3.connect(path)
    raw.execute("ANALYZE")
    for sql, params in pages(SQLITE):
        plan = [row[3] for row in raw.execute(f"EXPLAIN QUERY PLAN {sql}", params)]
        print("\n".join(plan))
        assert "MERGE (UNION ALL)" in plan
        searches = [step for step in plan if step.startswith("SEARCH")]
        assert len(searches) == 2 and all(
            "USING INDEX task_states_status (status=? AND created_at>?" in s for s in searches
        )
        assert not [step for step in plan if "TEMP B-TREE" in step or step.startswith("SCAN task_states")]
        rows = raw.execute(sql, params).fetchall()
        assert len(rows) == 101
    raw.close()


@pytest.mark.postgres
def test_postgres_merge_appends_backward_index_scans_without_a_sort(postgres_url: str) -> None:
    fill(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        raw.execute("ANALYZE task_states")
        for sql, params in pages(POSTGRES):
            plan = "\n".join(
                row[0] for row in raw.execute(b"EXPLAIN (ANALYZE, COSTS OFF) " + to_pyformat(sql), params)
            )
            print(plan)
            assert "Merge Append" in plan
            # Each arm an index read backwards: the status index, or (the cost model's choice on a later page,
            # where every eighth row matches) the created_at index with the status as a filter.
            assert plan.count("Index Scan Backward using task_states_") == 2
            assert "Sort Method" not in plan and "Seq Scan" not in plan and "Bitmap" not in plan
