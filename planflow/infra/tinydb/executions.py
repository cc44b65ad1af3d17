"""The ExecutionRepository on TinyDB: tables ``tasks``, ``occurrences`` and ``executions``.

:class:`TinyDbExecutions` is the driver's core repository, written as coroutines that never suspend (TinyDB
blocks), like the SQL drivers' cores: the provider's APIs reach it through the generated adapters, which check
every argument on the way in. :class:`TinyDbExecutionRepository` is the synchronous repository over it, for
using a ``TinyDB`` database directly, as the add-on does.

The repository's rules are :mod:`planflow.infra.execution_rules`, shared with the SQL drivers: which models are
accepted and how they are checked, the codec's documents (each keeps the model's id inside it; executions are
keyed by ``occurrence_id``), what a delete cascades to and what a purge selects. The storage is the TinyDB
storage engine, :mod:`planflow.infra.tinydb.engine`: every operation is one of its units of work (a
``batch()`` is one unit), which sees the tables whole, finds records through the engine's indexes and stores
what it changed in one write. An upsert keeps the record's TinyDB document id, and document ids are handed
out in the order records are first added, so lists come back in that order.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import AbstractContextManager, asynccontextmanager
from datetime import datetime

from tinydb import TinyDB

from planflow.executions import TaskDefinition, TaskExecution, TaskOccurrence
from planflow.infra.execution_codec import require
from planflow.infra.execution_rules import EXECUTIONS, OCCURRENCES, TASKS, cascade, purged
from planflow.infra.facades.executions import CheckedExecutions, SyncExecutions
from planflow.infra.tinydb.engine import Engine

__all__ = ["TinyDbExecutionRepository", "TinyDbExecutions"]


class TinyDbExecutions:
    """The ExecutionRepository's core on a TinyDB database (its arguments checked by the adapters); safe to
    call from several threads.

    The repository must be the only writer of its three tables (repositories sharing one ``TinyDB`` instance
    are fine). Ids follow the input rules: a non-empty ``str`` of at most 512 characters without NUL or a
    lone surrogate, else :class:`~planflow.errors.ValidationError` (:class:`~planflow.errors.WrongTypeError`
    when not a ``str``). Every failure is a :class:`~planflow.errors.PlanflowError`; on a store opened
    read-only every write raises :class:`~planflow.errors.ReadOnlyError`.
    """

    def __init__(self, db: TinyDB) -> None:
        """Serve the execution tables of ``db``; on a journaled store, index them now.

        Args:
            db: The database, e.g. ``TinyDB(path, storage=JournaledStorage)`` or
                ``TinyDB(storage=MemoryStorage)``. The repository does not close it.

        Raises:
            WrongTypeError: ``db`` is not a ``TinyDB``.
            CorruptStoreError: The storage cannot be read.
        """
        self._engine = Engine.of(
            require(db, TinyDB, "TinyDbExecutionRepository(db)"), (TASKS, OCCURRENCES, EXECUTIONS)
        )

    def locked(self) -> AbstractContextManager[object]:
        """A unit of the storage engine, holding its lock: what the metadata repository runs its calls in."""
        return self._engine.unit()

    @asynccontextmanager
    async def batch(self) -> AsyncGenerator[None, None]:
        """Group the writes made inside the ``with`` block into one write of the storage.

        On a journaled store that is one journal record. The block holds the repository's lock: other threads
        wait until it ends and never see half a batch, so keep it short. Reads inside the block see its
        writes. When the block raises, none of its writes are stored; when the final write fails, the same
        holds and the write's error propagates. A batch entered inside another is a savepoint of the outer
        one (as on the SQL drivers): its writes are stored with the outer batch's, and when it raises only
        its own writes are undone.
        """
        with self._engine.unit():
            yield

    async def add_task(self, task: TaskDefinition) -> None:
        """Store ``task``, overwriting a stored task with the same id in its place.

        Raises:
            WrongTypeError: ``task`` is not a :class:`TaskDefinition`; nothing is stored.
            ValidationError: A field breaks the input rules; nothing is stored.
            StoreWriteError: The store could not be written; nothing is stored.
            ReadOnlyError: The store was opened read-only; nothing is stored.
        """
        record = TASKS.record(task)
        model = TASKS.decode(record.doc)
        with self._engine.unit("add_task") as unit:
            unit.put(TASKS, record.key, record.doc, model)

    async def get_task(self, task_id: str) -> TaskDefinition | None:
        """Return the task with id ``task_id``, or ``None`` when it is not stored.

        Raises:
            ValidationError: ``task_id`` breaks the id rules, or the stored record is malformed.
        """
        with self._engine.unit() as unit:
            found = unit.get(TASKS, task_id)
            return None if found is None else _fresh_task(found)

    async def list_tasks(self) -> list[TaskDefinition]:
        """Return every stored task, in the order the tasks were first added."""
        with self._engine.unit() as unit:
            return [_fresh_task(task) for task in unit.values(TASKS)]

    async def add_occurrence(self, occ: TaskOccurrence) -> None:
        """Store ``occ``, overwriting a stored occurrence with the same id in its place.

        Raises:
            WrongTypeError: ``occ`` is not a :class:`TaskOccurrence`; nothing is stored.
            ValidationError: A field breaks the input rules; nothing is stored.
            StoreWriteError: The store could not be written; nothing is stored.
            ReadOnlyError: The store was opened read-only; nothing is stored.
        """
        record = OCCURRENCES.record(occ)
        model = OCCURRENCES.decode(record.doc)
        with self._engine.unit("add_occurrence") as unit:
            unit.put(OCCURRENCES, record.key, record.doc, model)

    async def get_occurrence(self, occurrence_id: str) -> TaskOccurrence | None:
        """Return the occurrence with id ``occurrence_id``, or ``None`` when it is not stored.

        Raises:
            ValidationError: ``occurrence_id`` breaks the id rules, or the stored record is malformed.
        """
        with self._engine.unit() as unit:
            return unit.get(OCCURRENCES, occurrence_id)

    async def list_occurrences(self, task_id: str | None = None) -> list[TaskOccurrence]:
        """Return the stored occurrences (only those of ``task_id`` when given), in the order first added.

        Raises:
            ValidationError: ``task_id`` breaks the id rules, or a stored record is malformed.
        """
        with self._engine.unit() as unit:
            if task_id is None:
                return unit.values(OCCURRENCES)
            return unit.values(OCCURRENCES, unit.group(OCCURRENCES, task_id))

    async def add_execution(self, execution: TaskExecution) -> None:
        """Store ``execution``, overwriting the stored execution of the same occurrence in its place.

        Raises:
            WrongTypeError: ``execution`` is not a :class:`TaskExecution`, or its history holds something
                other than :class:`~planflow.executions.TaskEvent` values; nothing is stored.
            ValidationError: A field breaks the input rules; nothing is stored.
            StoreWriteError: The store could not be written; nothing is stored.
            ReadOnlyError: The store was opened read-only; nothing is stored.
        """
        record = EXECUTIONS.record(execution)
        model = EXECUTIONS.decode(record.doc)
        with self._engine.unit("add_execution") as unit:
            unit.put(EXECUTIONS, record.key, record.doc, model)

    async def get_execution(self, occurrence_id: str) -> TaskExecution | None:
        """Return the execution of occurrence ``occurrence_id``, or ``None`` when it is not stored.

        Raises:
            ValidationError: ``occurrence_id`` breaks the id rules, or the stored record is malformed.
        """
        with self._engine.unit() as unit:
            found = unit.get(EXECUTIONS, occurrence_id)
            return None if found is None else _fresh_execution(found)

    async def list_executions(self) -> list[TaskExecution]:
        """Return every stored execution, in the order the executions were first added."""
        with self._engine.unit() as unit:
            # The copy inline: this loop is the add-on's largest read.
            return [
                TaskExecution(e.occurrence_id, e.state, e.retries_remaining, list(e.history))
                for e in unit.values(EXECUTIONS)
            ]

    async def delete_task_and_related(self, task_id: str) -> None:
        """Remove a task, its occurrences and their executions, in one write; other records stay.

        Deleting a task that is not stored removes whatever occurrences (and their executions) still name
        it, and is otherwise a no-op that writes nothing.

        Raises:
            ValidationError: ``task_id`` breaks the id rules.
            StoreWriteError: The store could not be written; nothing is removed.
            ReadOnlyError: The store was opened read-only; nothing is removed.
        """
        with self._engine.unit("delete_task_and_related") as unit:
            cascade(
                task_id,
                [(doc_id, unit.key_of(OCCURRENCES, doc_id)) for doc_id in unit.group(OCCURRENCES, task_id)],
                remove_occurrence=lambda doc_id: unit.remove(OCCURRENCES, doc_id),
                remove_execution=lambda occurrence_id: unit.remove_key(EXECUTIONS, occurrence_id),
                remove_task=lambda key: unit.remove_key(TASKS, key),
            )

    async def purge(self, *, before: datetime) -> int:
        """Remove the occurrences scheduled before ``before`` with their executions, in one write.

        Task definitions stay. A naive ``scheduled_for`` is read in this machine's local time zone. Nothing is
        written when nothing is scheduled before ``before``.

        Returns:
            How many occurrences were removed.

        Raises:
            ValidationError: ``before`` is not an aware datetime, or a stored occurrence is malformed.
            StoreWriteError: The store could not be written; nothing is removed.
            ReadOnlyError: The store was opened read-only; nothing is removed.
        """
        with self._engine.unit("purge") as unit:
            ids = unit.ids(OCCURRENCES)
            doomed = purged(zip(ids, unit.values(OCCURRENCES, ids), strict=True), before)
            for doc_id in doomed:
                unit.remove_key(EXECUTIONS, unit.value(OCCURRENCES, doc_id).id)
                unit.remove(OCCURRENCES, doc_id)
            return len(doomed)


def _fresh_task(task: TaskDefinition) -> TaskDefinition:
    # The engine keeps the decoded model: it must not change when a caller appends to the list it was handed.
    return TaskDefinition(
        task.id,
        task.title,
        task.description,
        task.link,
        task.created_at,
        task.recurrence,
        task.priority,
        list(task.preferred_slots),
        task.retry_policy,
        task.pinned_time,
    )


def _fresh_execution(execution: TaskExecution) -> TaskExecution:
    return TaskExecution(
        execution.occurrence_id, execution.state, execution.retries_remaining, list(execution.history)
    )


class TinyDbExecutionRepository(SyncExecutions):
    """The ExecutionRepository on a TinyDB database, for using one directly (as the add-on does):
    ``TinyDbExecutionRepository(TinyDB("planflow.json", storage=JournaledStorage))``. Safe to call from several
    threads; the repository must be the only writer of its three tables."""

    __slots__ = ()

    def __init__(self, db: TinyDB) -> None:
        """Serve the execution tables of ``db``; on a journaled store, index them now.

        Raises:
            WrongTypeError: ``db`` is not a ``TinyDB``.
            CorruptStoreError: The storage cannot be read.
        """
        super().__init__(CheckedExecutions(TinyDbExecutions(db)))
