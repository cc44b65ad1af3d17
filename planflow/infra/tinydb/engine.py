"""The TinyDB driver's storage engine: indexed tables of documents, changed in units of work with savepoints.

A repository asks the engine of its ``TinyDB`` for a unit of work (:meth:`Engine.unit`). Inside it, a
:class:`Unit` finds documents by key or by group, lists them in the order they were first added (ascending
document id), reads each document's decoded value, and puts or removes documents. The unit's changes are
seen by its own reads at once and reach the storage in one call when it ends; a unit that raises leaves
nothing behind, and a unit entered inside another is a savepoint of it: when it raises, only its own changes
are undone.

Per table the engine keeps an index by key (and by group), the next document id, and each document's decoded
value (or the error decoding it raised) from the document's first read or write on. It never changes the
storage's data itself: it reads through a small interface, :class:`Source` (a read-only view of a table's
documents, a count of the changes made by any path), and hands the storage a unit's changes as operations
(:mod:`planflow.infra.tinydb.documents`) to ``apply``.

- :class:`~planflow.infra.tinydb.journal.JournaledStorage` is such a source itself. Its data stays in memory, so
  the indexes are built once, when the engine is made (opening the store), and then kept current: a read is a
  lookup, a unit's changes are one journal record. A write made through TinyDB's own API on the same storage
  moves its change count, and the engine rebuilds its indexes before its next unit.
- Any other TinyDB storage (``MemoryStorage``, ``CrashSafeJSONStorage``, TinyDB's ``JSONStorage``) is read whole
  at the start of every unit and, if the unit changed anything, written back whole once at its end, as TinyDB
  itself does.

One engine serves every repository of one ``TinyDB`` (:meth:`Engine.of`), and its lock is the storage's, so
their units, and TinyDB's own calls on a journaled storage, never interleave.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Generator, Mapping, Sequence
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar, cast

from tinydb import TinyDB
from tinydb.storages import Storage

from planflow.errors import CorruptStoreError, PlanflowError, ReadOnlyError, StoreWriteError, ValidationError
from planflow.infra.tinydb.documents import (
    DELETE,
    PUT,
    Op,
    StoreData,
    apply_ops,
    collector_paused,
    document_number,
    in_document_order,
    next_document_id,
)
from planflow.infra.tinydb.journal import JournaledStorage

V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)

_EMPTY: Mapping[str, object] = MappingProxyType({})


class TableSpec(Protocol[V_co]):
    """How the engine serves one table: the field a document is found by, the one it is grouped by, and how
    a document is decoded (``planflow.infra.execution_rules.Kind`` is one)."""

    @property
    def table(self) -> str: ...

    @property
    def key_field(self) -> str: ...

    @property
    def group_field(self) -> str | None: ...

    @property
    def decode(self) -> Callable[[Mapping[str, object]], V_co]: ...


class Source(Protocol):
    """What an engine reads and writes: the small interface a storage offers beside TinyDB's ``Storage``."""

    @property
    def guard(self) -> threading.RLock:
        """The lock every change of the data holds."""
        ...

    @property
    def changes(self) -> int:
        """How many writes changed the data, by any path: the engine rebuilds when it moved beside it."""
        ...

    @property
    def read_only(self) -> bool:
        """True when the data may be read but not written."""
        ...

    def documents(self, table: str) -> Mapping[str, object]:
        """A read-only view of the documents of ``table``, in document id order."""
        ...

    def apply(self, ops: Sequence[Op]) -> None:
        """Store ``ops`` durably, then apply them to the data (the view follows)."""
        ...


