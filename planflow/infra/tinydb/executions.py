"""The ExecutionRepository on TinyDB: tables ``tasks``, ``occurrences`` and ``executions``.

Each record is stored as the shared codec's document (:mod:`planflow.executions`), keeping the model's id
inside it; executions are keyed by ``occurrence_id``. TinyDB document ids are handed out in the order records
are first added and an upsert rewrites the record under its old document id, so lists come back in the order
records were first added.

Every operation runs under one lock and inside a batch: the database is read from the storage once, changed
in memory and, if anything changed, written back once. With ``CrashSafeJSONStorage`` that single write
replaces the file atomically, so a crash leaves either the state before an operation (or batch) or the state
after it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Generator, Mapping
from contextlib import contextmanager
from typing import cast

from tinydb import TinyDB
from tinydb.storages import Storage

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
from planflow.infra.tinydb.storage import CrashSafeJSONStorage, StoreData
from planflow.models import JsonValue

TASKS = "tasks"
OCCURRENCES = "occurrences"
EXECUTIONS = "executions"


class _BatchStorage(Storage):
    """The database as the running batch sees it: read from the real storage once, written back once.

    Records are kept by key (``id``, or ``occurrence_id`` for executions) in per-table indexes built once per
    read, so an add inside a batch costs the same whatever the size of the table.
    """

    def __init__(self, inner: Storage) -> None:
        super().__init__()
        self._inner = inner
        # A crash-safe storage parses a fresh copy on every read; any other (MemoryStorage) may hand out the
        # live dicts, which a batch that raises must not have touched.
        self._fresh = isinstance(inner, CrashSafeJSONStorage)
        self._data: StoreData = {}
        self._loaded = False
        self._dirty = False
        self._indexes: dict[str, dict[object, str]] = {}
        self._next_ids: dict[str, int] = {}

    def read(self) -> StoreData:
        if not self._loaded:
            data = cast("StoreData | None", self._inner.read())
            self._data = (data or {}) if self._fresh else _detached(data)
            self._loaded = True
        return self._data

    def write(self, data: StoreData) -> None:
        self._data = data
        self._forget_indexes()
        self._dirty = True

    def _forget_indexes(self) -> None:
        self._indexes.clear()
        self._next_ids.clear()

    def rows(self, table: str) -> dict[str, object]:
        """The table's documents by TinyDB document id (as a string), created empty when missing."""
        return self.read().setdefault(table, {})

    def index(self, table: str, key: str) -> dict[object, str]:
        """``record key -> document id`` of ``table``."""
        index = self._indexes.get(table)
        if index is None:
            rows = self.rows(table)
            index = self._indexes[table] = {
                cast("Mapping[str, object]", doc).get(key): doc_id for doc_id, doc in rows.items()
            }
        return index

    def new_id(self, table: str) -> str:
        """A fresh document id for ``table``: one more than the largest, as TinyDB itself hands them out."""
        next_id = self._next_ids.get(table)
        if next_id is None:
            next_id = max(map(int, self.rows(table)), default=0) + 1
        self._next_ids[table] = next_id + 1
        return str(next_id)

    def changed(self) -> None:
        """Record that the data was changed in place."""
        self._dirty = True

    @contextmanager
    def savepoint(self) -> Generator[None, None, None]:
        """Undo the writes made inside the block when it raises."""
        saved = (self._loaded, self._dirty, _detached(self._data))
        try:
            yield
        except BaseException:
            self._loaded, self._dirty, self._data = saved
            self._forget_indexes()
            raise

    def commit(self) -> None:
        """Write the batch's changes, if any, to the real storage in one write."""
        if self._dirty:
            self._inner.write(self._data)

    def reset(self) -> None:
        """Forget the batch: the next read comes from the real storage again."""
        self._data = {}
        self._loaded = False
        self._dirty = False
        self._forget_indexes()


class _Shared:
    """The lock and batch state of one TinyDB instance, shared by every repository built on it."""

    def __init__(self, db: TinyDB) -> None:
        self.lock = threading.RLock()
        self.storage = _BatchStorage(db.storage)
        self.in_batch = False


_shared_by_db: weakref.WeakKeyDictionary[TinyDB, _Shared] = weakref.WeakKeyDictionary()
_shared_by_db_lock = threading.Lock()


