"""The TinyDB storage engine under the repository: indexes built at open, units, savepoints, foreign writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tinydb import TinyDB
from tinydb.storages import MemoryStorage, Storage

from planflow import CorruptStoreError, ValidationError
from planflow.infra.execution_codec import task_to_doc
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository
from planflow.infra.tinydb import engine as engine_module
from tests.contract.helpers import a_task, an_execution, an_occurrence


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.json"


def a_store(path: Path, tasks: int) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        with repo.batch():
            for n in range(tasks):
                repo.add_task(a_task(f"t{n}"))
                repo.add_occurrence(an_occurrence(f"o{n}", task_id=f"t{n}"))
                repo.add_execution(an_execution(f"o{n}"))


def count_index_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record the table of every index build the engine makes from now on."""
    built: list[str] = []
    real = engine_module._Table.rebuild  # pyright: ignore[reportPrivateUsage]

    def rebuild(table: engine_module._Table[object], docs: object) -> None:  # pyright: ignore[reportPrivateUsage]
        built.append(table.spec.table)
        real(table, docs)  # pyright: ignore[reportArgumentType]

    monkeypatch.setattr(engine_module._Table, "rebuild", rebuild)  # pyright: ignore[reportPrivateUsage]
    return built


def test_a_journaled_store_is_indexed_when_opened_and_the_first_write_builds_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_store(path, 50)
    built = count_index_builds(monkeypatch)
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        assert sorted(built) == ["executions", "occurrences", "tasks"]
        built.clear()
        repo.add_execution(an_execution("new"))
        repo.add_task(a_task("t0", title="renamed"))
        repo.delete_task_and_related("t1")
        assert repo.get_task("t0") == a_task("t0", title="renamed")
        assert [o.id for o in repo.list_occurrences("t2")] == ["o2"]
        assert built == []  # every write and read after opening used the indexes made at open
        assert len(repo.list_executions()) == 50


def test_a_second_repository_on_the_same_tinydb_reuses_the_indexes(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a_store(path, 3)
    with TinyDB(path, storage=JournaledStorage) as db:
        first = TinyDbExecutionRepository(db)
        built = count_index_builds(monkeypatch)
        second = TinyDbExecutionRepository(db)
        second.add_task(a_task("t9"))
        assert built == []
        assert [t.id for t in first.list_tasks()] == ["t0", "t1", "t2", "t9"]


def test_a_write_through_tinydbs_api_to_another_table_inside_a_batch_is_kept_with_the_batch(
    path: Path,
) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t1"))
        with repo.batch():
            repo.add_task(a_task("t2"))
            db.table("notes").insert({"text": "written beside the batch"})
            repo.add_task(a_task("t3"))
        assert [t.id for t in repo.list_tasks()] == ["t1", "t2", "t3"]
        repo.add_task(a_task("t4"))
        assert [t.id for t in repo.list_tasks()] == ["t1", "t2", "t3", "t4"]
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t1", "t2", "t3", "t4"]
        assert db.table("notes").all() == [{"text": "written beside the batch"}]


def test_a_batch_that_raises_leaves_the_storages_data_as_it_was(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t1"))
        repo.add_occurrence(an_occurrence("o1", task_id="t1"))
        before = db.storage.read()
        with pytest.raises(RuntimeError), repo.batch():
            repo.add_task(a_task("t1", title="changed"))
            repo.delete_task_and_related("t1")
            repo.add_execution(an_execution("o2"))
            assert repo.list_tasks() == []
            raise RuntimeError
        assert db.storage.read() == before
        assert repo.list_occurrences("t1") == [an_occurrence("o1", task_id="t1")]


def test_undoing_a_repair_brings_back_the_error_of_the_malformed_record(path: Path) -> None:
    bad = {**task_to_doc(a_task("t1")), "created_at": "yesterday"}
    path.write_text(json.dumps({"tasks": {"1": bad}}), encoding="utf-8")
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        with pytest.raises(ValidationError, match="created_at"):
            repo.get_task("t1")
        with pytest.raises(RuntimeError), repo.batch():
            repo.add_task(a_task("t1"))
            assert repo.get_task("t1") == a_task("t1")
            raise RuntimeError
        with pytest.raises(ValidationError, match="created_at"):
            repo.get_task("t1")


class TablesOfLists(Storage):
    """A storage of somebody's own whose table is not a dict of documents."""

    def read(self) -> object:  # pyright: ignore[reportIncompatibleMethodOverride]
        return {"tasks": ["not", "documents"]}

    def write(self, data: object) -> None:  # pyright: ignore[reportIncompatibleMethodOverride]
        raise AssertionError("never written")


def test_a_storage_whose_table_is_not_a_dict_of_documents_is_a_corrupt_store_error() -> None:
    repo = TinyDbExecutionRepository(TinyDB(storage=TablesOfLists))
    with pytest.raises(CorruptStoreError, match="table 'tasks' of the TinyDB storage is a list"):
        repo.list_tasks()


def test_a_memory_storage_is_read_afresh_by_every_call() -> None:
    db = TinyDB(storage=MemoryStorage)
    repo = TinyDbExecutionRepository(db)
    repo.add_task(a_task("t1"))
    db.table("tasks").update({"title": "edited in place"})
    assert repo.get_task("t1") == a_task("t1", title="edited in place")
