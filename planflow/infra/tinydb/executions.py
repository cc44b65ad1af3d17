"""The ExecutionRepository on TinyDB: tables ``tasks``, ``occurrences`` and ``executions``.

Each record is stored as the shared codec's document (:mod:`planflow.infra.execution_codec`), keeping the
model's id inside it; executions are keyed by ``occurrence_id``. TinyDB document ids are handed out in the
order records are first added and an upsert rewrites the record under its old document id, so lists come
back in the order records were first added.

Every operation runs under one lock, as one unit: it sees the tables whole, changes them, and at the end
stores what changed in one write (a ``batch()`` is one unit). The work a unit costs depends on the storage:

- :class:`~planflow.infra.tinydb.journal.JournaledStorage` (the add-on's default) keeps the data in memory,
  and so does the repository: its view of each table (an index by record key, the occurrences of each task,
  and each document's decoded model, or the error decoding it raised, from its first read or its write on)
  is built once when the store is loaded and then kept current. A read is a lookup; a write appends one journal record with just the documents it
  changed. A write made through TinyDB's own API on the same storage is noticed, and the view rebuilt.
- Any other storage (``MemoryStorage``, ``CrashSafeJSONStorage``) is read once per unit and, if anything
  changed, written back whole once, as TinyDB itself does.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator, Mapping
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Generic, TypeVar, cast

from tinydb import TinyDB
from tinydb.storages import Storage

from planflow.errors import CorruptStoreError, PlanflowError, StoreWriteError, ValidationError
from planflow.executions import TaskDefinition, TaskExecution, TaskOccurrence
from planflow.infra.execution_codec import (
    execution_from_doc,
    execution_to_doc,
    occurrence_from_doc,
    occurrence_to_doc,
    require,
    require_id,
    scheduled_before,
    task_from_doc,
    task_to_doc,
)
from planflow.infra.inputs import check_aware
from planflow.infra.tinydb.files import StoreData
from planflow.infra.tinydb.journal import DELETE, PUT, JournaledStorage, Op, collector_paused
from planflow.infra.tinydb.storage import CrashSafeJSONStorage
from planflow.models import JsonValue

TASKS = "tasks"
OCCURRENCES = "occurrences"
EXECUTIONS = "executions"

M = TypeVar("M", TaskDefinition, TaskOccurrence, TaskExecution)


class _Table(Generic[M]):
    """One table as the repository sees it: documents by TinyDB id (ascending), indexed by record key.

    ``rows`` is the storage's own dict for a journaled store, so changing it changes the data in memory; the
    repository then journals the same change at commit.
    """

    __slots__ = ("by_key", "by_task", "decode", "errors", "key", "models", "name", "next_id", "rows")

    def __init__(
        self,
        name: str,
        key: str,
        rows: dict[str, object],
        decode: Callable[[Mapping[str, object]], M],
        *,
        grouped: bool = False,
    ) -> None:
        self.name = name
        self.key = key
        self.rows = rows
        self.decode = decode
        self.by_key: dict[str, str] = {}
        #: For occurrences: task_id -> the document ids of its occurrences (an ordered set).
        self.by_task: dict[str, dict[str, None]] | None = {} if grouped else None
        #: Document id -> its model, kept until the document changes; or the error decoding it raised.
        self.models: dict[str, M] = {}
        self.errors: dict[str, ValidationError] = {}
        _sort_by_document_id(rows)
        for doc_id, doc in rows.items():
            self._index(doc_id, doc)
        self.next_id = _next_document_id(rows)

    def model(self, doc_id: str) -> M:
        """The model of document ``doc_id``, decoded once and kept until the document changes.

        Raises:
            ValidationError: The stored document is malformed (the message names the record and field).
        """
        found = self.models.get(doc_id)
        return found if found is not None else self._decode(doc_id)

    def all_models(self) -> list[M]:
        """Every document's model, in the order first added.

        Raises:
            ValidationError: A stored document is malformed.
        """
        models, model = self.models, self.model
        return [models.get(doc_id) or model(doc_id) for doc_id in self.rows]

    def decode_all(self) -> None:
        """Decode every document now (the table is new); a malformed one is reported when it is read."""
        for doc_id in self.rows:
            with suppress(ValidationError):
                self._decode(doc_id)

    def _decode(self, doc_id: str) -> M:
        error = self.errors.get(doc_id)
        if error is None:
            try:
                found = self.decode(cast("Mapping[str, object]", self.rows[doc_id]))
            except ValidationError as exc:
                error = self.errors[doc_id] = exc
            else:
                self.models[doc_id] = found
                return found
        raise ValidationError(*error.args)

    def set(self, doc_id: str, doc: object | None, model: M | None = None) -> None:
        """Store ``doc`` under ``doc_id`` (remove it when ``None``), keeping the indexes current."""
        old = self.rows.get(doc_id)
        if old is not None:
            self._unindex(doc_id, old)
        self.models.pop(doc_id, None)
        self.errors.pop(doc_id, None)
        if doc is None:
            self.rows.pop(doc_id, None)
            return
        self.rows[doc_id] = doc
        self._index(doc_id, doc)
        if model is not None:
            self.models[doc_id] = model

    def _index(self, doc_id: str, doc: object) -> None:
        if not isinstance(doc, dict):
            return  # decoding it raises a ValidationError naming it
        fields = cast("dict[str, object]", doc)
        key = fields.get(self.key)
        if isinstance(key, str):
            self.by_key[key] = doc_id
        if self.by_task is not None:
            task_id = fields.get("task_id")
            if isinstance(task_id, str):
                self.by_task.setdefault(task_id, {})[doc_id] = None

    def _unindex(self, doc_id: str, doc: object) -> None:
        # Only documents the repository put or indexed are ever replaced, and those are dicts.
        fields = cast("dict[str, object]", doc)
        key = fields.get(self.key)
        if isinstance(key, str) and self.by_key.get(key) == doc_id:
            del self.by_key[key]
        if self.by_task is not None:
            task_id = fields.get("task_id")
            group = self.by_task.get(task_id) if isinstance(task_id, str) else None
            if group is not None:
                group.pop(doc_id, None)
                if not group:
                    del self.by_task[cast("str", task_id)]


class _Tables:
    """The three tables of one unit of work (or, on a journaled store, of the store while it is open)."""

    def __init__(self, data: StoreData) -> None:
        self.tasks = _Table(TASKS, "id", data.setdefault(TASKS, {}), task_from_doc)
        self.occurrences = _Table(
            OCCURRENCES, "id", data.setdefault(OCCURRENCES, {}), occurrence_from_doc, grouped=True
        )
        self.executions = _Table(
            EXECUTIONS, "occurrence_id", data.setdefault(EXECUTIONS, {}), execution_from_doc
        )
        self.all: tuple[_Table[TaskDefinition], _Table[TaskOccurrence], _Table[TaskExecution]] = (
            self.tasks,
            self.occurrences,
            self.executions,
        )


#: One change made by the running unit, undone when it (or its savepoint) raises: the table, the document
#: id, and the document and model it had before (None when absent).
_Undo = tuple[
    "_Table[TaskDefinition] | _Table[TaskOccurrence] | _Table[TaskExecution]", str, object | None, object
]


#: A point in the running unit: undo log length, journal operations, next document id of each table.
_Mark = tuple[int, int, tuple[int, int, int]]


class _Shared:
    """The lock, the tables and the running unit of one TinyDB instance, shared by its repositories."""

    def __init__(self, db: TinyDB) -> None:
        storage = db.storage
        self.db = weakref.ref(db)
        self.storage: Storage = storage
        self.journaled = storage if isinstance(storage, JournaledStorage) else None
        # One lock for the store and the repository: a TinyDB-API call on the storage never sees half a unit.
        self.lock: threading.RLock = self.journaled.guard if self.journaled is not None else threading.RLock()
        # A crash-safe storage parses a fresh copy on every read; any other (MemoryStorage) may hand out the
        # live dicts, which a unit that raises must not have touched.
        self.fresh = isinstance(storage, CrashSafeJSONStorage)
        self.tables: _Tables | None = None
        self.data: StoreData = {}
        self.seen = -1
        self.in_unit = False
        self.undo: list[_Undo] = []
        self.ops: list[Op] = []
        #: Where the running unit started, for undoing all of it.
        self.start: _Mark = (0, 0, (1, 1, 1))

    def begin(self) -> _Tables:
        """The tables as the unit starting now sees them."""
        journaled = self.journaled
        if journaled is None:
            self.data = self._read()
            self.tables = _Tables(self.data)
        elif self.tables is None or journaled.changes != self.seen:
            # The store is validated once, as it is loaded: every document decoded now, its model kept
            # until the document changes, so no read decodes or validates anything again.
            with collector_paused():
                self.tables = _Tables(journaled.view())
                for table in self.tables.all:
                    table.decode_all()
            self.seen = journaled.changes
        self.start = self.mark()
        return self.tables

    def commit(self) -> None:
        """Store the unit's changes in one write; on failure undo them and raise."""
        if not self.ops:
            return
        try:
            if self.journaled is not None:
                self.journaled.apply(self.ops)
                self.seen = self.journaled.changes
            else:
                self._write(self.data)
        except BaseException:
            self.rollback(self.start)
            raise
        db = self.db()
        if db is not None:  # pragma: no branch - a repository keeps its TinyDB alive
            for name in (TASKS, OCCURRENCES, EXECUTIONS):
                # TinyDB caches query results per table and would not see writes made beside its API.
                db.table(name).clear_cache()  # pyright: ignore[reportUnknownMemberType]

    def end(self) -> None:
        """Forget the unit (after commit or rollback)."""
        self.undo.clear()
        self.ops.clear()
        if self.journaled is None:
            self.tables = None
            self.data = {}

    def mark(self) -> _Mark:
        """Where the unit stands now, for :meth:`rollback`."""
        return len(self.undo), len(self.ops), self.next_ids()

    def next_ids(self) -> tuple[int, int, int]:
        tables = self.tables
        assert tables is not None
        return tables.tasks.next_id, tables.occurrences.next_id, tables.executions.next_id

    def rollback(self, mark: _Mark) -> None:
        """Undo the unit's changes made since ``mark``."""
        undo_at, ops_at, next_ids = mark
        reinserted: set[str] = set()
        while len(self.undo) > undo_at:
            table, doc_id, doc, model = self.undo.pop()
            if doc is not None and doc_id not in table.rows:
                reinserted.add(table.name)
            table.set(doc_id, doc, model)  # pyright: ignore[reportArgumentType]
        del self.ops[ops_at:]
        tables = self.tables
        assert tables is not None
        for table, next_id in zip(tables.all, next_ids, strict=True):
            table.next_id = next_id
            if table.name in reinserted:
                # A deleted document put back went to the end of its dict; lists rely on ascending ids.
                _sort_by_document_id(table.rows)

    def put(self, table: _Table[M], key: str, doc: dict[str, JsonValue], model: M) -> None:
        """Upsert ``doc`` by record ``key``: a stored record keeps its document id (and place)."""
        doc_id = table.by_key.get(key)
        if doc_id is None:
            doc_id = str(table.next_id)
            table.next_id += 1
        self._change(table, doc_id, doc, model)

    def delete(self, table: _Table[M], doc_id: str) -> None:
        """Remove document ``doc_id`` of ``table``."""
        self._change(table, doc_id, None, None)

    def _change(
        self, table: _Table[M], doc_id: str, doc: dict[str, JsonValue] | None, model: M | None
    ) -> None:
        self.undo.append((table, doc_id, table.rows.get(doc_id), table.models.get(doc_id)))  # pyright: ignore[reportArgumentType]
        table.set(doc_id, doc, model)
        self.ops.append((PUT, table.name, doc_id, doc) if doc is not None else (DELETE, table.name, doc_id))

    def _read(self) -> StoreData:
        try:
            data = cast("object", self.storage.read())
        except PlanflowError:
            raise
        except Exception as exc:  # a storage of the caller's own (TinyDB's JSONStorage) may raise anything
            raise CorruptStoreError(f"cannot read the TinyDB store: {exc!r}") from exc
        if data is not None and not isinstance(data, dict):
            raise CorruptStoreError(
                f"the TinyDB storage returned a {type(data).__name__}, not a dict of tables"
            )
        tables = cast("StoreData | None", data)
        return (tables or {}) if self.fresh else _detached(tables)

    def _write(self, data: StoreData) -> None:
        try:
            self.storage.write(data)
        except PlanflowError:
            raise
        except Exception as exc:
            raise StoreWriteError(f"cannot write the TinyDB store: {exc!r}") from exc


