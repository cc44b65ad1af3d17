"""Edges of the TinyDB repository and its files: foreign storages, odd document ids, unwritable paths."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from tinydb import TinyDB
from tinydb.storages import JSONStorage, MemoryStorage, Storage

from planflow import CorruptStoreError, StoreWriteError, ValidationError
from planflow.infra.execution_codec import task_to_doc
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository
from planflow.infra.tinydb.files import remove_stale_temps
from planflow.infra.tinydb.lock import StoreLock
from tests.contract.helpers import a_task, an_execution, an_occurrence


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.json"


def doc(task_id: str) -> dict[str, object]:
    return dict(task_to_doc(a_task(task_id)))


# Storages of the caller's own ------------------------------------------------------------------------------


def test_tinydbs_own_json_storage_on_a_broken_file_is_a_corrupt_store_error(path: Path) -> None:
    path.write_text('{"tasks": ', encoding="utf-8")
    with TinyDB(path) as db, pytest.raises(CorruptStoreError, match="cannot read the TinyDB store") as caught:
        TinyDbExecutionRepository(db).list_tasks()
    assert isinstance(caught.value.__cause__, ValueError)


def test_a_read_only_json_storage_is_a_store_write_error_and_nothing_changes(path: Path) -> None:
    path.write_text("{}", encoding="utf-8")
    with TinyDB(path, storage=JSONStorage, access_mode="r") as db:
        repo = TinyDbExecutionRepository(db)
        with pytest.raises(StoreWriteError, match="cannot write the TinyDB store"):
            repo.add_task(a_task("t1"))
        assert repo.list_tasks() == []
    assert path.read_text(encoding="utf-8") == "{}"


class ListStorage(Storage):
    """A storage of somebody's own that returns the wrong thing."""

    def read(self) -> object:  # pyright: ignore[reportIncompatibleMethodOverride]
        return ["not", "tables"]

    def write(self, data: object) -> None:  # pyright: ignore[reportIncompatibleMethodOverride]
        raise AssertionError("never written")


def test_a_storage_returning_something_else_than_tables_is_a_corrupt_store_error() -> None:
    repo = TinyDbExecutionRepository(TinyDB(storage=ListStorage))
    with pytest.raises(CorruptStoreError, match="returned a list"):
        repo.get_task("t1")


# Documents TinyDB or a person put there ---------------------------------------------------------------------


def test_documents_stored_out_of_id_order_are_listed_in_id_order(path: Path) -> None:
    tables = {"tasks": {"3": doc("c"), "1": doc("a"), "x": doc("odd"), "2": doc("b")}}
    path.write_text(json.dumps(tables), encoding="utf-8")
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        assert [t.id for t in repo.list_tasks()] == ["a", "b", "c", "odd"]
        repo.add_task(a_task("d"))
        assert [t.id for t in repo.list_tasks()] == ["a", "b", "c", "odd", "d"]
    assert list(json.loads(path.read_text(encoding="utf-8"))["tasks"]) == ["1", "2", "3", "x", "4"]


def test_a_table_with_only_foreign_document_ids_numbers_new_records_from_one_and_lists_them_first() -> None:
    db = TinyDB(storage=MemoryStorage)
    db.storage.write({"tasks": {"first": doc("a")}})
    repo = TinyDbExecutionRepository(db)
    repo.add_task(a_task("b"))
    assert list(db.storage.read()["tasks"]) == ["first", "1"]  # pyright: ignore[reportOptionalSubscript]
    # TinyDB's own decimal ids come first, in order; an id of another kind after them.
    assert [t.id for t in repo.list_tasks()] == ["b", "a"]


def test_a_document_that_is_not_an_object_is_reported_when_read_and_other_records_still_work() -> None:
    db = TinyDB(storage=MemoryStorage)
    db.storage.write({"tasks": {"1": "text", "2": doc("ok")}})
    repo = TinyDbExecutionRepository(db)
    assert repo.get_task("ok") == a_task("ok")
    with pytest.raises(ValidationError, match="stored task must be a JSON object, found str"):
        repo.list_tasks()


def test_a_malformed_stored_record_is_reported_on_every_read_of_it(path: Path) -> None:
    bad = {**doc("t1"), "created_at": "yesterday"}
    path.write_text(json.dumps({"tasks": {"1": bad, "2": doc("t2")}}), encoding="utf-8")
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        for _ in range(2):
            with pytest.raises(ValidationError, match="'created_at' must be an ISO datetime string"):
                repo.get_task("t1")
        assert repo.get_task("t2") == a_task("t2")
        repo.add_task(a_task("t1"))  # writing it again repairs it
        assert [t.id for t in repo.list_tasks()] == ["t1", "t2"]