def _shared_for(db: TinyDB) -> _Shared:
    # Two repositories on one TinyDB must not interleave read-modify-write cycles, so they share one lock.
    with _shared_by_db_lock:
        shared = _shared_by_db.get(db)
        if shared is None:
            shared = _shared_by_db[db] = _Shared(db)
        return shared


class TinyDbExecutionRepository:
    """The ExecutionRepository on a TinyDB database; safe to call from several threads.

    The repository must be the only writer of the database (repositories sharing one ``TinyDB`` instance are
    fine): it does not see changes made behind its back while a batch runs, and TinyDB has no locking
    between processes.
    """

    def __init__(self, db: TinyDB) -> None:
        """Serve the execution tables of ``db``.

        Args:
            db: The database, e.g. ``TinyDB(path, storage=CrashSafeJSONStorage)`` or
                ``TinyDB(storage=MemoryStorage)``. The repository does not close it.

        Raises:
            TypeError: ``db`` is not a ``TinyDB``.
        """
        self._shared = _shared_for(require(db, TinyDB, "TinyDbExecutionRepository(db)"))
        self._store = self._shared.storage

    @contextmanager
    def batch(self) -> Generator[None, None, None]:
        """Group the writes made inside the ``with`` block into one write of the storage.

        The block holds the repository's lock: other threads wait until it ends and never see half a batch,
        so keep it short. Reads inside the block see its writes. When the block raises, none of its writes
        are stored; when the final write fails, the same holds and the write's error propagates. A batch
        entered inside another is a savepoint of the outer one (as on the SQL drivers): its writes are stored
        with the outer batch's, and when it raises only its own writes are undone.
        """
        shared = self._shared
        with shared.lock:
            if shared.in_batch:
                with shared.storage.savepoint():
                    yield
            else:
                with self._session():
                    yield

    @contextmanager
    def _session(self) -> Generator[None, None, None]:
        # Every operation runs in one: a single read and at most one write of the real storage. Inside a
        # batch it simply joins it; an operation changes the data only after its last check passed.
        shared = self._shared
        with shared.lock:
            if shared.in_batch:
                yield
                return
            shared.in_batch = True
            try:
                yield
                shared.storage.commit()
            finally:
                shared.in_batch = False
                shared.storage.reset()

    def add_task(self, task: TaskDefinition) -> None:
        """Store ``task``, overwriting a stored task with the same id in its place.

        Raises:
            TypeError: ``task`` is not a :class:`TaskDefinition`; nothing is stored.
            ValidationError: A field holds a value of the wrong type; nothing is stored.
        """
        doc = task_to_doc(require(task, TaskDefinition, "add_task(task)"))
        with self._session():
            _upsert(self._store, TASKS, "id", doc)

    def get_task(self, task_id: str) -> TaskDefinition | None:
        """Return the task with id ``task_id``, or ``None`` when it is not stored."""
        require(task_id, str, "get_task(task_id)")
        with self._session():
            found = _find(self._store, TASKS, "id", task_id)
        return None if found is None else task_from_doc(found)

    def list_tasks(self) -> list[TaskDefinition]:
        """Return every stored task, in the order the tasks were first added."""
        with self._session():
            docs = _documents(self._store, TASKS)
        return [task_from_doc(doc) for _, doc in docs]

    def add_occurrence(self, occ: TaskOccurrence) -> None:
        """Store ``occ``, overwriting a stored occurrence with the same id in its place.

        Raises:
            TypeError: ``occ`` is not a :class:`TaskOccurrence`; nothing is stored.
            ValidationError: A field holds a value of the wrong type; nothing is stored.
        """
        doc = occurrence_to_doc(require(occ, TaskOccurrence, "add_occurrence(occ)"))
        with self._session():
            _upsert(self._store, OCCURRENCES, "id", doc)

    def get_occurrence(self, occurrence_id: str) -> TaskOccurrence | None:
        """Return the occurrence with id ``occurrence_id``, or ``None`` when it is not stored."""
        require(occurrence_id, str, "get_occurrence(occurrence_id)")
        with self._session():
            found = _find(self._store, OCCURRENCES, "id", occurrence_id)
        return None if found is None else occurrence_from_doc(found)

    def list_occurrences(self, task_id: str | None = None) -> list[TaskOccurrence]:
        """Return the stored occurrences (only those of ``task_id`` when given), in the order first added."""
        if task_id is not None:
            require(task_id, str, "list_occurrences(task_id)")
        with self._session():
            docs = _documents(self._store, OCCURRENCES)
        return [
            occurrence_from_doc(doc) for _, doc in docs if task_id is None or doc.get("task_id") == task_id
        ]

    def add_execution(self, execution: TaskExecution) -> None:
        """Store ``execution``, overwriting the stored execution of the same occurrence in its place.

        Raises:
            TypeError: ``execution`` is not a :class:`TaskExecution`; nothing is stored.
            ValidationError: A field holds a value of the wrong type; nothing is stored.
        """
        doc = execution_to_doc(require(execution, TaskExecution, "add_execution(execution)"))
        with self._session():
            _upsert(self._store, EXECUTIONS, "occurrence_id", doc)

    def get_execution(self, occurrence_id: str) -> TaskExecution | None:
        """Return the execution of occurrence ``occurrence_id``, or ``None`` when it is not stored."""
        require(occurrence_id, str, "get_execution(occurrence_id)")
        with self._session():
            found = _find(self._store, EXECUTIONS, "occurrence_id", occurrence_id)
        return None if found is None else execution_from_doc(found)

    def list_executions(self) -> list[TaskExecution]:
        """Return every stored execution, in the order the executions were first added."""
        with self._session():
            docs = _documents(self._store, EXECUTIONS)
        return [execution_from_doc(doc) for _, doc in docs]

    def delete_task_and_related(self, task_id: str) -> None:
        """Remove a task, its occurrences and their executions, in one write; other records stay.

        Deleting a task that is not stored removes whatever occurrences (and their executions) still name
        it, and is otherwise a no-op that writes nothing.
        """
        require(task_id, str, "delete_task_and_related(task_id)")
        with self._session():
            occurrences = [
                (doc_id, doc)
                for doc_id, doc in _documents(self._store, OCCURRENCES)
                if doc.get("task_id") == task_id
            ]
            occurrence_ids = {doc.get("id") for _, doc in occurrences}
            _remove(
                self._store,
                EXECUTIONS,
                [
                    doc_id
                    for doc_id, doc in _documents(self._store, EXECUTIONS)
                    if doc.get("occurrence_id") in occurrence_ids
                ],
            )
            _remove(self._store, OCCURRENCES, [doc_id for doc_id, _ in occurrences])
            _remove(
                self._store,
                TASKS,
                [doc_id for doc_id, doc in _documents(self._store, TASKS) if doc.get("id") == task_id],
            )


