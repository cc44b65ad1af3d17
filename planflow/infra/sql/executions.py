"""The add-on's ExecutionRepository on the SQL drivers: the shared codec's documents in a JSON column.

The repository's rules (what a record is, its key and task, the codec, what purge selects) are
:mod:`planflow.infra.execution_rules`, shared with the TinyDB driver; this module holds the SQL and the I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import TypeVar

from planflow.executions import TaskDefinition, TaskExecution, TaskOccurrence
from planflow.infra.execution_rules import EXECUTIONS, OCCURRENCES, TASKS, purged
from planflow.infra.sql.codec import loads
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
from planflow.infra.sql.statements import batches, write_idempotent
from planflow.models import JsonValue

M = TypeVar("M")

ADD_TASK = "INSERT INTO exec_tasks (id, doc) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET doc = excluded.doc"
ADD_OCCURRENCE = (
    "INSERT INTO exec_occurrences (id, task_id, doc) VALUES (?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET task_id = excluded.task_id, doc = excluded.doc"
)
ADD_EXECUTION = (
    "INSERT INTO exec_executions (occurrence_id, doc) VALUES (?, ?) "
    "ON CONFLICT (occurrence_id) DO UPDATE SET doc = excluded.doc"
)
DELETE_EXECUTIONS_OF_TASK = (
    "DELETE FROM exec_executions WHERE occurrence_id IN (SELECT id FROM exec_occurrences WHERE task_id = ?)"
)
DELETE_OCCURRENCES_OF_TASK = "DELETE FROM exec_occurrences WHERE task_id = ?"
DELETE_TASK = "DELETE FROM exec_tasks WHERE id = ?"
#: What ``purge`` decides from: every occurrence (the add-on's history is small, and ``scheduled_for`` lives in
#: the document, naive or aware).
ALL_OCCURRENCES = "SELECT id, doc FROM exec_occurrences"
#: Occurrences per purge transaction.
PURGE_BATCH = 500


def _text(doc: dict[str, JsonValue]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class SqlExecutionRepository:
    """ExecutionRepository over a :class:`Database` (see ``planflow.executions.ExecutionRepository``)."""

    def __init__(self, database: Database, dialect: Dialect) -> None:
        self._db = database
        self._dialect = dialect

    async def _write(self, sql: str, params: list[object]) -> None:
        await write_idempotent(self._db, sql, params)

    async def _read(
        self, sql: str, params: list[object], decode: Callable[[dict[str, JsonValue]], M]
    ) -> list[M]:
        rows = await self._db.fetch_all(sql, params)
        return [decode(loads(row[0])) for row in rows]

    def _doc(self, doc: dict[str, JsonValue]) -> object:
        return self._dialect.json_param(_text(doc))

    async def add_task(self, task: TaskDefinition) -> None:
        """Insert or replace a task definition (keeps its place in ``list_tasks``)."""
        record = TASKS.record(task)
        await self._write(ADD_TASK, [record.key, self._doc(record.doc)])

    async def get_task(self, task_id: str) -> TaskDefinition | None:
        """The task definition with ``task_id``, or ``None``."""
        found = await self._read("SELECT doc FROM exec_tasks WHERE id = ?", [task_id], TASKS.decode)
        return found[0] if found else None

    async def list_tasks(self) -> list[TaskDefinition]:
        """All task definitions in the order they were first added."""
        return await self._read("SELECT doc FROM exec_tasks ORDER BY seq", [], TASKS.decode)

    async def add_occurrence(self, occ: TaskOccurrence) -> None:
        """Insert or replace an occurrence (keeps its place)."""
        record = OCCURRENCES.record(occ)
        await self._write(ADD_OCCURRENCE, [record.key, record.group, self._doc(record.doc)])

    async def get_occurrence(self, occurrence_id: str) -> TaskOccurrence | None:
        """The occurrence with ``occurrence_id``, or ``None``."""
        found = await self._read(
            "SELECT doc FROM exec_occurrences WHERE id = ?", [occurrence_id], OCCURRENCES.decode
        )
        return found[0] if found else None

    async def list_occurrences(self, task_id: str | None = None) -> list[TaskOccurrence]:
        """Occurrences (of one task when ``task_id`` is given) in the order they were first added."""
        if task_id is None:
            return await self._read("SELECT doc FROM exec_occurrences ORDER BY seq", [], OCCURRENCES.decode)
        return await self._read(
            "SELECT doc FROM exec_occurrences WHERE task_id = ? ORDER BY seq", [task_id], OCCURRENCES.decode
        )

    async def add_execution(self, execution: TaskExecution) -> None:
        """Insert or replace the execution of an occurrence (keyed by ``occurrence_id``)."""
        record = EXECUTIONS.record(execution)
        await self._write(ADD_EXECUTION, [record.key, self._doc(record.doc)])

    async def get_execution(self, occurrence_id: str) -> TaskExecution | None:
        """The execution of ``occurrence_id``, or ``None``."""
        found = await self._read(
            "SELECT doc FROM exec_executions WHERE occurrence_id = ?", [occurrence_id], EXECUTIONS.decode
        )
        return found[0] if found else None

    async def list_executions(self) -> list[TaskExecution]:
        """All executions in the order they were first added."""
        return await self._read("SELECT doc FROM exec_executions ORDER BY seq", [], EXECUTIONS.decode)

    async def delete_task_and_related(self, task_id: str) -> None:
        """Delete a task definition, its occurrences and their executions, in one transaction.

        The three statements remove what ``execution_rules`` says ``delete_task_and_related`` removes.
        """

        async def work(conn: Connection) -> None:
            await conn.execute(DELETE_EXECUTIONS_OF_TASK, [task_id])
            await conn.execute(DELETE_OCCURRENCES_OF_TASK, [task_id])
            await conn.execute(DELETE_TASK, [task_id])

        await self._db.run(work)

    async def purge(self, *, before: datetime) -> int:
        """Remove the occurrences scheduled before ``before`` and their executions (see the Protocol).

        The occurrences are read and decoded outside any transaction (the add-on's history is small); each
        batch of those found is then read again under the write lock and only what is still scheduled before
        ``before`` is deleted, with its executions, in one transaction.
        """
        rows = await self._db.fetch_all(ALL_OCCURRENCES, [])
        doomed = purged(((row[0], OCCURRENCES.decode(loads(row[1]))) for row in rows), before)
        in_ids, ids_param = self._dialect.in_ids, self._dialect.ids_param
        reread = f"SELECT id, doc FROM exec_occurrences WHERE {in_ids('id')}{self._dialect.for_update}"
        removed = 0
        for batch in batches(doomed, PURGE_BATCH):

            async def work(conn: Connection, batch: list[str] = batch) -> int:
                current = await conn.fetch_all(reread, [ids_param(batch)])
                still = purged(((row[0], OCCURRENCES.decode(loads(row[1]))) for row in current), before)
                if not still:
                    return 0
                await conn.execute(
                    f"DELETE FROM exec_executions WHERE {in_ids('occurrence_id')}", [ids_param(still)]
                )
                return await conn.execute(
                    f"DELETE FROM exec_occurrences WHERE {in_ids('id')}", [ids_param(still)]
                )

            removed += await self._db.run(work)
        return removed

    def batch(self) -> AbstractAsyncContextManager[object]:
        """Group the writes of the block into one transaction: all of them are kept, or none."""
        return self._db.transaction()