_shared_by_db: weakref.WeakKeyDictionary[TinyDB, _Shared] = weakref.WeakKeyDictionary()
_shared_by_db_lock = threading.Lock()


def _shared_for(db: TinyDB) -> _Shared:
    # Two repositories on one TinyDB must not interleave their units, so they share one lock and one view.
    with _shared_by_db_lock:
        shared = _shared_by_db.get(db)
        if shared is None:
            shared = _shared_by_db[db] = _Shared(db)
        return shared


class TinyDbExecutionRepository:
    """The ExecutionRepository on a TinyDB database; safe to call from several threads.

    The repository must be the only writer of its three tables (repositories sharing one ``TinyDB`` instance
    are fine). Ids follow the input rules: a non-empty ``str`` of at most 512 characters without NUL or a
    lone surrogate, else :class:`~planflow.errors.ValidationError` (:class:`~planflow.errors.WrongTypeError`
    when not a ``str``). Every failure is a :class:`~planflow.errors.PlanflowError`.
    """

    def __init__(self, db: TinyDB) -> None:
        """Serve the execution tables of ``db``.

        Args:
            db: The database, e.g. ``TinyDB(path, storage=JournaledStorage)`` or
                ``TinyDB(storage=MemoryStorage)``. The repository does not close it.

        Raises:
            WrongTypeError: ``db`` is not a ``TinyDB``.
        """
        self._shared = _shared_for(require(db, TinyDB, "TinyDbExecutionRepository(db)"))

    @contextmanager
    def batch(self) -> Generator[None, None, None]:
        """Group the writes made inside the ``with`` block into one write of the storage.

        On a journaled store that is one journal record. The block holds the repository's lock: other threads
        wait until it ends and never see half a batch, so keep it short. Reads inside the block see its
        writes. When the block raises, none of its writes are stored; when the final write fails, the same
        holds and the write's error propagates. A batch entered inside another is a savepoint of the outer
        one (as on the SQL drivers): its writes are stored with the outer batch's, and when it raises only
        its own writes are undone.
        """
        shared = self._shared
        with shared.lock:
            if shared.in_unit:
                mark = shared.mark()
                try:
                    yield
                except BaseException:
                    shared.rollback(mark)
                    raise
            else:
                with self._unit():
                    yield

    @contextmanager
    def _unit(self) -> Generator[_Tables, None, None]:
        # Every operation runs in one; inside a batch it simply joins it. An operation changes the tables
        # only after its last check passed.
        shared = self._shared
        with shared.lock:
            if shared.in_unit:
                assert shared.tables is not None
                yield shared.tables
                return
            tables = shared.begin()
            shared.in_unit = True
            try:
                try:
                    yield tables
                except BaseException:
                    shared.rollback(shared.start)
                    raise
                shared.commit()
            finally:
                shared.in_unit = False
                shared.end()

    def add_task(self, task: TaskDefinition) -> None:
        """Store ``task``, overwriting a stored task with the same id in its place.

        Raises:
            WrongTypeError: ``task`` is not a :class:`TaskDefinition`; nothing is stored.
            ValidationError: A field breaks the input rules; nothing is stored.
            StoreWriteError: The store could not be written; nothing is stored.
        """
        doc = task_to_doc(require(task, TaskDefinition, "add_task(task)"))
        model = task_from_doc(doc)
        with self._unit() as tables:
            self._shared.put(tables.tasks, model.id, doc, model)

    def get_task(self, task_id: str) -> TaskDefinition | None:
        """Return the task with id ``task_id``, or ``None`` when it is not stored.

        Raises:
            ValidationError: ``task_id`` breaks the id rules, or the stored record is malformed.
        """
        require_id(task_id, "get_task(task_id)")
        with self._unit() as tables:
            doc_id = tables.tasks.by_key.get(task_id)
            return None if doc_id is None else _fresh_task(tables.tasks.model(doc_id))

    def list_tasks(self) -> list[TaskDefinition]:
        """Return every stored task, in the order the tasks were first added."""
        with self._unit() as tables:
            return [_fresh_task(task) for task in tables.tasks.all_models()]

    def add_occurrence(self, occ: TaskOccurrence) -> None:
        """Store ``occ``, overwriting a stored occurrence with the same id in its place.

        Raises:
            WrongTypeError: ``occ`` is not a :class:`TaskOccurrence`; nothing is stored.
            ValidationError: A field breaks the input rules; nothing is stored.
            StoreWriteError: The store could not be written; nothing is stored.
        """
        doc = occurrence_to_doc(require(occ, TaskOccurrence, "add_occurrence(occ)"))
        model = occurrence_from_doc(doc)
        with self._unit() as tables:
            self._shared.put(tables.occurrences, model.id, doc, model)

    def get_occurrence(self, occurrence_id: str) -> TaskOccurrence | None:
        """Return the occurrence with id ``occurrence_id``, or ``None`` when it is not stored.

        Raises:
            ValidationError: ``occurrence_id`` breaks the id rules, or the stored record is malformed.
        """
        require_id(occurrence_id, "get_occurrence(occurrence_id)")
        with self._unit() as tables:
            doc_id = tables.occurrences.by_key.get(occurrence_id)
            return None if doc_id is None else tables.occurrences.model(doc_id)

    def list_occurrences(self, task_id: str | None = None) -> list[TaskOccurrence]:
        """Return the stored occurrences (only those of ``task_id`` when given), in the order first added.

        Raises:
            ValidationError: ``task_id`` breaks the id rules, or a stored record is malformed.
        """
        if task_id is not None:
            require_id(task_id, "list_occurrences(task_id)")
        with self._unit() as tables:
            table = tables.occurrences
            if task_id is None:
                return table.all_models()
            return [table.model(doc_id) for doc_id in _occurrence_ids(table, task_id)]

    def add_execution(self, execution: TaskExecution) -> None:
        """Store ``execution``, overwriting the stored execution of the same occurrence in its place.

        Raises:
            WrongTypeError: ``execution`` is not a :class:`TaskExecution`, or its history holds something
                other than :class:`~planflow.executions.TaskEvent` values; nothing is stored.
            ValidationError: A field breaks the input rules; nothing is stored.
            StoreWriteError: The store could not be written; nothing is stored.
        """
        doc = execution_to_doc(require(execution, TaskExecution, "add_execution(execution)"))
        model = execution_from_doc(doc)
        with self._unit() as tables:
            self._shared.put(tables.executions, model.occurrence_id, doc, model)

    def get_execution(self, occurrence_id: str) -> TaskExecution | None:
        """Return the execution of occurrence ``occurrence_id``, or ``None`` when it is not stored.

        Raises:
            ValidationError: ``occurrence_id`` breaks the id rules, or the stored record is malformed.
        """
        require_id(occurrence_id, "get_execution(occurrence_id)")
        with self._unit() as tables:
            doc_id = tables.executions.by_key.get(occurrence_id)
            return None if doc_id is None else _fresh_execution(tables.executions.model(doc_id))

    def list_executions(self) -> list[TaskExecution]:
        """Return every stored execution, in the order the executions were first added."""
        with self._unit() as tables:
            # The copy inline: this loop is the add-on's largest read.
            return [
                TaskExecution(e.occurrence_id, e.state, e.retries_remaining, list(e.history))
                for e in tables.executions.all_models()
            ]

    def delete_task_and_related(self, task_id: str) -> None:
        """Remove a task, its occurrences and their executions, in one write; other records stay.

        Deleting a task that is not stored removes whatever occurrences (and their executions) still name
        it, and is otherwise a no-op that writes nothing.

        Raises:
            ValidationError: ``task_id`` breaks the id rules.
            StoreWriteError: The store could not be written; nothing is removed.
        """
        require_id(task_id, "delete_task_and_related(task_id)")
        shared = self._shared
        with self._unit() as tables:
            occurrences = tables.occurrences
            for doc_id in _occurrence_ids(occurrences, task_id):
                key = cast("Mapping[str, object]", occurrences.rows[doc_id]).get("id")
                execution_id = tables.executions.by_key.get(key) if isinstance(key, str) else None
                if execution_id is not None:
                    shared.delete(tables.executions, execution_id)
                shared.delete(occurrences, doc_id)
            found = tables.tasks.by_key.get(task_id)
            if found is not None:
                shared.delete(tables.tasks, found)

    def purge(self, *, before: datetime) -> int:
        """Remove the occurrences scheduled before ``before`` with their executions, in one write.

        Task definitions stay. A naive ``scheduled_for`` is read in this machine's local time zone. Nothing is
        written when nothing is scheduled before ``before``.

        Returns:
            How many occurrences were removed.

        Raises:
            ValidationError: ``before`` is not an aware datetime, or a stored occurrence is malformed.
            StoreWriteError: The store could not be written; nothing is removed.
        """
        moment = check_aware(before, "before")
        shared = self._shared
        with self._unit() as tables:
            occurrences, executions = tables.occurrences, tables.executions
            doomed = [
                (doc_id, occ.id)
                for doc_id in list(occurrences.rows)
                if scheduled_before(occ := occurrences.model(doc_id), moment)
            ]
            for doc_id, occurrence_id in doomed:
                execution_id = executions.by_key.get(occurrence_id)
                if execution_id is not None:
                    shared.delete(executions, execution_id)
                shared.delete(occurrences, doc_id)
            return len(doomed)


