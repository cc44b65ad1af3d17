"""PostgreSQL's plan for every query the repositories run: with sequential scans priced out of the planner's
choice, none is left, so an index can serve every query (see query_plans.py)."""

from __future__ import annotations

import psycopg
import pytest

from planflow import open_provider
from planflow.infra.postgres.connection import to_pyformat
from planflow.infra.postgres.dialect import POSTGRES
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