class _WholeData:
    """Any TinyDB storage as a :class:`Source`: read whole by :meth:`reload`, written back whole by :meth:`apply`."""

    read_only = False

    def __init__(self, storage: Storage) -> None:
        self.guard = threading.RLock()
        self.changes = 0
        self._storage = storage
        self._data: StoreData = {}

    def reload(self) -> None:
        """Read the storage again: another process or TinyDB's own API may have changed it."""
        try:
            data = cast("object", self._storage.read())
        except PlanflowError:
            raise
        except Exception as exc:  # a storage of the caller's own (TinyDB's JSONStorage) may raise anything
            raise CorruptStoreError(f"cannot read the TinyDB store: {exc!r}") from exc
        if data is not None and not isinstance(data, dict):
            raise CorruptStoreError(
                f"the TinyDB storage returned a {type(data).__name__}, not a dict of tables"
            )
        tables: StoreData = {}
        for name, docs in cast("dict[str, object]", data or {}).items():
            if not isinstance(docs, dict):
                raise CorruptStoreError(
                    f"table {name!r} of the TinyDB storage is a {type(docs).__name__}, not a dict of documents"
                )
            # Copies: MemoryStorage hands out its live dicts, which TinyDB's own API changes in place.
            tables[name] = in_document_order(
                {
                    doc_id: dict(cast("dict[str, object]", doc)) if isinstance(doc, dict) else doc
                    for doc_id, doc in cast("dict[str, object]", docs).items()
                }
            )
        self._data = tables
        self.changes += 1

    def documents(self, table: str) -> Mapping[str, object]:
        docs = self._data.get(table)
        return _EMPTY if docs is None else MappingProxyType(docs)

    def apply(self, ops: Sequence[Op]) -> None:
        data = {name: dict(docs) for name, docs in self._data.items()}
        apply_ops(data, ops)
        try:
            self._storage.write(data)
        except PlanflowError:
            raise
        except Exception as exc:
            raise StoreWriteError(f"cannot write the TinyDB store: {exc!r}") from exc
        self._data = data
        self.changes += 1


