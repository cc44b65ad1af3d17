"""Run history: the records of every change of a task's or workflow's status, holder, attempt or error.

The records are written by the database itself: triggers on ``task_states`` and ``workflow_states`` (migration
0011) append one row to ``planflow_history`` per row whose status, ``claimed_by``, ``attempt``, ``error`` or
``last_error`` changed, inside the statement that changed it. So every path that writes a state (upserts,
versioned updates, bulk writes, imports, claims, releases, reclaims of lapsed leases, cancels, resumes, forks,
and any path added later) records its change in its own transaction, with nothing to call: a unit whose COMMIT
reply was lost and that is resolved, not rerun, recorded once; an idempotent retry that applies nothing records
nothing. What this module holds is the reading side, written once for both engines.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Protocol

from planflow.errors import NotFoundError
from planflow.infra.sql.database import Database, Row
from planflow.infra.sql.dialect import Dialect
from planflow.models import HistoryEntity, HistoryRecord, TaskStatus

COLUMNS = (
    "history_id, entity, entity_id, workflow_exec_id, from_status, to_status, recorded_at, worker, attempt, "
    "version, error"
)
#: An entity's records after a cursor, oldest first: a range scan of ``planflow_history_entity``.
OF_ENTITY = (
    f"SELECT {COLUMNS} FROM planflow_history WHERE entity = ? AND entity_id = ? AND history_id > ? "
    "ORDER BY history_id LIMIT ?"
)
#: A workflow's records with its tasks' after a cursor: a range scan of ``planflow_history_workflow``.
OF_WORKFLOW = (
    f"SELECT {COLUMNS} FROM planflow_history WHERE workflow_exec_id = ? AND history_id > ? "
    "ORDER BY history_id LIMIT ?"
)
#: Whether an entity exists now, when it has no records to show.
EXISTS = {
    "task": "SELECT 1 FROM task_states WHERE task_exec_id = ?",
    "workflow": "SELECT 1 FROM workflow_states WHERE workflow_exec_id = ?",
}
#: Whether any record of an entity exists (a task deleted on its own keeps its history).
ANY_RECORD = "SELECT 1 FROM planflow_history WHERE entity = ? AND entity_id = ? LIMIT 1"


class PartitionedHistory(Protocol):
    """The history's time partitions, where the engine has them (PostgreSQL: ``planflow.infra.postgres.partitions``)."""

    async def ensure_ahead(self) -> list[str]:
        """Create the partitions the next writes will need; returns their names."""
        ...

    async def detach_older(self, bound: datetime, statuses: Collection[str]) -> list[str]:
        """Detach the partitions that end before ``bound`` and hold no record of a workflow that a purge of
        ``statuses`` finished before ``bound`` leaves; returns their names for :meth:`settle`."""
        ...

    async def settle(self, detached: list[str]) -> list[str]:
        """After the purge: drop the detached partitions whose records belong to no existing workflow, attach
        the others again; returns the names dropped."""
        ...


_STATUS = {status.value: status for status in TaskStatus}
_ENTITY: dict[str, HistoryEntity] = {"task": "task", "workflow": "workflow"}


def record_from_row(row: Row, dialect: Dialect) -> HistoryRecord:
    """A :class:`HistoryRecord` from a row selected in ``COLUMNS`` order."""
    return HistoryRecord(
        history_id=int(row[0]),
        entity=_ENTITY[row[1]],
        entity_id=row[2],
        workflow_exec_id=row[3],
        from_status=None if row[4] is None else _STATUS[row[4]],
        to_status=_STATUS[row[5]],
        recorded_at=dialect.load_ts(row[6]),
        worker=row[7],
        attempt=row[8],
        version=row[9],
        error=row[10],
    )


class HistoryReader:
    """Reads ``planflow_history`` for the task and workflow repositories."""

    def __init__(self, database: Database, dialect: Dialect) -> None:
        self._db = database
        self._dialect = dialect

    async def of_entity(
        self, entity: HistoryEntity, entity_id: str, *, after: int | None, limit: int
    ) -> list[HistoryRecord]:
        """The records of one task or workflow after ``after``, oldest first.

        Raises:
            NotFoundError: the entity does not exist and has no record.
        """
        rows = await self._db.fetch_all(OF_ENTITY, [entity, entity_id, after or 0, limit])
        if not rows:
            await self._must_exist(entity, entity_id, any_record=True)
        return self._records(rows)

    async def of_workflow(
        self, workflow_exec_id: str, *, after: int | None, limit: int
    ) -> list[HistoryRecord]:
        """The records of a workflow and of its tasks after ``after``, oldest first.

        Raises:
            NotFoundError: no such workflow.
        """
        rows = await self._db.fetch_all(OF_WORKFLOW, [workflow_exec_id, after or 0, limit])
        if not rows:
            await self._must_exist("workflow", workflow_exec_id, any_record=False)
        return self._records(rows)

    def _records(self, rows: Sequence[Row]) -> list[HistoryRecord]:
        dialect = self._dialect
        return [record_from_row(row, dialect) for row in rows]

    async def _must_exist(self, entity: HistoryEntity, entity_id: str, *, any_record: bool) -> None:
        if await self._db.fetch_one(EXISTS[entity], [entity_id]) is not None:
            return
        if any_record and await self._db.fetch_one(ANY_RECORD, [entity, entity_id]) is not None:
            return
        raise NotFoundError(f"{entity} state {entity_id!r} not found")
