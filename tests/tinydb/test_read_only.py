"""What opening a TinyDB store leaves in its folder, and stores opened read-only (``read_only=True``)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tinydb import TinyDB

from planflow import (
    ConfigError,
    CorruptStoreError,
    PlanflowConfig,
    StoreLockedError,
    TransientError,
    open_provider,
)
from planflow.errors import ForeignStoreError, ReadOnlyError
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository
from planflow.infra.tinydb import journal as journal_module
from planflow.infra.tinydb import lock as lock_module
from tests.contract.helpers import a_task, an_execution, an_occurrence
from tests.support import journal_of
from tests.tinydb.test_journal_processes import child_env


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.json"


def folder_state(folder: Path) -> dict[str, bytes]:
    """Every file of ``folder`` with its bytes: what must not change."""
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def a_store(path: Path) -> None:
    """A closed store: t1 with o1 and its execution in the file, t2 only in the journal (as a crash leaves)."""
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t1"))
        repo.add_occurrence(an_occurrence("o1", task_id="t1"))
        repo.add_execution(an_execution("o1"))
    main = path.read_bytes()
    db = TinyDB(path, storage=JournaledStorage)
    TinyDbExecutionRepository(db).add_task(a_task("t2"))
    journal = journal_of(path).read_bytes()
    db.close()
    path.write_bytes(main)
    journal_of(path).write_bytes(journal)


# Opening a store leaves the folder consistent ----------------------------------------------------------------


def test_opening_and_closing_a_new_store_without_writing_leaves_the_folder_as_it_was(path: Path) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    assert TinyDbExecutionRepository(db).list_tasks() == []
    with pytest.raises(StoreLockedError):  # still one writer at a time, before any write
        TinyDB(path, storage=JournaledStorage)
    db.close()
    assert list(path.parent.iterdir()) == []
    with open_provider(f"tinydb:///{path}") as provider:
        assert provider.executions.get_task("t1") is None
        assert provider.metadata.items() == {}
    assert list(path.parent.iterdir()) == []


def test_the_first_write_makes_a_store_whose_file_is_a_plain_tinydb_document_after_close(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)
        repo.add_task(a_task("t1"))
        repo.delete_task_and_related("t1")  # the store holds an empty table: it exists all the same
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "store.json",
        "store.json.journal",
        "store.json.lock",
    ]
    assert json.loads(path.read_bytes()) == {"tasks": {}}


def test_a_journal_and_lock_left_without_a_file_by_an_unwritten_open_are_removed_by_the_next_close(
    path: Path,
) -> None:
    journal_of(path).write_bytes(b"")
    path.with_name("store.json.lock").write_bytes(b"")
    with TinyDB(path, storage=JournaledStorage):
        pass
    assert list(path.parent.iterdir()) == []


def test_an_existing_store_keeps_its_files_when_opened_without_writing(path: Path) -> None:
    a_store(path)
    with TinyDB(path, storage=JournaledStorage):
        pass
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "store.json",
        "store.json.journal",
        "store.json.lock",
    ]
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t1", "t2"]


def test_a_lock_file_removed_by_its_last_holder_after_it_was_opened_is_locked_again_anew(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another process removes the lock file between this one's open and its lock (closing an unwritten store):
    # the lock then held is on a file nobody else can find, so the open locks the file there now.
    real_lock = lock_module._lock  # pyright: ignore[reportPrivateUsage]
    removed: list[bool] = []

    def removed_meanwhile(fd: int) -> None:
        if not removed:
            removed.append(True)
            os.unlink(path.with_name("store.json.lock"))
        real_lock(fd)

    monkeypatch.setattr(lock_module, "_lock", removed_meanwhile)
    db = TinyDB(path, storage=JournaledStorage)
    monkeypatch.undo()
    assert removed == [True]
    TinyDbExecutionRepository(db).add_task(a_task("t1"))
    refused = subprocess.run(
        [sys.executable, "-c", OPENER, str(path)], capture_output=True, text=True, env=child_env(), check=True
    )
    assert refused.stdout.startswith("refused:")
    db.close()


OPENER = """
import sys
from tinydb import TinyDB
from planflow import StoreLockedError
from planflow.infra.tinydb import JournaledStorage
try:
    TinyDB(sys.argv[1], storage=JournaledStorage).close()