def _occurrence_ids(table: _Table[TaskOccurrence], task_id: str) -> list[str]:
    """Document ids of the occurrences of ``task_id``, in the order first added."""
    assert table.by_task is not None
    return sorted(table.by_task.get(task_id, ()), key=_document_number)


def _fresh_task(task: TaskDefinition) -> TaskDefinition:
    # The kept model must not change when a caller appends to the list it was handed.
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


def _document_number(doc_id: str) -> tuple[int, int]:
    # TinyDB's own ids are decimal integers; anything else sorts after them, in its stored order.
    return (0, int(doc_id)) if doc_id.isascii() and doc_id.isdigit() else (1, 0)


def _sort_by_document_id(rows: dict[str, object]) -> None:
    """Put ``rows`` in ascending document id order, in place (it usually is: then this only checks)."""
    previous = (0, 0)
    for doc_id in rows:
        number = _document_number(doc_id)
        if number < previous:
            break
        previous = number
    else:
        return
    ordered = sorted(rows.items(), key=lambda item: _document_number(item[0]))
    rows.clear()
    rows.update(ordered)


def _next_document_id(rows: dict[str, object]) -> int:
    """One more than the largest document id, as TinyDB hands them out."""
    for doc_id in reversed(rows):
        kind, number = _document_number(doc_id)
        if kind == 0:
            return number + 1
    return 1


def _detached(data: StoreData | None) -> StoreData:
    # MemoryStorage hands out its live dicts and TinyDB edits what it reads in place; a unit that raises
    # must leave the stored data untouched, so it works on copies of the tables and documents.
    return {
        name: {
            doc_id: dict(cast("Mapping[str, object]", doc)) if isinstance(doc, dict) else doc
            for doc_id, doc in table.items()
        }
        for name, table in (data or {}).items()
    }


__all__ = ["EXECUTIONS", "OCCURRENCES", "TASKS", "TinyDbExecutionRepository"]