def _detached(data: StoreData | None) -> StoreData:
    # MemoryStorage hands out its live dicts and TinyDB edits what it reads in place; a batch that raises
    # must leave the stored data untouched, so it works on copies of the tables and documents.
    return {
        name: {doc_id: dict(cast("Mapping[str, object]", doc)) for doc_id, doc in table.items()}
        for name, table in (data or {}).items()
    }


def _documents(store: _BatchStorage, table: str) -> list[tuple[str, Mapping[str, object]]]:
    """The table's documents with their TinyDB ids, in the order they were first added (ascending ids)."""
    rows = store.rows(table)
    return [(doc_id, cast("Mapping[str, object]", rows[doc_id])) for doc_id in sorted(rows, key=int)]


def _find(store: _BatchStorage, table: str, key: str, value: str) -> Mapping[str, object] | None:
    doc_id = store.index(table, key).get(value)
    return None if doc_id is None else cast("Mapping[str, object]", store.rows(table)[doc_id])


def _upsert(store: _BatchStorage, table: str, key: str, doc: dict[str, JsonValue]) -> None:
    # An upsert keeps the record's document id, so it keeps its place; a new record takes the next id, so
    # lists come back in the order records were first added.
    rows = store.rows(table)
    index = store.index(table, key)
    doc_id = index.get(doc[key])
    if doc_id is None:
        doc_id = index[doc[key]] = store.new_id(table)
    rows[doc_id] = dict(doc)
    store.changed()


def _remove(store: _BatchStorage, table: str, doc_ids: list[str]) -> None:
    # Nothing to remove writes nothing.
    if doc_ids:
        rows = store.rows(table)
        for doc_id in doc_ids:
            del rows[doc_id]
        store.write(store.read())


__all__ = ["EXECUTIONS", "OCCURRENCES", "TASKS", "TinyDbExecutionRepository"]