class _Table(Generic[V]):
    """One table as the engine serves it: the source's documents, the running unit's changes over them, and
    the indexes of both."""

    __slots__ = ("added", "by_group", "by_key", "docs", "errors", "next_id", "pending", "spec", "values")

    def __init__(self, spec: TableSpec[V]) -> None:
        self.spec = spec
        self.docs: Mapping[str, object] = _EMPTY
        #: The running unit's changes: document id -> its new document, or None when removed.
        self.pending: dict[str, object | None] = {}
        #: Ids of the documents the running unit added, in the order added.
        self.added: dict[str, None] = {}
        self.by_key: dict[str, str] = {}
        #: Group -> the ids of its documents (an ordered set); None when the table has no group field.
        self.by_group: dict[str, dict[str, None]] | None = None
        self.values: dict[str, V] = {}
        self.errors: dict[str, ValidationError] = {}
        self.next_id = 1

    def rebuild(self, docs: Mapping[str, object]) -> None:
        """Index ``docs`` afresh, forgetting every decoded value."""
        self.docs = docs
        self.by_key = {}
        self.by_group = None if self.spec.group_field is None else {}
        self.values = {}
        self.errors = {}
        for doc_id, doc in docs.items():
            self._index(doc_id, doc)
        self.next_id = next_document_id(docs)

    def doc(self, doc_id: str) -> object | None:
        """The document ``doc_id`` as the running unit sees it, or None."""
        pending = self.pending
        if pending and doc_id in pending:
            return pending[doc_id]
        return self.docs.get(doc_id)

    def ids(self) -> list[str]:
        """The ids of the documents, in the order first added."""
        pending = self.pending
        if not pending:
            return list(self.docs)
        ids = [doc_id for doc_id in self.docs if doc_id not in pending or pending[doc_id] is not None]
        ids.extend(doc_id for doc_id in self.added if pending.get(doc_id) is not None)
        return ids

    def value(self, doc_id: str) -> V:
        """The decoded document ``doc_id``, decoded once and kept until the document changes.

        Raises:
            ValidationError: The document is malformed (the message names the record and field).
        """
        found = self.values.get(doc_id)
        if found is not None:
            return found
        error = self.errors.get(doc_id)
        if error is None:
            try:
                found = self.spec.decode(cast("Mapping[str, object]", self.doc(doc_id)))
            except ValidationError as exc:
                error = self.errors[doc_id] = exc
            else:
                self.values[doc_id] = found
                return found
        raise ValidationError(*error.args)

    def set(self, doc_id: str, doc: object | None, value: V | None) -> None:
        """Make ``doc`` (decoded: ``value``) the unit's document ``doc_id``; None removes it. Indexes follow."""
        old = self.doc(doc_id)
        if old is not None:
            self._unindex(doc_id, old)
        self.values.pop(doc_id, None)
        self.errors.pop(doc_id, None)
        if doc_id not in self.pending and doc_id not in self.docs:
            self.added[doc_id] = None
        self.pending[doc_id] = doc
        if doc is not None:
            self._index(doc_id, doc)
            self.values[doc_id] = cast("V", value)

    def restore(self, doc_id: str, change: _Change[V]) -> None:
        """Undo one change to ``doc_id``: its pending state, indexes and decoded value as they were before."""
        current = self.doc(doc_id)
        if current is not None:
            self._unindex(doc_id, current)
        if change.was_pending:
            self.pending[doc_id] = change.pending
        else:
            self.pending.pop(doc_id, None)
            self.added.pop(doc_id, None)
        restored = self.doc(doc_id)
        if restored is not None:
            self._index(doc_id, restored)
        self.values.pop(doc_id, None)
        self.errors.pop(doc_id, None)
        if change.value is not None:
            self.values[doc_id] = change.value
        if change.error is not None:
            self.errors[doc_id] = change.error

    def settle(self, docs: Mapping[str, object]) -> None:
        """The running unit's changes are now the source's: forget them as pending."""
        self.pending.clear()
        self.added.clear()
        self.docs = docs

    def group(self, group: str) -> list[str]:
        """The ids of the documents of ``group``, in the order first added."""
        assert self.by_group is not None, f"table {self.spec.table!r} has no group field"
        return sorted(self.by_group.get(group, ()), key=document_number)

    def key_of(self, doc_id: str) -> str | None:
        """The key field of document ``doc_id`` as stored, or None when it is not a string."""
        key = _field(self.doc(doc_id), self.spec.key_field)
        return key if isinstance(key, str) else None

    def _index(self, doc_id: str, doc: object) -> None:
        key = _field(doc, self.spec.key_field)
        if isinstance(key, str):
            self.by_key[key] = doc_id
        if self.by_group is not None:
            group = _field(doc, cast("str", self.spec.group_field))
            if isinstance(group, str):
                self.by_group.setdefault(group, {})[doc_id] = None

    def _unindex(self, doc_id: str, doc: object) -> None:
        key = _field(doc, self.spec.key_field)
        if isinstance(key, str) and self.by_key.get(key) == doc_id:
            del self.by_key[key]
        if self.by_group is not None:
            group = _field(doc, cast("str", self.spec.group_field))
            members = self.by_group.get(group) if isinstance(group, str) else None
            if members is not None:
                members.pop(doc_id, None)
                if not members:
                    del self.by_group[cast("str", group)]


def _field(doc: object, name: str) -> object:
    # A document that is not an object is indexed under nothing; decoding it names it.
    return cast("dict[str, object]", doc).get(name) if isinstance(doc, dict) else None


class _Change(Generic[V]):
    """What one change replaced, for undoing it: the pending state and decoded value of one document, and
    the table's next document id."""

    __slots__ = ("doc_id", "error", "next_id", "pending", "table", "value", "was_pending")

    def __init__(self, table: _Table[V], doc_id: str, next_id: int) -> None:
        self.table = table
        self.doc_id = doc_id
        self.next_id = next_id
        self.was_pending = doc_id in table.pending
        self.pending = table.pending.get(doc_id)
        self.value = table.values.get(doc_id)
        self.error = table.errors.get(doc_id)


#: A point in the running unit: how many changes and operations it had made.
_Mark = tuple[int, int]


