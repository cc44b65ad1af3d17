"""The add-on's ExecutionRepository on the SQL drivers: the shared codec's documents in a JSON column."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from contextlib import contextmanager
from typing import TypeVar

from planflow.executions import TaskDefinition, TaskExecution, TaskOccurrence
from planflow.infra.execution_codec import (
    execution_from_doc,
    execution_to_doc,
    occurrence_from_doc,
    occurrence_to_doc,
    require,
    task_from_doc,
    task_to_doc,
)
from planflow.infra.sql.codec import loads
from planflow.infra.sql.database import Connection, Database
from planflow.infra.sql.dialect import Dialect
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


def _text(doc: dict[str, JsonValue]) -> str:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


class SqlExecutionRepository:
    """ExecutionRepository over a :class:`Database` (see ``planflow.executions.ExecutionRepository``)."""

    def __init__(self, database: Database, dialect: Dialect) -> None:
        self._db = database
        self._d = dialect

    def _write(self, sql: str, params: list[object]) -> None:
        def work(conn: Connection) -> None:
            conn.execute(sql, params)

        self._db.run(work, atomic=True)

    def _read(self, sql: str, params: list[object], decode: Callable[[dict[str, JsonValue]], M]) -> list[M]:
        rows = self._db.fetch_all(sql, params)
        return [decode(loads(row[0])) for row in rows]

    def add_task(self, task: TaskDefinition) -> None:
        """Insert or replace a task definition (keeps its place in ``list_tasks``)."""
        require(task, TaskDefinition)
        self._write(ADD_TASK, [task.id, self._d.json_param(_text(task_to_doc(task)))])

    def get_task(self, task_id: str) -> TaskDefinition | None:
        """The task definition with ``task_id``, or ``None``."""
        found = self._read("SELECT doc FROM exec_tasks WHERE id = ?", [task_id], task_from_doc)
        return found[0] if found else None

    def list_tasks(self) -> list[TaskDefinition]:
        """All task definitions in the order they were first added."""
        return self._read("SELECT doc FROM exec_tasks ORDER BY seq", [], task_from_doc)

    def add_occurrence(self, occ: TaskOccurrence) -> None:
        """Insert or replace an occurrence (keeps its place)."""
        require(occ, TaskOccurrence)
        self._write(ADD_OCCURRENCE, [occ.id, occ.task_id, self._d.json_param(_text(occurrence_to_doc(occ)))])

    def get_occurrence(self, occurrence_id: str) -> TaskOccurrence | None:
        """The occurrence with ``occurrence_id``, or ``None``."""
        found = self._read(
            "SELECT doc FROM exec_occurrences WHERE id = ?", [occurrence_id], occurrence_from_doc
        )
        return found[0] if found else None

    def list_occurrences(self, task_id: str | None = None) -> list[TaskOccurrence]:
        """Occurrences (of one task when ``task_id`` is given) in the order they were first added."""
        if task_id is None:
            return self._read("SELECT doc FROM exec_occurrences ORDER BY seq", [], occurrence_from_doc)
        return self._read(
            "SELECT doc FROM exec_occurrences WHERE task_id = ? ORDER BY seq", [task_id], occurrence_from_doc
        )

    def add_execution(self, execution: TaskExecution) -> None:
        """Insert or replace the execution of an occurrence (keyed by ``occurrence_id``)."""
        require(execution, TaskExecution)
        doc = self._d.json_param(_text(execution_to_doc(execution)))
        self._write(ADD_EXECUTION, [execution.occurrence_id, doc])

    def get_execution(self, occurrence_id: str) -> TaskExecution | None:
        """The execution of ``occurrence_id``, or ``None``."""
        found = self._read(
            "SELECT doc FROM exec_executions WHERE occurrence_id = ?", [occurrence_id], execution_from_doc
        )
        return found[0] if found else None

    def list_executions(self) -> list[TaskExecution]:
        """All executions in the order they were first added."""
        return self._read("SELECT doc FROM exec_executions ORDER BY seq", [], execution_from_doc)

    def delete_task_and_related(self, task_id: str) -> None:
        """Delete a task definition, its occurrences and their executions, in one transaction."""

        def work(conn: Connection) -> None:
            conn.execute(DELETE_EXECUTIONS_OF_TASK, [task_id])
            conn.execute(DELETE_OCCURRENCES_OF_TASK, [task_id])
            conn.execute(DELETE_TASK, [task_id])

        self._db.run(work)

    @contextmanager
    def batch(self) -> Generator[None, None, None]:
        """Group the writes of the block into one transaction: all of them are kept, or none."""
        with self._db.transaction():
            yield
