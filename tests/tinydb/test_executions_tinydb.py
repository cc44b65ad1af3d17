"""What only TinyDB's ExecutionRepository has (the contract suites run on it from tests/contract/drivers.py)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from tinydb import TinyDB
from tinydb.storages import MemoryStorage

from planflow import ValidationError
from planflow.executions import TaskEvent
from planflow.infra.execution_codec import (
    execution_to_doc,
    occurrence_to_doc,
    task_from_doc,
    task_to_doc,
)
from planflow.infra.tinydb import CrashSafeJSONStorage, TinyDbExecutionRepository
from planflow.models import JsonValue
from tests.contract.helpers import NAIVE, a_task, an_execution, an_occurrence


@pytest.fixture
def db() -> TinyDB:
    return TinyDB(storage=MemoryStorage)


def test_records_are_the_codec_documents_in_the_named_tables(db: TinyDB) -> None:
    repo = TinyDbExecutionRepository(db)
    repo.add_task(a_task("t1", created_at=NAIVE))
    repo.add_occurrence(an_occurrence("o1", task_id="t1"))
    repo.add_execution(an_execution("o1", history=[TaskEvent("missed", NAIVE)]))
    assert db.tables() >= {"tasks", "occurrences", "executions"}
    [task] = db.table("tasks").all()
    assert task["id"] == "t1"
    assert task["created_at"] == NAIVE.isoformat()
    assert task["recurrence"] == a_task().recurrence.total_seconds()  # pyright: ignore[reportOptionalMemberAccess]
    assert task["retry_policy"] == {"max_retries": 3}
    assert db.table("occurrences").all()[0]["task_id"] == "t1"
    assert db.table("executions").all()[0]["history"] == [{"event": "missed", "timestamp": NAIVE.isoformat()}]


def test_records_survive_reopening_the_file(tmp_path: Path) -> None:
    path = tmp_path / "planflow.json"
    with TinyDB(path, storage=CrashSafeJSONStorage) as db:
        TinyDbExecutionRepository(db).add_task(a_task("t1"))
        TinyDbExecutionRepository(db).add_execution(an_execution("o1"))
    with TinyDB(path, storage=CrashSafeJSONStorage) as db:
        reopened = TinyDbExecutionRepository(db)
        assert reopened.list_tasks() == [a_task("t1")]
        assert reopened.get_execution("o1") == an_execution("o1")


def valid_docs() -> dict[str, dict[str, JsonValue]]:
    """One valid document of each table, as the codec writes them."""
    return {
        "tasks": task_to_doc(a_task("t1")),
        "occurrences": occurrence_to_doc(an_occurrence("o1")),
        "executions": execution_to_doc(an_execution("o1")),
    }


MALFORMED = {
    "none-title": ("tasks", {"title": None}, r"stored task 't1' field 'title' must be a string"),
    "absent-field": ("tasks", {"title": ...}, r"stored task 't1' field 'title' is missing"),
    "bad-iso": ("tasks", {"created_at": "yesterday"}, r"'created_at' must be an ISO datetime string"),
    "string-seconds": ("tasks", {"recurrence": "1h"}, r"'recurrence' must be a number of seconds"),
    "bool-seconds": ("tasks", {"recurrence": True}, r"'recurrence' must be a number of seconds"),
    "huge-seconds": ("tasks", {"recurrence": 1e300}, r"'recurrence' must be a number of seconds within"),
    "slots-not-list": ("tasks", {"preferred_slots": "morning"}, r"'preferred_slots' must be a list"),
    "policy-not-object": ("tasks", {"retry_policy": 3}, r"'retry_policy' must be a JSON object"),
    "policy-empty": ("tasks", {"retry_policy": {}}, r"'retry_policy.max_retries' is missing"),
    "bad-priority": ("tasks", {"priority": "urgent"}, r"'priority' must be one of low, medium, high"),
    "occurrence-id": ("occurrences", {"id": 5}, r"stored occurrence 5 field 'id' must be a string"),
    "history-not-list": (
        "executions",
        {"history": "x"},
        r"execution of occurrence 'o1' field 'history' must",
    ),
    "event-not-object": ("executions", {"history": [1]}, r"'history\[0\]' must be a JSON object"),
    "bad-event": (
        "executions",
        {"history": [{"event": "x", "timestamp": "2025-01-01"}]},
        r"'history\[0\].event' must be one of",
    ),
}


@pytest.mark.parametrize(("table", "changes", "message"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_stored_record_raises_validation_error_naming_record_and_field(
    db: TinyDB, table: str, changes: dict[str, object], message: str
) -> None:
    repo = TinyDbExecutionRepository(db)
    doc: dict[str, object] = {**valid_docs()[table]}
    for key, value in changes.items():
        if value is ...:
            del doc[key]
        else:
            doc[key] = value
    db.table(table).insert(doc)
    reads = {
        "tasks": repo.list_tasks,
        "occurrences": repo.list_occurrences,
        "executions": repo.list_executions,
    }
    with pytest.raises(ValidationError, match=message):
        reads[table]()


def test_stored_records_without_their_defaulted_fields_read_as_the_defaults(db: TinyDB) -> None:
    task = task_to_doc(a_task("t1"))
    del task["pinned_time"]
    execution = execution_to_doc(an_execution("o1"))
    del execution["history"]
    db.table("tasks").insert(task)
    db.table("executions").insert(execution)
    repo = TinyDbExecutionRepository(db)
    assert repo.list_tasks() == [a_task("t1", pinned_time=None)]
    assert repo.list_executions() == [an_execution("o1", history=[])]


def test_a_document_that_is_not_an_object_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"stored task must be a JSON object, found list"):
        task_from_doc([])  # pyright: ignore[reportArgumentType]


def test_constructor_rejects_anything_but_a_tinydb() -> None:
    with pytest.raises(TypeError, match=r"TinyDB, received MemoryStorage"):
        TinyDbExecutionRepository(MemoryStorage())  # pyright: ignore[reportArgumentType]


@pytest.mark.parametrize(
    "call",
    [
        lambda r: r.get_task(1),
        lambda r: r.get_occurrence(None),
        lambda r: r.get_execution(b"o"),
        lambda r: r.list_occurrences(1),
        lambda r: r.delete_task_and_related(["t"]),
    ],
    ids=["get_task", "get_occurrence", "get_execution", "list_occurrences", "delete_task_and_related"],
)
def test_ids_that_are_not_strings_raise_type_error(db: TinyDB, call: object) -> None:
    repo = TinyDbExecutionRepository(db)
    with pytest.raises(TypeError, match=r"must be a str"):
        call(repo)  # pyright: ignore[reportCallIssue]


def test_two_repositories_on_one_tinydb_share_a_lock_and_lose_nothing(db: TinyDB) -> None:
    first, second = TinyDbExecutionRepository(db), TinyDbExecutionRepository(db)

    def add(repo: TinyDbExecutionRepository, prefix: str) -> None:
        for n in range(100):
            repo.add_task(a_task(f"{prefix}{n}"))

    threads = [
        threading.Thread(target=add, args=(repo, prefix)) for repo, prefix in ((first, "a"), (second, "b"))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(first.list_tasks()) == 200
    assert second.list_tasks() == first.list_tasks()


def test_another_threads_read_waits_for_a_running_batch(db: TinyDB) -> None:
    repo = TinyDbExecutionRepository(db)
    seen: list[list[str]] = []
    inside = threading.Event()

    def reader() -> None:
        inside.wait()
        seen.append([t.id for t in repo.list_tasks()])

    thread = threading.Thread(target=reader)
    thread.start()
    with repo.batch():
        repo.add_task(a_task("first"))
        inside.set()
        thread.join(timeout=0.2)
        repo.add_task(a_task("second"))
    thread.join()
    assert seen == [["first", "second"]]


def test_a_batch_on_memory_storage_that_raises_leaves_the_stored_dicts_untouched(db: TinyDB) -> None:
    repo = TinyDbExecutionRepository(db)
    repo.add_task(a_task("t"))
    before = json.dumps(db.storage.read())
    with pytest.raises(RuntimeError), repo.batch():
        repo.add_task(a_task("t", title="changed in place?"))
        repo.delete_task_and_related("t")
        raise RuntimeError
    assert json.dumps(db.storage.read()) == before