class Unit:
    """The running unit of work of an engine: what a repository reads and changes the tables through."""

    def __init__(self, tables: dict[str, _Table[Any]]) -> None:
        self._tables = tables
        self._changes: list[_Change[Any]] = []
        self.ops: list[Op] = []

    def _table(self, spec: TableSpec[V]) -> _Table[V]:
        return self._tables[spec.table]

    def find(self, spec: TableSpec[V], key: str) -> str | None:
        """The id of the document whose key field is ``key`` (the last one added), or None."""
        return self._table(spec).by_key.get(key)

    def get(self, spec: TableSpec[V], key: str) -> V | None:
        """The decoded document whose key field is ``key``, or None.

        Raises:
            ValidationError: That document is malformed.
        """
        table = self._table(spec)
        doc_id = table.by_key.get(key)
        return None if doc_id is None else table.value(doc_id)

    def ids(self, spec: TableSpec[V]) -> list[str]:
        """The ids of every document, in the order first added."""
        return self._table(spec).ids()

    def group(self, spec: TableSpec[V], group: str) -> list[str]:
        """The ids of the documents whose group field is ``group``, in the order first added."""
        return self._table(spec).group(group)

    def value(self, spec: TableSpec[V], doc_id: str) -> V:
        """The decoded document ``doc_id``.

        Raises:
            ValidationError: The document is malformed.
        """
        return self._table(spec).value(doc_id)

    def values(self, spec: TableSpec[V], doc_ids: Sequence[str] | None = None) -> list[V]:
        """The decoded documents ``doc_ids`` (default: every document, in the order first added).

        Raises:
            ValidationError: One of them is malformed.
        """
        table = self._table(spec)
        ids = table.ids() if doc_ids is None else doc_ids
        known = table.values
        if len(known) >= len(ids):
            return [known.get(doc_id) or table.value(doc_id) for doc_id in ids]
        with collector_paused():  # the first read of a large table decodes all of it
            return [known.get(doc_id) or table.value(doc_id) for doc_id in ids]

    def key_of(self, spec: TableSpec[V], doc_id: str) -> str | None:
        """The key field of document ``doc_id`` as stored, or None when it is not a string."""
        return self._table(spec).key_of(doc_id)

    def put(self, spec: TableSpec[V], key: str, doc: Mapping[str, object], value: V) -> None:
        """Upsert ``doc`` by ``key``: a stored document keeps its id (and place), else it gets the next id.

        ``doc`` becomes the store's and must not be changed afterwards; ``value`` is its decoded form.
        """
        table = self._table(spec)
        next_id = table.next_id
        doc_id = table.by_key.get(key)
        if doc_id is None:
            doc_id = str(next_id)
            table.next_id += 1
        self._change(table, doc_id, doc, value, next_id)

    def remove(self, spec: TableSpec[V], doc_id: str) -> None:
        """Remove document ``doc_id``."""
        table = self._table(spec)
        self._change(table, doc_id, None, None, table.next_id)

    def remove_key(self, spec: TableSpec[V], key: str) -> None:
        """Remove the document whose key field is ``key``, if there is one."""
        doc_id = self.find(spec, key)
        if doc_id is not None:
            self.remove(spec, doc_id)

    def _change(
        self, table: _Table[V], doc_id: str, doc: Mapping[str, object] | None, value: V | None, next_id: int
    ) -> None:
        self._changes.append(_Change(table, doc_id, next_id))
        table.set(doc_id, doc, value)
        name = table.spec.table
        self.ops.append((PUT, name, doc_id, doc) if doc is not None else (DELETE, name, doc_id))

    def mark(self) -> _Mark:
        """Where the unit stands now, for :meth:`rollback`."""
        return len(self._changes), len(self.ops)

    def rollback(self, mark: _Mark = (0, 0)) -> None:
        """Undo the changes made since ``mark`` (by default, all of them)."""
        changes_at, ops_at = mark
        while len(self._changes) > changes_at:
            change = self._changes.pop()
            change.table.restore(change.doc_id, change)
            change.table.next_id = change.next_id
        del self.ops[ops_at:]

    def forget(self) -> None:
        """End the unit: its changes were stored or undone."""
        if self.ops or self._changes:
            self._changes.clear()
            self.ops.clear()