except StoreLockedError as exc:
    print("refused:", exc)
else:
    print("opened")
"""


# Read-only: nothing created, nothing changed -------------------------------------------------------------------


def test_a_read_only_store_serves_reads_and_changes_no_file(path: Path) -> None:
    a_store(path)
    before = folder_state(path.parent)
    with TinyDB(path, storage=JournaledStorage, read_only=True) as db:
        repo = TinyDbExecutionRepository(db)
        assert [t.id for t in repo.list_tasks()] == ["t1", "t2"]
        assert repo.get_execution("o1") == an_execution("o1")
        assert repo.list_occurrences("t1") == [an_occurrence("o1", task_id="t1")]
        with repo.batch():
            assert repo.get_task("t2") == a_task("t2")
    assert folder_state(path.parent) == before  # the journal was not folded, no lock file was made


def test_every_write_on_a_read_only_store_raises_read_only_error_and_writes_nothing(path: Path) -> None:
    a_store(path)
    before = folder_state(path.parent)
    with TinyDB(path, storage=JournaledStorage, read_only=True) as db:
        repo = TinyDbExecutionRepository(db)
        storage = db.storage
        assert isinstance(storage, JournaledStorage) and storage.read_only
        writes = [
            lambda: repo.add_task(a_task("t3")),
            lambda: repo.add_occurrence(an_occurrence("o3")),
            lambda: repo.add_execution(an_execution("o3")),
            lambda: repo.delete_task_and_related("absent"),  # even one that would change nothing
            lambda: repo.purge(before=datetime(2000, 1, 1, tzinfo=UTC)),
            lambda: db.table("notes").insert({"text": "x"}),
            storage.compact,
            lambda: storage.apply([("t", "notes")]),
        ]
        for write in writes:
            with pytest.raises(
                ReadOnlyError, match=rf"refused: the TinyDB store .*{re.escape(path.name)} is open read-only"
            ):
                write()
        with pytest.raises(ReadOnlyError), repo.batch():
            repo.add_task(a_task("t3"))
        assert [t.id for t in repo.list_tasks()] == ["t1", "t2"]
    assert folder_state(path.parent) == before


def test_a_read_only_provider_refuses_writes_and_serves_reads(path: Path) -> None:
    a_store(path)
    before = folder_state(path.parent)
    for source in (
        PlanflowConfig(driver="tinydb", path=str(path), read_only=True),
        {"url": f"tinydb:///{path}", "read_only": True},
        f"tinydb:///{path}?read_only=true",
    ):
        with open_provider(source) as provider:
            assert [t.id for t in provider.executions.list_tasks()] == ["t1", "t2"]
            assert provider.metadata.get("anything") is None
            with pytest.raises(ReadOnlyError):
                provider.executions.add_task(a_task("t3"))
            with pytest.raises(ReadOnlyError):
                provider.metadata.set("key", "value")
    assert folder_state(path.parent) == before


def test_a_read_only_open_of_a_missing_store_is_a_config_error_naming_it_and_creates_nothing(
    path: Path,
) -> None:
    with pytest.raises(ConfigError, match=rf"no TinyDB store at .*{re.escape(path.name)}"):
        TinyDB(path, storage=JournaledStorage, read_only=True)
    with pytest.raises(ConfigError, match=re.escape(path.name)):
        open_provider({"url": f"tinydb:///{path}", "read_only": True})
    assert list(path.parent.iterdir()) == []


def test_a_read_only_memory_store_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="memory store cannot be opened read-only"):
        open_provider({"url": "tinydb://memory", "read_only": True})


def test_a_store_only_in_its_journal_is_read(path: Path) -> None:
    a_store(path)
    journal = journal_of(path).read_bytes()
    path.unlink()
    with TinyDB(path, storage=JournaledStorage, read_only=True) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t2"]
    assert journal_of(path).read_bytes() == journal and not path.exists()


# Read-only: damage and foreign files ------------------------------------------------------------------------------


def test_a_damaged_store_read_only_is_a_corrupt_store_error_and_nothing_is_moved_aside(path: Path) -> None:
    a_store(path)
    raw = journal_of(path).read_bytes()
    damaged = raw[:30] + bytes([raw[30] ^ 0x20]) + raw[31:]
    journal_of(path).write_bytes(damaged)
    before = folder_state(path.parent)
    with pytest.raises(CorruptStoreError, match=r"journal .* is corrupt: record 1 .* fails its checksum"):
        TinyDB(path, storage=JournaledStorage, read_only=True, on_corrupt="move_aside")
    path.write_bytes(b'{"tasks": {"1": {"id": "t1", "ti')
    with pytest.raises(CorruptStoreError, match=rf"{re.escape(path.name)} is corrupt"):
        open_provider({"url": f"tinydb:///{path}", "read_only": True, "tinydb_on_corrupt": "move_aside"})
    assert folder_state(path.parent) == {**before, "store.json": b'{"tasks": {"1": {"id": "t1", "ti'}


def test_a_record_being_written_by_a_live_writer_is_left_out_and_left_alone(path: Path) -> None:
    a_store(path)
    with journal_of(path).open("ab") as journal:
        journal.write(b'1234abcd [["p","tasks","9",{"id":')  # the writer is mid-append
    before = folder_state(path.parent)
    with TinyDB(path, storage=JournaledStorage, read_only=True) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t1", "t2"]
    assert folder_state(path.parent) == before  # not truncated: the writer owns the journal


FOREIGN = {
    "json-array": b"[1, 2, 3]",
    "json-object-of-values": b'{"name": "settings", "volume": 3}',
    "tinydb-of-other-tables": b'{"_default": {"1": {"note": "x"}}, "notes": {}}',
}


@pytest.mark.parametrize("content", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_file_that_is_not_a_planflow_store_is_refused_read_only_and_left_byte_for_byte(
    path: Path, content: bytes
) -> None:
    path.write_bytes(content)
    with pytest.raises(ForeignStoreError, match=rf"{re.escape(str(path))} is not a planflow store") as caught:
        open_provider({"url": f"tinydb:///{path}", "read_only": True})
    assert "planflow migrate --force adopts it" in str(caught.value)
    assert isinstance(caught.value, ConfigError)
    assert folder_state(path.parent) == {"store.json": content}  # no sidecar files either


def test_planflow_tables_beside_others_or_none_at_all_are_a_planflow_store(path: Path) -> None:
    for content in (b'{"notes": {}, "executions": {}}', b"{}", b""):
        path.write_bytes(content)
        with open_provider({"url": f"tinydb:///{path}", "read_only": True}) as provider:
            assert provider.executions.list_executions() == []


def test_the_storage_alone_reads_any_tinydb_document_read_only(path: Path) -> None:
    path.write_bytes(FOREIGN["tinydb-of-other-tables"])
    with TinyDB(path, storage=JournaledStorage, read_only=True) as db:
        assert db.table("_default").all() == [{"note": "x"}]


# Read-only beside a live writer -------------------------------------------------------------------------------


def test_a_reader_beside_a_live_writer_sees_the_data_as_of_its_open(path: Path) -> None:
    with TinyDB(path, storage=JournaledStorage) as writer_db:
        writer = TinyDbExecutionRepository(writer_db)
        writer.add_task(a_task("t1"))
        with TinyDB(path, storage=JournaledStorage, read_only=True) as reader_db:
            reader = TinyDbExecutionRepository(reader_db)
            writer.add_task(a_task("t2"))
            assert [t.id for t in reader.list_tasks()] == ["t1"]
        with TinyDB(path, storage=JournaledStorage, read_only=True) as reader_db:
            assert [t.id for t in TinyDbExecutionRepository(reader_db).list_tasks()] == ["t1", "t2"]
        writer.add_task(a_task("t3"))  # the readers took no lock and changed nothing the writer owns
    with TinyDB(path, storage=JournaledStorage) as db:
        assert [t.id for t in TinyDbExecutionRepository(db).list_tasks()] == ["t1", "t2", "t3"]


def test_a_compaction_between_reading_the_file_and_the_journal_makes_the_reader_read_both_again(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_db = TinyDB(path, storage=JournaledStorage)
    writer = TinyDbExecutionRepository(writer_db)
    writer.add_task(a_task("t1"))
    writer_db.storage.compact()  # pyright: ignore[reportAttributeAccessIssue]
    writer.add_task(a_task("t2"))  # only in the journal
    real_read = journal_module._read_bytes  # pyright: ignore[reportPrivateUsage]
    compactions: list[bool] = []

    def compact_before_the_journal_is_read(file: Path) -> bytes:
        if file.name.endswith(".journal") and not compactions:
            compactions.append(True)
            writer.add_task(a_task("t3"))
            writer_db.storage.compact()  # pyright: ignore[reportAttributeAccessIssue]
        return real_read(file)

    monkeypatch.setattr(journal_module, "_read_bytes", compact_before_the_journal_is_read)
    with TinyDB(path, storage=JournaledStorage, read_only=True) as reader_db:
        assert [t.id for t in TinyDbExecutionRepository(reader_db).list_tasks()] == ["t1", "t2", "t3"]
    assert compactions == [True]
    writer_db.close()


def test_a_writer_compacting_during_every_read_makes_the_reader_give_up_saying_so(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer_db = TinyDB(path, storage=JournaledStorage)
    writer = TinyDbExecutionRepository(writer_db)
    real_read = journal_module._read_bytes  # pyright: ignore[reportPrivateUsage]
    turns = iter(range(100))

    def compact_every_time(file: Path) -> bytes:
        if file.name.endswith(".journal"):
            writer.add_task(a_task(f"t{next(turns)}"))
            writer_db.storage.compact()  # pyright: ignore[reportAttributeAccessIssue]
        return real_read(file)

    writer.add_task(a_task("first"))
    monkeypatch.setattr(journal_module, "_read_bytes", compact_every_time)
    with pytest.raises(TransientError, match=r"compacted by its writer during each of 5 attempts"):
        TinyDB(path, storage=JournaledStorage, read_only=True)
    monkeypatch.undo()
    writer_db.close()


WRITER = """
import sys
from tinydb import TinyDB
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository
from tests.contract.helpers import an_execution

