"""Hand-written psycopg 3 code running planflow's statements: the floor planflow is measured against.

One autocommit connection per thread, in UTC like planflow's. JSON columns load as text and are parsed with
``json.loads`` (psycopg's own JSON loader costs more per value), and bind through ``Json`` with planflow's
serialisation, so the stored text is the same.
A single-statement write runs on its own; a bulk write is one transaction per batch, pipelined by
``executemany``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.types.json import Json
from psycopg.types.string import TextLoader

from benchmarks.data import chunks
from benchmarks.stores.base import BULK_BATCH, MAX_DEPTH, RAW
from benchmarks.stores.rawcodec import (
    DEPTH_AT,
    dumps,
    now,
    page,
    state_from_row,
    usage_items,
    values,
    write_failure,
)
from planflow import NotFoundError, TaskState, TaskTreeNode, UsageSummary
from planflow.infra.postgres.dialect import POSTGRES
from planflow.infra.sql.tasks import (
    GET,
    GET_VERSION,
    ORDER,
    SELECT,
    TREE,
    UPDATE_VERSIONED,
    UPSERT,
    in_place_params,
    update_in_place_sql,
    versioned_params,
)
from planflow.models import JsonObject


def _pg(sql: str) -> bytes:
    # Bytes: psycopg takes them as they are (its typing wants literal strings or bytes).
    return sql.replace("?", "%s").encode()


UPSERT_PG = _pg(UPSERT)
GET_PG = _pg(GET)
GET_VERSION_PG = _pg(GET_VERSION)
UPDATE_PG = _pg(UPDATE_VERSIONED)
UPDATE_IN_PLACE_PG = _pg(update_in_place_sql(POSTGRES))
TREE_PG = _pg(TREE)
BY_IDS = _pg(f"{SELECT} WHERE task_exec_id = ANY(?) {ORDER}")
PAGE_FIRST = _pg(f"{SELECT} WHERE workflow_exec_id = ? {ORDER} LIMIT ?")
PAGE_NEXT = _pg(
    f"{SELECT} WHERE workflow_exec_id = ? AND (created_at, task_exec_id) > (?, ?) {ORDER} LIMIT ?"
)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


def _json(value: JsonObject | list[dict[str, Any]] | None) -> Json | None:
    return None if value is None else Json(value, dumps=dumps)


def _usage(usage: UsageSummary | None) -> Json | None:
    return _json(usage_items(usage))


def _values(s: TaskState) -> list[object]:
    return values(s, _json, _usage, _utc)


class RawPostgresStore:
    """The workloads' operations in plain psycopg 3."""

    name = RAW

    def __init__(self, url: str, schema: str) -> None:
        self._url = url
        self._options = f"-csearch_path={schema} -c TimeZone=UTC"
        self._local = threading.local()
        self._all: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()

    def _conn(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = psycopg.connect(self._url, autocommit=True, options=self._options)
            conn.adapters.register_loader("json", TextLoader)
            conn.adapters.register_loader("jsonb", TextLoader)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def bulk_upsert(self, states: Sequence[TaskState]) -> int:
        conn = self._conn()
        for batch in chunks(states, BULK_BATCH):
            stamp = now()
            rows = [[*_values(s), stamp, stamp] for s in batch]
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(UPSERT_PG, rows)
        return len(states)

    def get_state(self, task_exec_id: str) -> TaskState:
        row = self._conn().execute(GET_PG, (task_exec_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"task state {task_exec_id!r} not found")
        return state_from_row(row, _utc)

    def list_by_ids(self, task_exec_ids: Sequence[str]) -> list[TaskState]:
        rows = self._conn().execute(BY_IDS, (list(task_exec_ids),)).fetchall()
        return [state_from_row(r, _utc) for r in rows]

    def get_task_tree(self, root_state_id: str) -> list[TaskTreeNode]:
        rows = self._conn().execute(TREE_PG, (root_state_id, MAX_DEPTH, root_state_id)).fetchall()
        return [TaskTreeNode(state_from_row(r, _utc), r[DEPTH_AT]) for r in rows]

    def list_page(
        self, workflow_exec_id: str, limit: int, cursor: object | None
    ) -> tuple[list[TaskState], object | None]:
        if cursor is None:
            rows = self._conn().execute(PAGE_FIRST, (workflow_exec_id, limit + 1)).fetchall()
        else:
            created, key = cursor  # type: ignore[misc]
            rows = self._conn().execute(PAGE_NEXT, (workflow_exec_id, created, key, limit + 1)).fetchall()
        return page([state_from_row(r, _utc) for r in rows], limit)

    def update_state(self, state: TaskState, expected_version: int) -> TaskState:
        moment = now()
        values = _values(state)
        conn = self._conn()
        row = conn.execute(UPDATE_IN_PLACE_PG, in_place_params(values, moment, expected_version)).fetchone()
        if row is None:
            row = conn.execute(UPDATE_PG, versioned_params(values, moment, expected_version)).fetchone()
        if row is None:
            found = conn.execute(GET_VERSION_PG, (state.task_exec_id,)).fetchone()
            raise write_failure(state.task_exec_id, found, expected_version)
        version, created, holder, lease, attempt = row
        return state.evolve(
            version=version,
            created_at=created.astimezone(UTC),
            updated_at=moment,
            claimed_by=holder,
            lease_expires_at=None if lease is None else lease.astimezone(UTC),
            attempt=attempt,
        )

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
