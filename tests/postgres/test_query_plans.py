"""PostgreSQL's plan for every query the repositories run: with sequential scans priced out of the planner's
choice, none is left, so an index can serve every query (see query_plans.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from planflow import TaskFilter, TaskState, WorkflowState, open_provider
from planflow.infra.postgres.connection import to_pyformat
from planflow.infra.postgres.dialect import POSTGRES
from planflow.infra.sql import queue as queue_sql
from planflow.infra.sql import tasks as tasks_sql
from planflow.infra.sql.statements import where_clause
from tests.query_plans import WHOLE_TABLE, statements

pytestmark = pytest.mark.postgres

TABLES = (
    "task_states",
    "workflow_states",
    "users",
    "api_keys",
    "exec_tasks",
    "exec_occurrences",
    "exec_executions",
)


@pytest.mark.parametrize(
    ("name", "sql", "params"), statements(POSTGRES), ids=[s[0] for s in statements(POSTGRES)]
)
def test_every_query_can_be_served_by_an_index(
    postgres_url: str, name: str, sql: str, params: list[object]
) -> None:
    open_provider(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            row[0] for row in conn.execute(b"EXPLAIN " + to_pyformat(sql), params or None).fetchall()
        )
    if name not in WHOLE_TABLE:
        scanned = [table for table in TABLES if f"Seq Scan on {table}" in plan]
        assert not scanned, f"{name} scans {scanned} whole:\n{plan}"


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """The nodes of an EXPLAIN (FORMAT JSON) plan, depth first."""
    return [plan, *(node for child in plan.get("Plans", []) for node in _nodes(child))]


@pytest.mark.parametrize("plan_cache_mode", ["auto", "force_generic_plan"])
def test_a_claim_of_one_workflow_reads_only_its_tasks_when_the_statistics_are_stale(
    postgres_url: str, plan_cache_mode: str
) -> None:
    # The statistics say that every pending task is of workflow "quiet" (analyzed then); since, its tasks
    # finished but five, and 16 010 tasks of another workflow, of higher priority, came first in claim order.
    # A plan that trusted the statistics would read the table-wide claim index and pass over those 16 010.
    provider = open_provider(postgres_url)
    try:
        provider.workflows.upsert_state(WorkflowState("quiet", "w"))
        provider.workflows.upsert_state(WorkflowState("busy", "w"))
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE task_states SET (autovacuum_enabled = off)")
        provider.tasks.bulk_upsert(TaskState(f"q{i:05d}", "t", "quiet", "w") for i in range(16_000))
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("ANALYZE task_states")
            conn.execute("UPDATE task_states SET status = 'SUCCESS' WHERE task_exec_id < 'q15995'")
        provider.tasks.bulk_upsert(
            TaskState(f"b{i:05d}", "t", "busy", "w", priority=1) for i in range(16_010)
        )
        where, params = where_clause(tasks_sql.TABLE, TaskFilter(workflow_exec_id="quiet"), POSTGRES.ts_param)
        sql = queue_sql.claim_sql(where.replace(" WHERE ", " AND ", 1) + queue_sql.NOT_COMPOSITE, POSTGRES)
        args = queue_sql.claim_params(
            POSTGRES, params, limit=1, worker="w1", lease=30.0, stamp=datetime.now(UTC)
        )
        with psycopg.connect(postgres_url) as conn:  # a transaction, rolled back: the plan, not the claim
            conn.execute("SELECT set_config('plan_cache_mode', %s, false)", [plan_cache_mode])
            explained = conn.execute(
                b"EXPLAIN (ANALYZE, FORMAT JSON) " + to_pyformat(sql), args, prepare=True
            ).fetchone()
            claimed = conn.execute(to_pyformat(sql), args).fetchall()
            conn.rollback()
        # EXPLAIN ANALYZE ran the claim (it took the oldest of the five); the same claim took the next.
        assert explained is not None and [row[0] for row in claimed] == ["q15996"]
        nodes = _nodes(explained[0][0]["Plan"])
        read = sum(
            int(n.get("Actual Rows", 0)) + int(n.get("Rows Removed by Filter", 0))
            for n in nodes
            if n.get("Relation Name") == "task_states"
        )
        plan = json.dumps(explained[0][0]["Plan"], indent=1)
        assert read < 50, f"the claim read {read} task rows:\n{plan}"
        assert "task_states_workflow_claim" in {n.get("Index Name") for n in nodes}, plan
    finally:
        provider.close()