db = TinyDB(sys.argv[1], storage=JournaledStorage, compact_after=2000)
repo = TinyDbExecutionRepository(db)
print("open", flush=True)
batch = 0
while True:
    with repo.batch():
        for part in range(4):
            repo.add_execution(an_execution(f"b{batch}-{part}"))
    batch += 1
"""


@pytest.fixture
def live_writer(path: Path) -> Iterator[subprocess.Popen[bytes]]:
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )
    try:
        assert writer.stdout is not None
        assert writer.stdout.readline() == b"open\n"
        yield writer
    finally:
        writer.kill()
        writer.wait(timeout=30)
        writer.stdout.close()  # pyright: ignore[reportOptionalMemberAccess]
        writer.stderr.close()  # pyright: ignore[reportOptionalMemberAccess]


def test_readers_beside_a_writer_in_another_process_always_see_whole_batches(
    path: Path, live_writer: subprocess.Popen[bytes]
) -> None:
    # The writer compacts every few batches, so many reads race a compaction or an append.
    seen: list[int] = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline or len(seen) < 5:
        assert time.monotonic() < deadline + 30, f"only {len(seen)} reads succeeded"
        try:
            db = TinyDB(path, storage=JournaledStorage, read_only=True)
        except (ConfigError, TransientError):
            continue  # no write yet, or compacted during every attempt: both say so, and change nothing
        with db:
            ids = [e.occurrence_id for e in TinyDbExecutionRepository(db).list_executions()]
        batches = {key.split("-")[0] for key in ids}
        assert sorted(ids) == sorted(f"{b}-{part}" for b in batches for part in range(4))  # no half batch
        assert ids == [f"b{n}-{part}" for n in range(len(batches)) for part in range(4)]  # no batch missing
        seen.append(len(batches))
    assert seen == sorted(seen) and seen[-1] > 0
    assert live_writer.poll() is None


def test_a_record_with_the_checksum_of_another_text_is_still_damage_read_only(path: Path) -> None:
    a_store(path)
    text = b'[["p","tasks","9",{}]]'
    with journal_of(path).open("ab") as journal:
        journal.write(b"%08x %s\n" % (zlib.crc32(text) ^ 1, text))
    with pytest.raises(CorruptStoreError, match="record 2"):
        TinyDB(path, storage=JournaledStorage, read_only=True)
