"""Hand-written ``sqlite3`` code running planflow's statements: the floor planflow is measured against.

One autocommit connection per thread with planflow's pragmas. A single-statement write runs on its own
(SQLite makes it atomic); a bulk write takes one ``BEGIN IMMEDIATE`` transaction per batch, as planflow does.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime

from benchmarks.data import chunks
from benchmarks.stores.base import BULK_BATCH, MAX_DEPTH, RAW
from benchmarks.stores.rawcodec import (
    DEPTH_AT,
    dumps,
    iso,
    json_text,
    now,
    page,
    state_from_row,
    usage_text,
    values,
    write_failure,
)
from planflow import NotFoundError, TaskState, TaskTreeNode
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
from planflow.infra.sqlite.dialect import SQLITE

BY_IDS = f"{SELECT} WHERE task_exec_id IN (SELECT value FROM json_each(?)) {ORDER}"
PAGE_FIRST = f"{SELECT} WHERE workflow_exec_id = ? {ORDER} LIMIT ?"
UPDATE_IN_PLACE = update_in_place_sql(SQLITE)
PAGE_NEXT = f"{SELECT} WHERE workflow_exec_id = ? AND (created_at, task_exec_id) > (?, ?) {ORDER} LIMIT ?"

_fromiso = datetime.fromisoformat


def _values(s: TaskState) -> list[object]:
    return values(s, json_text, usage_text, iso)


class RawSqliteStore:
    """The workloads' operations in plain ``sqlite3``."""

    name = RAW

    def __init__(self, path: str) -> None:
        self._path = path
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self._path, timeout=5.0, isolation_level=None, check_same_thread=False, cached_statements=512
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def bulk_upsert(self, states: Sequence[TaskState]) -> int:
        conn = self._conn()
        for batch in chunks(states, BULK_BATCH):
            stamp = iso(now())
            rows = [[*_values(s), stamp, stamp] for s in batch]
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(UPSERT, rows)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        return len(states)

    def get_state(self, task_exec_id: str) -> TaskState:
        row = self._conn().execute(GET, (task_exec_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"task state {task_exec_id!r} not found")
        return state_from_row(row, _fromiso)

    def list_by_ids(self, task_exec_ids: Sequence[str]) -> list[TaskState]:
        rows = self._conn().execute(BY_IDS, (dumps(list(task_exec_ids)),)).fetchall()
        return [state_from_row(r, _fromiso) for r in rows]

    def get_task_tree(self, root_state_id: str) -> list[TaskTreeNode]:
        rows = self._conn().execute(TREE, (root_state_id, MAX_DEPTH, root_state_id)).fetchall()
        return [TaskTreeNode(state_from_row(r, _fromiso), r[DEPTH_AT]) for r in rows]

    def list_page(
        self, workflow_exec_id: str, limit: int, cursor: object | None
    ) -> tuple[list[TaskState], object | None]:
        if cursor is None:
            rows = self._conn().execute(PAGE_FIRST, (workflow_exec_id, limit + 1)).fetchall()
        else:
            created, key = cursor  # type: ignore[misc]
            rows = (
                self._conn().execute(PAGE_NEXT, (workflow_exec_id, iso(created), key, limit + 1)).fetchall()
            )
        return page([state_from_row(r, _fromiso) for r in rows], limit)

    def update_state(self, state: TaskState, expected_version: int) -> TaskState:
        moment = now()
        stamp = iso(moment)
        values = _values(state)
        conn = self._conn()
        # fetchall: the RETURNING statement must finish before autocommit can commit it.
        rows = conn.execute(UPDATE_IN_PLACE, in_place_params(values, stamp, expected_version)).fetchall()
        if not rows:
            rows = conn.execute(
                UPDATE_VERSIONED, versioned_params(values, stamp, expected_version)
            ).fetchall()
        if not rows:
            found = conn.execute(GET_VERSION, (state.task_exec_id,)).fetchone()
            raise write_failure(state.task_exec_id, found, expected_version)
        version, created, holder, lease, attempt = rows[0]
        return state.evolve(
            version=version,
            created_at=_fromiso(created),
            updated_at=moment,
            claimed_by=holder,
            lease_expires_at=None if lease is None else _fromiso(lease),
            attempt=attempt,
        )

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
