"""JournaledStorage: the files on disk, replay, torn and damaged journals, compaction, TinyDB's own API."""

from __future__ import annotations

import json
import logging
import os
import re
import zlib
from pathlib import Path

import pytest
from tinydb import TinyDB
from tinydb.storages import JSONStorage

from planflow import ConfigError, CorruptStoreError, StoreWriteError, TransientError, ValidationError
from planflow.infra.tinydb import (
    CrashSafeJSONStorage,
    JournaledStorage,
    TinyDbExecutionRepository,
    read_store,
)
from planflow.infra.tinydb import journal as journal_module
from planflow.infra.tinydb.files import StoreData
from tests.contract.helpers import UNICODE_TITLE, a_task, an_execution, an_occurrence
from tests.support import journal_of


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.json"


def journal_lines(path: Path) -> list[bytes]:
    return journal_of(path).read_bytes().splitlines(keepends=True)


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def storage_of(db: TinyDB) -> JournaledStorage:
    storage = db.storage
    assert isinstance(storage, JournaledStorage)
    return storage


def fill(path: Path, count: int = 5) -> None:
    """A closed store holding ``count`` executions, then ``count`` more only in its journal (a crash)."""
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        for n in range(count):
            repo.add_execution(an_execution(f"o{n}"))
    main = path.read_bytes()
    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    for n in range(count, 2 * count):
        repo.add_execution(an_execution(f"o{n}"))
    journal = journal_of(path).read_bytes()
    db.close()
    # As a process killed before closing leaves them: the file as of the last compaction, then the journal.
    path.write_bytes(main)
    journal_of(path).write_bytes(journal)


def stored_ids(path: Path) -> list[str]:
    with TinyDB(path, storage=JournaledStorage) as db:
        return [e.occurrence_id for e in TinyDbExecutionRepository(db).list_executions()]


# What is on disk -----------------------------------------------------------------------------------------


