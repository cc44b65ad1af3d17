"""SQLite's plan for every query the repositories run: an index serves it, in index order (see query_plans.py)."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from planflow import open_provider
from planflow.infra.sqlite.dialect import SQLITE
from tests.query_plans import SORTS_ITS_RESULT, WHOLE_TABLE, statements

#: A scan of a table in no index's order (a scan along an index, stopped by a LIMIT, is what a page is).
FULL_SCAN = re.compile(r"^SCAN (task_states|workflow_states|users|api_keys|exec_\w+)(?! USING)")


@pytest.fixture(scope="module")
def connection(tmp_path_factory: pytest.TempPathFactory) -> sqlite3.Connection:
    path: Path = tmp_path_factory.mktemp("plans") / "plans.db"
    open_provider(f"sqlite:///{path}").close()
    return sqlite3.connect(path)


@pytest.mark.parametrize(
    ("name", "sql", "params"), statements(SQLITE), ids=[s[0] for s in statements(SQLITE)]
)
def test_every_query_is_served_by_an_index_in_order(
    connection: sqlite3.Connection, name: str, sql: str, params: list[object]
) -> None:
    plan = [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params).fetchall()]
    if name not in WHOLE_TABLE:
        assert not [step for step in plan if FULL_SCAN.match(step)], f"{name} scans a whole table: {plan}"
    if name not in SORTS_ITS_RESULT:
        assert not [
            step for step in plan if "TEMP B-TREE FOR ORDER BY" in step and "RIGHT PART" not in step
        ], f"{name} sorts what an index could give in order: {plan}"
    assert not [step for step in plan if "RIGHT PART OF ORDER BY" in step], (
        f"{name} sorts part of its order: {plan}"
    )