def test_a_nested_batch_that_raises_after_a_delete_restores_the_order(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        for key in ("a", "b", "c"):
            repo.add_task(a_task(key))
            repo.add_occurrence(an_occurrence(f"o-{key}", task_id=key))
            repo.add_execution(an_execution(f"o-{key}"))
        with repo.batch():
            with pytest.raises(RuntimeError), repo.batch():
                repo.delete_task_and_related("a")
                repo.delete_task_and_related("b")
                repo.add_task(a_task("new"))
                raise RuntimeError
            assert [t.id for t in repo.list_tasks()] == ["a", "b", "c"]
            assert [o.id for o in repo.list_occurrences("b")] == ["o-b"]
            repo.add_task(a_task("after"))
        assert [t.id for t in repo.list_tasks()] == ["a", "b", "c", "after"]
        assert [e.occurrence_id for e in repo.list_executions()] == ["o-a", "o-b", "o-c"]
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["a", "b", "c", "after"]


def test_an_occurrence_moved_to_another_task_is_listed_under_it_in_the_order_first_added(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        for occurrence_id, task_id in [("o1", "t1"), ("o2", "t2"), ("o3", "t1")]:
            repo.add_occurrence(an_occurrence(occurrence_id, task_id=task_id))
        repo.add_occurrence(an_occurrence("o2", task_id="t1"))
        assert [o.id for o in repo.list_occurrences("t1")] == ["o1", "o2", "o3"]
        assert repo.list_occurrences("t2") == []
        repo.delete_task_and_related("t1")
        assert repo.list_occurrences() == []


# Unwritable places ---------------------------------------------------------------------------------------


def test_a_journal_that_cannot_be_created_is_a_store_write_error_and_the_store_is_not_left_locked(
    path: Path, tmp_path: Path
) -> None:
    journal = tmp_path / "store.json.journal"
    journal.symlink_to(tmp_path / "missing" / "folder" / "journal")
    with pytest.raises(StoreWriteError, match="cannot open the journal"):
        TinyDB(path, storage=JournaledStorage)
    journal.unlink()
    JournaledStorage(path).close()


def test_a_lock_file_that_cannot_be_created_is_a_store_write_error(path: Path, tmp_path: Path) -> None:
    (tmp_path / "store.json.lock").symlink_to(tmp_path / "missing" / "lock")
    with pytest.raises(StoreWriteError, match="cannot create the lock file"):
        TinyDB(path, storage=JournaledStorage)


def test_releasing_a_lock_twice_is_harmless(path: Path) -> None:
    lock = StoreLock.acquire(path)
    lock.release()
    lock.release()
    StoreLock.acquire(path).release()


def test_a_stale_temporary_file_that_cannot_be_removed_is_logged_and_left(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = path.with_name(".store.json.stuck.tmp")
    stuck.mkdir()  # unlink() refuses a folder, as Windows refuses a file a scanner holds
    with caplog.at_level(logging.WARNING, logger="planflow.tinydb"):
        assert remove_stale_temps(path) == []
    assert stuck.is_dir()
    assert any("cannot remove the stale temporary file" in r.getMessage() for r in caplog.records)


def test_a_write_through_tinydb_that_changes_nothing_journals_nothing(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        db.table("notes").insert({"a": 1})
        storage = db.storage
        assert isinstance(storage, JournaledStorage)
        size = os.path.getsize(storage.journal_path)
        changes = storage.changes
        data = storage.read()
        assert data is not None
        storage.write(data)
        assert (os.path.getsize(storage.journal_path), storage.changes) == (size, changes)


def occurrence_doc(occurrence_id: str, **changes: object) -> dict[str, object]:
    from planflow.infra.execution_codec import occurrence_to_doc

    return {**occurrence_to_doc(an_occurrence(occurrence_id)), **changes}


def test_a_stored_occurrence_with_a_bad_task_id_is_reported_and_repaired_by_adding_it_again(
    path: Path,
) -> None:
    path.write_text(json.dumps({"occurrences": {"1": occurrence_doc("o1", task_id=5)}}), encoding="utf-8")
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        with pytest.raises(ValidationError, match="'task_id' must be a string"):
            repo.get_occurrence("o1")
        assert repo.list_occurrences("task-1") == []
        repo.add_occurrence(an_occurrence("o1"))
        assert repo.list_occurrences("task-1") == [an_occurrence("o1")]


def test_records_stored_twice_under_one_id_are_both_deleted_with_their_task(path: Path) -> None:
    twice = {"1": occurrence_doc("o1"), "2": occurrence_doc("o1"), "3": occurrence_doc("o2")}
    path.write_text(json.dumps({"occurrences": twice}), encoding="utf-8")
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        assert [o.id for o in repo.list_occurrences("task-1")] == ["o1", "o1", "o2"]
        repo.delete_task_and_related("task-1")
        assert repo.list_occurrences() == []