class Engine:
    """The storage engine of one ``TinyDB``: see the module docstring."""

    def __init__(self, db: TinyDB) -> None:
        storage = db.storage
        source: Source
        if isinstance(storage, JournaledStorage):
            source, self._reload = storage, None
        else:
            whole = _WholeData(storage)
            source, self._reload = whole, whole.reload
        self._source = source
        self._where = f" {storage.path}" if isinstance(storage, JournaledStorage) else ""
        #: The engine's lock is the storage's: a TinyDB call on it never sees half a unit.
        self.lock = source.guard
        self._db = weakref.ref(db)
        self._tables: dict[str, _Table[Any]] = {}
        self._seen = -1
        self._depth = 0
        self._unit = Unit(self._tables)

    @classmethod
    def of(cls, db: TinyDB, specs: Sequence[TableSpec[Any]]) -> Engine:
        """The engine of ``db`` (made on first use), serving ``specs`` besides the tables it served already.

        The tables are indexed now when the storage keeps its data in memory, so that no later call (the
        first write after opening a store included) pays for it.
        """
        with _engines_lock:
            engine = _engines.get(db)
            if engine is None:
                engine = _engines[db] = cls(db)
        engine._serve(specs)
        return engine

    def _serve(self, specs: Sequence[TableSpec[Any]]) -> None:
        with self.lock:
            new = [_Table(spec) for spec in specs if spec.table not in self._tables]
            for table in new:
                self._tables[table.spec.table] = table
            if self._reload is None and self._depth == 0 and self._source.changes != self._seen:
                self._rebuild()
                return
            for table in new:
                table.rebuild(self._source.documents(table.spec.table))

    def _rebuild(self) -> None:
        """Index the source afresh (read again first when the storage keeps no data in memory)."""
        if self._reload is not None:
            self._reload()
        with collector_paused():
            for table in self._tables.values():
                table.rebuild(self._source.documents(table.spec.table))
        self._seen = self._source.changes

    @contextmanager
    def unit(self, writes: str | None = None) -> Generator[Unit, None, None]:
        """A unit of work: its changes are stored in one write when the block ends, or none if it raises.

        Inside another unit (of this thread: the lock keeps others out) it is a savepoint of it: when it raises,
        only its own changes are undone, and they are stored with the outer unit's.

        Args:
            writes: The operation, when it writes (e.g. ``"add_task"``): refused on a read-only store.

        Raises:
            ReadOnlyError: ``writes`` is given and the store was opened read-only; nothing was done.
            StoreWriteError: The changes could not be stored; none were.
        """
        with self.lock:
            if writes is not None and self._source.read_only:
                raise ReadOnlyError(f"{writes} was refused: the TinyDB store{self._where} is open read-only")
            unit = self._unit
            if self._depth:
                mark = unit.mark()
                self._depth += 1
                try:
                    yield unit
                except BaseException:
                    unit.rollback(mark)
                    raise
                finally:
                    self._depth -= 1
                return
            if self._reload is not None or self._source.changes != self._seen:
                # Another storage is read afresh by every unit; a journaled one was written beside the engine.
                self._rebuild()
            self._depth = 1
            try:
                try:
                    yield unit
                except BaseException:
                    unit.rollback()
                    raise
                self._commit()
            finally:
                self._depth = 0
                unit.forget()

    def _commit(self) -> None:
        unit = self._unit
        if not unit.ops:
            return
        beside = self._source.changes != self._seen  # TinyDB's own API wrote during the unit
        try:
            self._source.apply(unit.ops)
        except BaseException:
            unit.rollback()
            raise
        if not beside:
            self._seen = self._source.changes
        changed = {op[1] for op in unit.ops}
        for name, table in self._tables.items():
            table.settle(self._source.documents(name))
        db = self._db()
        if db is not None:  # pragma: no branch - a repository keeps its TinyDB alive
            for name in changed:
                # TinyDB caches query results per table and would not see writes made beside its API.
                db.table(name).clear_cache()  # pyright: ignore[reportUnknownMemberType]


_engines: weakref.WeakKeyDictionary[TinyDB, Engine] = weakref.WeakKeyDictionary()
_engines_lock = threading.Lock()


__all__ = ["Engine", "Source", "TableSpec", "Unit"]