def test_each_write_appends_one_checksummed_json_line_and_reads_append_nothing(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t1", title=UNICODE_TITLE))
        repo.add_execution(an_execution("o1"))
        repo.get_task("t1")
        repo.list_executions()
        repo.list_occurrences("t1")
        lines = journal_lines(path)
        assert len(lines) == 2
        for line in lines:
            crc, text = line.rstrip(b"\n").split(b" ", 1)
            assert int(crc, 16) == zlib.crc32(text)
        assert json.loads(lines[0].split(b" ", 1)[1])[0][:3] == ["p", "tasks", "1"]
        assert "日本語".encode() in lines[0]  # text as UTF-8, not \\u escapes
        assert not path.exists()  # nothing compacted yet: the journal alone holds the writes


def test_closing_folds_the_journal_into_a_plain_tinydb_file_that_tinydb_reads(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t1"))
        repo.add_occurrence(an_occurrence("o1", task_id="t1"))
        repo.add_execution(an_execution("o1"))
    assert journal_of(path).read_bytes() == b""
    assert files_in(path.parent) == ["store.json", "store.json.journal", "store.json.lock"]
    plain = TinyDB(path, storage=JSONStorage, access_mode="r")
    assert plain.table("tasks").all()[0]["id"] == "t1"
    assert plain.table("executions").all()[0]["occurrence_id"] == "o1"
    plain.close()
    with TinyDB(path, storage=CrashSafeJSONStorage) as db:
        assert TinyDbExecutionRepository(db).get_execution("o1") == an_execution("o1")


def test_a_store_written_by_the_crash_safe_storage_opens_unchanged(path: Path) -> None:
    with TinyDB(path, storage=CrashSafeJSONStorage) as db:
        old = TinyDbExecutionRepository(db)
        for n in range(3):
            old.add_task(a_task(f"t{n}"))
    before = path.read_bytes()
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t0", "t1", "t2"]
    assert path.read_bytes() == before  # an empty journal: nothing to fold, the file is not rewritten


def test_a_store_written_by_plain_tinydb_opens_and_keeps_its_document_ids(path: Path) -> None:
    with TinyDB(path) as plain:
        plain.table("tasks").insert({"id": "x", "other": 1})
        plain.table("tasks").remove(doc_ids=[1])
        plain.table("tasks").insert(dict(json.loads(json.dumps(task_doc("t1")))))
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t2"))
        assert [t.id for t in repo.list_tasks()] == ["t1", "t2"]
    assert set(json.loads(path.read_text())["tasks"]) == {"2", "3"}


def task_doc(task_id: str) -> dict[str, object]:
    from planflow.infra.execution_codec import task_to_doc

    return dict(task_to_doc(a_task(task_id)))


def test_a_batch_is_one_journal_record(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        with repo.batch():
            for n in range(50):
                repo.add_task(a_task(f"t{n}"))
                repo.add_execution(an_execution(f"o{n}"))
            repo.delete_task_and_related("t0")
            with repo.batch():
                repo.add_task(a_task("nested"))
        assert len(journal_lines(path)) == 1
        repo.delete_task_and_related("absent")
        with repo.batch():
            repo.list_tasks()
        assert len(journal_lines(path)) == 1


def test_a_batch_that_raises_journals_nothing(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("kept"))
        with pytest.raises(RuntimeError), repo.batch():
            repo.add_task(a_task("new"))
            repo.delete_task_and_related("kept")
            raise RuntimeError
        assert len(journal_lines(path)) == 1
        assert [t.id for t in repo.list_tasks()] == ["kept"]
        repo.add_task(a_task("after"))
    assert stored_ids(path) == []
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["kept", "after"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_the_journal_and_the_lock_file_are_private_to_their_owner(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        TinyDbExecutionRepository(db).add_task(a_task())
        assert oct(journal_of(path).stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.with_name("store.json.lock").stat().st_mode & 0o777) == oct(0o600)
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)


# Replay ------------------------------------------------------------------------------------------------


def test_a_journal_left_by_a_crash_is_replayed_and_folded_at_open(path: Path) -> None:
    fill(path)
    assert len(journal_lines(path)) == 5
    db = TinyDB(path, storage=JournaledStorage)
    assert journal_of(path).read_bytes() == b""  # compacted at open
    assert [e.occurrence_id for e in TinyDbExecutionRepository(db).list_executions()] == [
        f"o{n}" for n in range(10)
    ]
    db.close()


def test_replaying_a_journal_the_file_already_holds_changes_nothing(path: Path) -> None:
    # A crash after the compacted file replaced the old one but before the journal was truncated.
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        for n in range(6):
            repo.add_task(a_task(f"t{n}"))
            repo.add_occurrence(an_occurrence(f"o{n}", task_id=f"t{n % 2}"))
        repo.delete_task_and_related("t1")
        repo.add_task(a_task("t1", title="back"))
        repo.add_task(a_task("t0", title="renamed"))
        journal = journal_of(path).read_bytes()
        expected = (repo.list_tasks(), repo.list_occurrences())
    journal_of(path).write_bytes(journal)
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        assert (repo.list_tasks(), repo.list_occurrences()) == expected
    assert [t.title for t in expected[0]] == [
        "renamed",
        "Title of t2",
        "Title of t3",
        "Title of t4",
        "Title of t5",
        "back",
    ]


# Torn and damaged journals ---------------------------------------------------------------------------------


def test_a_torn_last_record_is_discarded_with_a_warning(path: Path, caplog: pytest.LogCaptureFixture) -> None:
    fill(path)
    raw = journal_of(path).read_bytes()
    journal_of(path).write_bytes(raw[:-7])  # the last write cut short
    with caplog.at_level(logging.WARNING, logger="planflow.tinydb"):
        assert stored_ids(path) == [f"o{n}" for n in range(9)]
    assert any("torn last record" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "cut", [1, 8, 9, 40], ids=["checksum-digit", "before-space", "after-space", "payload"]
)
def test_a_last_record_cut_anywhere_is_discarded(path: Path, cut: int) -> None:
    fill(path)
    lines = journal_lines(path)
    journal_of(path).write_bytes(b"".join(lines[:-1]) + lines[-1][:cut])
    assert stored_ids(path) == [f"o{n}" for n in range(9)]


def flip(raw: bytes, at: int) -> bytes:
    return raw[:at] + bytes([raw[at] ^ 0x20]) + raw[at + 1 :]


def test_a_flipped_byte_in_the_complete_last_record_is_corruption_not_a_torn_write(path: Path) -> None:
    # The last record ends with its newline: its write returned (fsynced), so it was acknowledged.
    fill(path)
    raw = journal_of(path).read_bytes()
    last = raw.rstrip(b"\n").rfind(b"\n") + 1
    damaged = flip(raw, last + 30)
    journal_of(path).write_bytes(damaged)
    main = path.read_bytes()
    with pytest.raises(CorruptStoreError, match=r"journal .*record 5 \(at byte \d+\) fails its checksum"):
        TinyDB(path, storage=JournaledStorage)
    assert (path.read_bytes(), journal_of(path).read_bytes()) == (main, damaged)


def test_move_aside_of_a_damaged_last_record_keeps_every_record_before_it(path: Path) -> None:
    fill(path)
    raw = journal_of(path).read_bytes()
    last = raw.rstrip(b"\n").rfind(b"\n") + 1
    journal_of(path).write_bytes(flip(raw, last + 30))
    with TinyDB(path, storage=JournaledStorage, on_corrupt="move_aside") as db:
        assert [e.occurrence_id for e in TinyDbExecutionRepository(db).list_executions()] == [
            f"o{n}" for n in range(9)
        ]
    [aside] = [p for p in path.parent.iterdir() if p.name.startswith("store.json.journal.corrupt-")]
    assert aside.read_bytes() == flip(raw, last + 30)[last:]
    assert stored_ids(path) == [f"o{n}" for n in range(9)]


@pytest.mark.parametrize("where", ["payload", "checksum", "newline"])
def test_a_flipped_byte_in_a_middle_record_is_reported_and_the_files_left_untouched(
    path: Path, where: str
) -> None:
    fill(path)
    lines = journal_lines(path)
    offset = sum(len(line) for line in lines[:2])
    at = {"payload": offset + 30, "checksum": offset + 3, "newline": offset + len(lines[2]) - 1}[where]
    damaged = flip(journal_of(path).read_bytes(), at)
    journal_of(path).write_bytes(damaged)
    main = path.read_bytes()
    before = files_in(path.parent)
    with pytest.raises(CorruptStoreError, match=rf"journal .*{re.escape(journal_of(path).name)}.*record 3"):
        TinyDB(path, storage=JournaledStorage)
    assert journal_of(path).read_bytes() == damaged
    assert path.read_bytes() == main
    assert files_in(path.parent) == before
    # The store was not left locked by the refused open.
    with pytest.raises(CorruptStoreError):
        TinyDB(path, storage=JournaledStorage)


@pytest.mark.parametrize(
    "text", [b'{"not": "a list of operations"}', b"[not json"], ids=["object", "not-json"]
)
def test_a_record_with_a_good_checksum_but_no_operations_is_damage(path: Path, text: bytes) -> None:
    fill(path)
    lines = journal_lines(path)
    forged = b"%08x %s\n" % (zlib.crc32(text), text)
    journal_of(path).write_bytes(b"".join([*lines[:2], forged, *lines[2:]]))
    with pytest.raises(CorruptStoreError, match="record 3"):
        TinyDB(path, storage=JournaledStorage)


@pytest.mark.parametrize(
    "op",
    [
        "op",
        [],
        ["p", "t"],
        ["x", "t", "1"],
        ["d", "t", 1],
        ["p", "t", "1", [1]],
        ["t", "t", "extra"],
        [1, "t"],
    ],
    ids=["not-a-list", "empty", "short-put", "unknown", "int-id", "list-doc", "long-create", "int-kind"],
)
def test_malformed_operations_are_damage(path: Path, op: list[object]) -> None:
    fill(path)
    lines = journal_lines(path)
    text = json.dumps([op]).encode()
    journal_of(path).write_bytes(b"".join([lines[0], b"%08x %s\n" % (zlib.crc32(text), text), *lines[1:]]))
    with pytest.raises(CorruptStoreError):
        TinyDB(path, storage=JournaledStorage)


def test_move_aside_of_a_damaged_journal_keeps_the_file_and_the_good_records_and_sets_aside_only_the_rest(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(path, 25)  # 25 executions in the file, 25 more in the journal
    lines = journal_lines(path)
    at = sum(len(line) for line in lines[:12]) + 30  # inside record 13
    damaged = flip(journal_of(path).read_bytes(), at)
    journal_of(path).write_bytes(damaged)
    with caplog.at_level(logging.WARNING, logger="planflow.tinydb"):
        db = TinyDB(path, storage=JournaledStorage, on_corrupt="move_aside")
    kept = [f"o{n}" for n in range(25 + 12)]
    assert [e.occurrence_id for e in TinyDbExecutionRepository(db).list_executions()] == kept
    db.close()
    [aside] = [p for p in path.parent.iterdir() if ".corrupt-" in p.name]
    assert aside.name.startswith("store.json.journal.corrupt-")  # the file itself was not moved
    assert aside.read_bytes() == damaged[sum(len(line) for line in lines[:12]) :]
    assert stored_ids(path) == kept
    assert any(
        "record 13" in r.getMessage() and "kept the records before it" in r.getMessage()
        for r in caplog.records
    )


CORRUPT_MAIN = {
    "truncated-json": b'{"tasks": {"1": {"id": "t1", "ti',
    "not-utf8": b'{"tasks": {"1": {"title": "\xff\xfe"}}}',
    "not-an-object": b"[1, 2, 3]",
    "document-not-an-object": b'{"tasks": {"1": "text"}}',
}


@pytest.mark.parametrize("content", CORRUPT_MAIN.values(), ids=CORRUPT_MAIN.keys())
def test_a_corrupt_file_raises_naming_it_and_nothing_is_touched(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    journal_of(path).write_bytes(b"garbage that is not looked at\n")
    with pytest.raises(CorruptStoreError, match=rf"{re.escape(path.name)} is corrupt and was left untouched"):
        TinyDB(path, storage=JournaledStorage)
    assert path.read_bytes() == content
    assert journal_of(path).read_bytes() == b"garbage that is not looked at\n"


def test_a_corrupt_file_with_move_aside_starts_an_empty_store(path: Path) -> None:
    path.write_bytes(CORRUPT_MAIN["truncated-json"])
    with TinyDB(path, storage=JournaledStorage, on_corrupt="move_aside") as db:
        repo = TinyDbExecutionRepository(db)
        assert repo.list_tasks() == []
        repo.add_task(a_task("fresh"))
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["fresh"]


def test_an_unreadable_file_raises_naming_it(path: Path) -> None:
    path.mkdir()
    with pytest.raises(
        CorruptStoreError, match=rf"cannot read the TinyDB store file .*{re.escape(path.name)}"
    ):
        TinyDB(path, storage=JournaledStorage)


# Compaction ----------------------------------------------------------------------------------------------


def settle(db: TinyDB) -> None:
    """Wait for a compaction running in the background (the test reaches into the storage for its thread)."""
    thread = storage_of(db)._background  # pyright: ignore[reportPrivateUsage]
    if thread is not None:
        thread.join(timeout=60)


def test_a_journal_past_the_threshold_is_folded_into_the_file_in_the_background(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage, compact_after=2000) as db:
        repo = TinyDbExecutionRepository(db)
        sizes: list[int] = []
        for n in range(60):
            main = path.stat().st_size if path.exists() else 0
            repo.add_execution(an_execution(f"o{n}"))
            settle(db)
            sizes.append(journal_of(path).stat().st_size)
            # Never more than one record past the threshold: max(compact_after, the file's size).
            assert sizes[-1] < max(2000, main) + 400
        assert sizes.count(0) >= 3  # folded several times
        assert len(json.loads(path.read_bytes())["executions"]) >= 40
    assert stored_ids(path) == [f"o{n}" for n in range(60)]


def test_writes_made_while_a_compaction_runs_stay_in_the_journal(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    for n in range(3):
        repo.add_execution(an_execution(f"before{n}"))
    real_write = journal_module.write_atomically
    files: list[str] = []

    def write_during(store: Path, payload: bytes, **options: object) -> None:
        files.append(store.name)
        if len(files) == 1:  # the data was copied; another thread's writes go on meanwhile
            repo.add_execution(an_execution("during"))
        real_write(store, payload, **options)  # pyright: ignore[reportArgumentType]

    monkeypatch.setattr(journal_module, "write_atomically", write_during)
    storage_of(db).compact()
    monkeypatch.undo()
    assert files == ["store.json", "store.json.journal"]
    assert "during" not in path.read_text(encoding="utf-8")
    [line] = journal_lines(path)
    assert b'"during"' in line
    repo.add_execution(an_execution("after"))
    path_copy, journal_copy = path.read_bytes(), journal_of(path).read_bytes()
    db.close()
    path.write_bytes(path_copy)  # as a crash would leave them
    journal_of(path).write_bytes(journal_copy)
    assert stored_ids(path) == ["before0", "before1", "before2", "during", "after"]


def test_a_journal_that_cannot_be_replaced_after_compaction_keeps_every_record(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    repo.add_execution(an_execution("before"))
    real_write = journal_module.write_atomically

    def refuse_the_journal(store: Path, payload: bytes, **options: object) -> None:
        if store.name.endswith(".journal"):
            raise StoreWriteError("disk full")
        repo.add_execution(an_execution("during"))
        real_write(store, payload, **options)  # pyright: ignore[reportArgumentType]

    monkeypatch.setattr(journal_module, "write_atomically", refuse_the_journal)
    with pytest.raises(StoreWriteError, match="disk full"):
        storage_of(db).compact()
    monkeypatch.undo()
    assert len(journal_lines(path)) == 2  # the journal kept both records; the file holds the first
    repo.add_execution(an_execution("after"))
    db.close()
    assert stored_ids(path) == ["before", "during", "after"]


def test_a_failed_background_compaction_is_logged_and_not_retried_at_once(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = TinyDB(path, storage=JournaledStorage, compact_after=1000, replace_attempts=1)
    repo = TinyDbExecutionRepository(db)
    attempts: list[str] = []
    real_write = journal_module.write_atomically

    def refuse(store: Path, payload: bytes, **options: object) -> None:
        attempts.append(store.name)
        raise StoreWriteError("disk full")

    monkeypatch.setattr(journal_module, "write_atomically", refuse)
    with caplog.at_level(logging.WARNING, logger="planflow.tinydb"):
        for n in range(4):
            repo.add_execution(an_execution(f"o{n}"))
            settle(db)
    assert attempts == ["store.json"]  # the next try waits for another threshold's worth of journal
    assert any("could not compact" in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(journal_module, "write_atomically", real_write)
    for n in range(4, 8):
        repo.add_execution(an_execution(f"o{n}"))
        settle(db)
    assert path.exists()
    storage_of(db).compact(background=True)
    settle(db)
    db.close()
    assert stored_ids(path) == [f"o{n}" for n in range(8)]


def test_closing_waits_for_a_background_compaction(path: Path) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    with repo.batch():
        for n in range(2000):
            repo.add_execution(an_execution(f"o{n}"))
    storage_of(db).compact(background=True)
    db.close()
    assert journal_of(path).read_bytes() == b""
    assert len(json.loads(path.read_bytes())["executions"]) == 2000


def test_the_compacted_file_is_the_json_text_one_dump_would_write(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        with repo.batch():
            for n in range(2500):
                repo.add_execution(an_execution(f"o{n}"))
        db.table("empty").truncate()
        data = storage_of(db).read()
    assert path.read_bytes() == json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


def test_the_threshold_grows_with_the_file(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage, compact_after=0) as db:
        repo = TinyDbExecutionRepository(db)
        with repo.batch():
            for n in range(200):
                repo.add_execution(an_execution(f"big{n}"))
        storage_of(db).compact()
        main = path.stat().st_size
        for n in range(20):
            repo.add_execution(an_execution(f"o{n}"))
        # 20 small writes are far below the file's size: no compaction rewrote the large file.
        assert path.stat().st_size == main
        assert len(journal_lines(path)) == 20


def test_a_refused_compaction_is_logged_and_loses_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = TinyDB(path, storage=JournaledStorage, compact_after=0, replace_attempts=2, replace_delay=0)
    repo = TinyDbExecutionRepository(db)

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "held by a scanner", str(dst))

    monkeypatch.setattr(os, "replace", refuse)
    with caplog.at_level(logging.WARNING, logger="planflow.tinydb"):
        repo.add_task(a_task("t1"))
        repo.add_task(a_task("t2"))
        with pytest.raises(TransientError, match="refused 2 times"):
            storage_of(db).compact()
        db.close()
    assert any("could not compact" in r.getMessage() for r in caplog.records)
    assert not path.exists()
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    monkeypatch.undo()
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t1", "t2"]


def test_a_journal_that_cannot_be_truncated_after_compaction_is_replayed_harmlessly(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    repo.add_task(a_task("t1"))

    def refuse(fd: int, length: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "ftruncate", refuse)
    with pytest.raises(StoreWriteError, match="cannot truncate the journal"):
        storage_of(db).compact()
    monkeypatch.undo()
    repo.add_task(a_task("t2"))
    db.close()
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t1", "t2"]


# Failed writes -----------------------------------------------------------------------------------------


def test_a_failed_journal_write_is_a_store_write_error_and_changes_nothing(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("kept"))
        before = journal_of(path).read_bytes()
        real_write = os.write

        def half_then_fail(fd: int, data: bytes) -> int:
            if len(data) > 20:
                return real_write(fd, data[:20])  # a short write; the rest fails
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_fail)
        with pytest.raises(StoreWriteError, match="No space left"):
            repo.add_task(a_task("lost"))
        with pytest.raises(StoreWriteError), repo.batch():
            repo.add_task(a_task("lost-too"))
            repo.delete_task_and_related("kept")
        monkeypatch.undo()
        assert journal_of(path).read_bytes() == before  # the partial record was cut off again
        assert [t.id for t in repo.list_tasks()] == ["kept"]
        repo.add_task(a_task("next"))
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["kept", "next"]


def test_a_journal_that_cannot_be_repaired_refuses_writes_until_reopened(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    repo.add_task(a_task("kept"))
    real_write = os.write

    def short(fd: int, data: bytes) -> int:
        if len(data) > 20:
            return real_write(fd, data[:20])
        raise OSError(5, "I/O error")

    def refuse(fd: int, length: int) -> None:
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "write", short)
    monkeypatch.setattr(os, "ftruncate", refuse)
    with pytest.raises(StoreWriteError):
        repo.add_task(a_task("lost"))
    monkeypatch.undo()
    with pytest.raises(StoreWriteError, match=r"could not be repaired.*reopen"):
        repo.add_task(a_task("refused"))
    db.close()  # no compaction of a broken journal; the torn tail is dropped at the next open
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["kept"]


def test_writes_after_close_are_store_write_errors(path: Path) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    db.close()
    assert storage_of(db).closed
    with pytest.raises(StoreWriteError, match="is closed"):
        repo.add_task(a_task())
    with pytest.raises(StoreWriteError, match="is closed"):
        storage_of(db).compact()
    db.close()  # twice is harmless


def test_data_json_cannot_hold_is_a_validation_error_and_journals_nothing(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        storage = storage_of(db)
        unwritable: list[StoreData] = [
            {"t": {"1": {"x": object()}}},
            {"t": {"1": {"x": float("nan")}}},
            {"t": {"1": {"x": "\ud800"}}},
        ]
        for bad in unwritable:
            with pytest.raises(ValidationError, match=re.escape(path.name)):
                storage.write(bad)
        assert storage.read() is None
        assert journal_of(path).read_bytes() == b""


# TinyDB's own API on the journaled storage ------------------------------------------------------------


def test_tinydbs_own_api_works_and_survives_reopening(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        table = db.table("notes")
        table.insert({"text": "a", "tags": ["x"]})
        table.insert_multiple([{"text": "b"}, {"text": "c"}])
        table.update({"text": "A"}, doc_ids=[1])
        table.update(lambda doc: doc["tags"].append("y"), doc_ids=[1])  # in place, inside a list
        table.remove(doc_ids=[2])
        db.table("scratch").insert({"x": 1})
        db.drop_table("scratch")
        db.table("empty").truncate()
        assert storage_of(db).changes >= 6
    with TinyDB(path, storage=JournaledStorage) as db:
        assert db.table("notes").all() == [{"text": "A", "tags": ["x", "y"]}, {"text": "c"}]
        assert db.tables() == {"notes", "empty"}
        db.drop_tables()
    with TinyDB(path, storage=JournaledStorage) as db:
        assert db.tables() == set()


def test_the_repository_sees_writes_made_through_tinydbs_api(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t1"))
        assert repo.get_task("t1") == a_task("t1")
        db.table("tasks").update({"title": "edited elsewhere"}, doc_ids=[1])
        assert repo.get_task("t1") == a_task("t1", title="edited elsewhere")
        db.table("tasks").insert(task_doc("t2"))
        repo.add_task(a_task("t3"))
        assert [t.id for t in repo.list_tasks()] == ["t1", "t2", "t3"]
        # And TinyDB sees the repository's writes, its query cache notwithstanding.
        from tinydb import Query

        assert len(db.table("tasks").search(Query().id.exists())) == 3
        repo.add_task(a_task("t4"))
        assert len(db.table("tasks").search(Query().id.exists())) == 4


def test_tinydb_never_gets_the_storages_own_documents(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        TinyDbExecutionRepository(db).add_execution(an_execution("o1"))
        data = storage_of(db).read()
        assert data is not None
        history = data["executions"]["1"]["history"]  # pyright: ignore[reportIndexIssue]
        history.append("changed in place")  # pyright: ignore[reportAttributeAccessIssue]
        assert TinyDbExecutionRepository(db).get_execution("o1") == an_execution("o1")


# Options -----------------------------------------------------------------------------------------------


def test_a_missing_folder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "folder"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        JournaledStorage(missing / "store.json")


@pytest.mark.parametrize(
    "options",
    [{"on_corrupt": "delete"}, {"replace_attempts": 0}, {"replace_delay": -1.0}, {"compact_after": -1}],
    ids=["on_corrupt", "attempts", "delay", "compact_after"],
)
def test_out_of_range_options_are_config_errors(path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        JournaledStorage(path, **options)  # pyright: ignore[reportArgumentType]
    JournaledStorage(path).close()  # and the refused open did not lock the store


def test_the_storage_names_its_files(path: Path) -> None:
    storage = JournaledStorage(str(path))
    assert storage.path == path.absolute()
    assert storage.journal_path == journal_of(path).absolute()
    storage.close()


def forged(*ops: list[object]) -> bytes:
    text = json.dumps(list(ops)).encode()
    return b"%08x %s\n" % (zlib.crc32(text), text)


def test_complete_records_failing_their_checksums_after_the_last_good_one_are_corruption_not_a_torn_tail(
    path: Path,
) -> None:
    # A crash tears at most the one record being appended, and never leaves its newline: complete records
    # after the last good one are damage.
    fill(path)
    raw = journal_of(path).read_bytes()
    journal_of(path).write_bytes(raw + b"0000000a [1]\n0000000b [2]\n12345678 [3")
    with pytest.raises(CorruptStoreError, match=r"record 6 .* fails its checksum"):
        TinyDB(path, storage=JournaledStorage)
    with TinyDB(path, storage=JournaledStorage, on_corrupt="move_aside") as db:
        assert len(TinyDbExecutionRepository(db).list_executions()) == 10
    [aside] = [p for p in path.parent.iterdir() if ".corrupt-" in p.name]
    assert aside.read_bytes() == b"0000000a [1]\n0000000b [2]\n12345678 [3"


def test_an_incomplete_last_record_after_a_complete_one_is_only_a_torn_tail(path: Path) -> None:
    fill(path)
    raw = journal_of(path).read_bytes()
    journal_of(path).write_bytes(raw + b'12345678 [["p","executions","11",{"occ')
    assert stored_ids(path) == [f"o{n}" for n in range(10)]
    assert [p.name for p in path.parent.iterdir() if ".corrupt-" in p.name] == []


def nested(depth: int) -> bytes:
    return b'{"tasks": {"1": {"deep": ' + b"[" * depth + b"]" * depth + b"}}}"


def test_a_file_nested_too_deep_for_the_parser_is_a_corrupt_store_error_naming_it(path: Path) -> None:
    path.write_bytes(nested(2000))
    with pytest.raises(CorruptStoreError, match=rf"{re.escape(path.name)} is corrupt and was left untouched"):
        TinyDB(path, storage=JournaledStorage)
    with pytest.raises(CorruptStoreError, match="cannot be read"):
        read_store(path)
    with (
        pytest.raises(CorruptStoreError, match="is corrupt"),
        TinyDB(path, storage=CrashSafeJSONStorage) as db,
    ):
        TinyDbExecutionRepository(db).list_tasks()
    assert path.read_bytes() == nested(2000)


def test_a_record_nested_too_deep_for_the_parser_is_damage(path: Path) -> None:
    fill(path)
    text = b'[["p","notes","1",{"deep":' + b"[" * 2000 + b"]" * 2000 + b"}]]"
    with journal_of(path).open("ab") as journal:
        journal.write(b"%08x %s\n" % (zlib.crc32(text), text))
    with pytest.raises(CorruptStoreError, match=r"record 6 .* not JSON that can be read"):
        TinyDB(path, storage=JournaledStorage)


def test_move_aside_of_a_corrupt_file_keeps_the_intact_records_of_its_journal(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fill(path)  # o0..o4 in the file, o5..o9 only in the journal
    path.write_bytes(nested(2000))
    with caplog.at_level(logging.WARNING, logger="planflow.tinydb"):
        db = TinyDB(path, storage=JournaledStorage, on_corrupt="move_aside")
    assert [e.occurrence_id for e in TinyDbExecutionRepository(db).list_executions()] == [
        f"o{n}" for n in range(5, 10)
    ]
    db.close()
    [aside] = [p for p in path.parent.iterdir() if ".corrupt-" in p.name]
    assert aside.name.startswith("store.json.corrupt-")
    assert aside.read_bytes() == nested(2000)
    assert stored_ids(path) == [f"o{n}" for n in range(5, 10)]
    assert any("kept the intact records of its journal" in r.getMessage() for r in caplog.records)


def test_deleting_from_a_table_that_is_not_there_replays_as_nothing(path: Path) -> None:
    fill(path)
    with journal_of(path).open("ab") as journal:
        journal.write(forged(["d", "absent", "1"], ["t", "made"], ["T", "made"]))
    assert stored_ids(path) == [f"o{n}" for n in range(10)]


def test_loading_leaves_a_collector_the_caller_paused_paused(path: Path) -> None:
    import gc

    fill(path)
    gc.disable()
    try:
        assert stored_ids(path) == [f"o{n}" for n in range(10)]
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_a_background_compaction_that_starts_after_close_does_nothing(path: Path) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    TinyDbExecutionRepository(db).add_task(a_task("t1"))
    storage = storage_of(db)
    db.close()
    before = path.read_bytes()
    storage._fold_in_background("a test")  # pyright: ignore[reportPrivateUsage]
    assert path.read_bytes() == before


def test_read_store_sees_the_main_file_with_its_journal_replayed_while_another_holds_it_open(
    tmp_path: Path,
) -> None:
    path = tmp_path / "open.json"
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("seen"))
        held = read_store(path)
        assert [doc["id"] for doc in held["tasks"].values()] == ["seen"]
        assert not path.exists() or "seen" not in path.read_text()  # only the journal has it yet


def test_read_store_of_a_damaged_journal_is_a_corrupt_store_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    journal = path.with_name(path.name + ".journal")
    with TinyDB(path, storage=JournaledStorage) as db:
        TinyDbExecutionRepository(db).add_task(a_task("one"))
        good = journal.read_bytes()  # one good record (closing compacts it away)
    journal.write_bytes(b"00000000 [garbage]\n" + good)
    with pytest.raises(CorruptStoreError, match="cannot be read"):
        read_store(path)


def test_a_deeply_nested_document_put_there_by_hand_is_read_through_tinydb(path: Path) -> None:
    deep: object = {"leaf": 1}
    for _ in range(600):
        deep = {"x": deep}
    path.write_text(json.dumps({"notes": {"1": deep}}), encoding="utf-8")
    with TinyDB(path, storage=JournaledStorage) as db:
        assert db.table("notes").all() == [deep]


def test_a_document_too_deep_to_copy_for_tinydb_is_a_corrupt_store_error(path: Path) -> None:
    import inspect
    import sys

    deep: object = {"leaf": 1}
    for _ in range(300):
        deep = {"x": deep}
    path.write_text(json.dumps({"notes": {"1": deep}}), encoding="utf-8")
    with TinyDB(path, storage=JournaledStorage) as db:
        limit = sys.getrecursionlimit()
        sys.setrecursionlimit(len(inspect.stack()) + 150)  # as if the caller's own stack were that deep
        try:
            with pytest.raises(CorruptStoreError, match="nests too deeply to be read through TinyDB"):
                storage_of(db).read()
        finally:
            sys.setrecursionlimit(limit)
