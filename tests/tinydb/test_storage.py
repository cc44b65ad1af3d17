"""CrashSafeJSONStorage: atomic replacement, UTF-8, no held handles, corrupt files, Windows refusals, crashes."""

from __future__ import annotations

import logging
import os
import random
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import cast

import pytest
from tinydb import TinyDB

from planflow import ConfigError, TransientError, ValidationError
from planflow.infra.tinydb import (
    CorruptStoreError,
    CrashSafeJSONStorage,
    StoreWriteError,
    TinyDbExecutionRepository,
)
from planflow.infra.tinydb.storage import StoreData
from tests.contract.helpers import UNICODE_TITLE, a_task, an_execution, an_occurrence

REPO_ROOT = Path(__file__).resolve().parents[2]
CRASH_ITERATIONS = int(os.environ.get("PLANFLOW_CRASH_ITERATIONS", "5"))
SOME_DATA: StoreData = {"tasks": {"1": {"id": "t1", "title": "été"}}}


class CountingStorage(CrashSafeJSONStorage):
    """The real storage, counting the writes that reach it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        super().__init__(path)
        self.writes = 0

    def write(self, data: StoreData) -> None:
        self.writes += 1
        super().write(data)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.json"


def open_repo(path: Path, **options: object) -> TinyDbExecutionRepository:
    return TinyDbExecutionRepository(TinyDB(path, storage=CrashSafeJSONStorage, **options))


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def refuse_replace(monkeypatch: pytest.MonkeyPatch, times: int) -> list[str]:
    """Make os.replace raise PermissionError ``times`` times (as Windows does while a scanner holds the file)."""
    real_replace = os.replace
    calls: list[str] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        calls.append(str(dst))
        if len(calls) <= times:
            raise PermissionError(13, "The process cannot access the file because it is being used", str(dst))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    return calls


# File format and handles ------------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_a_new_store_file_is_private_to_its_owner(path: Path) -> None:
    open_repo(path).add_task(a_task())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_file_is_utf8_json_with_text_unescaped(path: Path) -> None:
    open_repo(path).add_task(a_task(title=UNICODE_TITLE))
    raw = path.read_bytes()
    assert "日本語".encode() in raw
    assert b"\\u" not in raw  # ensure_ascii=False: no \uXXXX escapes, the text itself is there
    assert open_repo(path).list_tasks()[0].title == UNICODE_TITLE


def test_a_missing_or_empty_file_reads_as_an_empty_store(path: Path) -> None:
    storage = CrashSafeJSONStorage(path)
    assert storage.read() is None
    path.write_bytes(b"")
    assert storage.read() is None
    path.write_bytes(b" \n")
    assert storage.read() is None
    assert open_repo(path).list_tasks() == []


def test_a_file_with_a_utf8_byte_order_mark_is_read(path: Path) -> None:
    path.write_bytes(b"\xef\xbb\xbf" + b'{"tasks": {}}')
    assert CrashSafeJSONStorage(path).read() == {"tasks": {}}


def test_write_then_read_round_trips_the_data(path: Path) -> None:
    storage = CrashSafeJSONStorage(str(path))
    storage.write(SOME_DATA)
    assert storage.read() == SOME_DATA
    assert storage.path == path.absolute()
    storage.close()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_the_file_is_not_held_open_between_operations(path: Path) -> None:
    repo = open_repo(path)
    repo.add_task(a_task("t1"))
    repo.list_tasks()
    held = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
    assert str(path.resolve()) not in held
    assert not any(name.startswith(str(path.parent.resolve())) for name in held)


def test_the_file_can_be_replaced_between_operations(path: Path, tmp_path: Path) -> None:
    repo = open_repo(path)
    repo.add_task(a_task("original"))
    other = tmp_path / "other.json"
    open_repo(other).add_task(a_task("from-elsewhere"))
    os.replace(other, path)  # what a sync client or a restore from backup does
    assert [t.id for t in repo.list_tasks()] == ["from-elsewhere"]
    repo.add_task(a_task("next"))
    assert [t.id for t in open_repo(path).list_tasks()] == ["from-elsewhere", "next"]


# Options --------------------------------------------------------------------------------------------------


def test_a_missing_folder_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "folder"
    with pytest.raises(ConfigError, match=re.escape(str(missing))):
        CrashSafeJSONStorage(missing / "store.json")
    assert not missing.exists()


@pytest.mark.parametrize(
    "options",
    [{"on_corrupt": "delete"}, {"replace_attempts": 0}, {"replace_delay": -1.0}],
    ids=["on_corrupt", "attempts", "delay"],
)
def test_out_of_range_options_are_config_errors(path: Path, options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        CrashSafeJSONStorage(path, **options)  # pyright: ignore[reportArgumentType]


# Corrupt and unreadable files -----------------------------------------------------------------------------

CORRUPT = {
    "truncated-json": b'{"tasks": {"1": {"id": "t1", "ti',
    "not-utf8": b'{"tasks": {"1": {"title": "\xff\xfe"}}}',
    "not-an-object": b"[1, 2, 3]",
    "table-not-an-object": b'{"tasks": [1, 2]}',
    "document-not-an-object": b'{"tasks": {"1": "text"}}',
}


@pytest.mark.parametrize("content", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_file_raises_naming_it_and_is_left_untouched(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    repo = open_repo(path)
    with pytest.raises(CorruptStoreError, match=rf"{re.escape(path.name)}.*corrupt and was left untouched"):
        repo.list_tasks()
    with pytest.raises(CorruptStoreError):
        repo.add_task(a_task())
    assert path.read_bytes() == content
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_a_write_that_never_read_the_corrupt_file_does_not_overwrite_it(path: Path) -> None:
    path.write_bytes(CORRUPT["truncated-json"])
    storage = CrashSafeJSONStorage(path)
    with pytest.raises(CorruptStoreError):
        storage.write(SOME_DATA)
    with pytest.raises(CorruptStoreError):
        TinyDB(path, storage=CrashSafeJSONStorage).drop_tables()
    assert path.read_bytes() == CORRUPT["truncated-json"]


def test_an_unreadable_path_raises_naming_it(path: Path) -> None:
    path.mkdir()
    with pytest.raises(CorruptStoreError, match=rf"cannot read the TinyDB store .*{re.escape(path.name)}"):
        CrashSafeJSONStorage(path).read()


def test_move_aside_renames_a_corrupt_file_and_starts_an_empty_store(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path.write_bytes(CORRUPT["truncated-json"])
    repo = open_repo(path, on_corrupt="move_aside")
    with caplog.at_level(logging.WARNING, logger="planflow.tinydb"):
        assert repo.list_tasks() == []
    [aside] = [p for p in path.parent.iterdir() if p.name.startswith(f"{path.name}.corrupt-")]
    assert aside.read_bytes() == CORRUPT["truncated-json"]
    assert aside.name[len(f"{path.name}.corrupt-") :].endswith("Z")
    assert not path.exists()
    assert any(str(aside) in record.getMessage() for record in caplog.records)
    repo.add_task(a_task("fresh"))
    assert [t.id for t in open_repo(path).list_tasks()] == ["fresh"]


def test_a_write_on_an_unread_corrupt_file_with_move_aside_moves_it_first(path: Path) -> None:
    path.write_bytes(CORRUPT["not-an-object"])
    CrashSafeJSONStorage(path, on_corrupt="move_aside").write(SOME_DATA)
    assert CrashSafeJSONStorage(path).read() == SOME_DATA
    assert len([p for p in path.parent.iterdir() if ".corrupt-" in p.name]) == 1


# Failed writes --------------------------------------------------------------------------------------------


def test_data_json_cannot_hold_is_a_validation_error_and_writes_nothing(path: Path) -> None:
    storage = CrashSafeJSONStorage(path)
    storage.write(SOME_DATA)
    before = path.read_bytes()
    unwritable: list[StoreData] = [
        {"t": {"1": {"x": object()}}},
        {"t": {"1": {"x": float("nan")}}},
        {"t": {"1": {"x": "\ud800"}}},
    ]
    for bad in unwritable:
        with pytest.raises(ValidationError, match=re.escape(path.name)):
            storage.write(bad)
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []


def test_a_vanished_folder_is_a_store_write_error(tmp_path: Path) -> None:
    folder = tmp_path / "gone"
    folder.mkdir()
    storage = CrashSafeJSONStorage(folder / "store.json")
    folder.rmdir()
    with pytest.raises(StoreWriteError, match=r"store\.json"):
        storage.write(SOME_DATA)


def test_an_os_error_while_replacing_is_a_store_write_error_and_leaves_no_temp_file(path: Path) -> None:
    storage = CrashSafeJSONStorage(path)
    assert storage.read() is None
    # A non-empty folder where the file should be: os.replace fails with an OSError that is no refusal.
    path.mkdir()
    (path / "keep").write_text("x")
    with pytest.raises(StoreWriteError, match=re.escape(path.name)):
        storage.write(SOME_DATA)
    assert leftovers(path.parent) == []
    assert (path / "keep").read_text() == "x"


def test_a_replace_refused_twice_is_retried_and_succeeds(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    open_repo(path).add_task(a_task("old"))
    calls = refuse_replace(monkeypatch, times=2)
    TinyDbExecutionRepository(
        TinyDB(path, storage=CrashSafeJSONStorage, replace_attempts=3, replace_delay=0.001)
    ).add_task(a_task("new"))
    assert len(calls) == 3
    assert [t.id for t in open_repo(path).list_tasks()] == ["old", "new"]
    assert leftovers(path.parent) == []


def test_a_persistently_refused_replace_is_a_transient_error_and_the_old_file_is_intact(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_repo(path).add_task(a_task("old"))
    before = path.read_bytes()
    calls = refuse_replace(monkeypatch, times=1_000)
    repo = TinyDbExecutionRepository(
        TinyDB(path, storage=CrashSafeJSONStorage, replace_attempts=4, replace_delay=0.001)
    )
    with pytest.raises(TransientError, match=rf"{re.escape(path.name)}.*refused 4 times") as caught:
        repo.add_task(a_task("new"))
    assert isinstance(caught.value.__cause__, PermissionError)
    assert len(calls) == 4
    assert path.read_bytes() == before
    assert leftovers(path.parent) == []
    # Nothing of the failed add lingers in memory either.
    assert [t.id for t in repo.list_tasks()] == ["old"]


def test_a_refused_move_aside_is_a_transient_error_and_the_corrupt_file_stays(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path.write_bytes(CORRUPT["truncated-json"])
    refuse_replace(monkeypatch, times=1_000)
    storage = CrashSafeJSONStorage(path, on_corrupt="move_aside", replace_attempts=2, replace_delay=0)
    with pytest.raises(TransientError, match="corrupt-"):
        storage.read()
    assert path.read_bytes() == CORRUPT["truncated-json"]


# Writes per operation -------------------------------------------------------------------------------------


def counting_repo(path: Path) -> tuple[TinyDbExecutionRepository, CountingStorage]:
    db = TinyDB(path, storage=CountingStorage)
    return TinyDbExecutionRepository(db), cast(CountingStorage, db.storage)


def test_a_batch_writes_the_file_once(path: Path) -> None:
    repo, storage = counting_repo(path)
    with repo.batch():
        for n in range(100):
            repo.add_task(a_task(f"t{n}"))
            repo.add_occurrence(an_occurrence(f"o{n}", task_id=f"t{n}"))
            repo.add_execution(an_execution(f"o{n}"))
        repo.delete_task_and_related("t0")
        with repo.batch():
            repo.add_task(a_task("nested"))
    assert storage.writes == 1
    assert len(open_repo(path).list_tasks()) == 100


def test_each_add_and_delete_writes_once_and_reads_write_nothing(path: Path) -> None:
    repo, storage = counting_repo(path)
    repo.add_task(a_task("t"))
    repo.add_occurrence(an_occurrence("o", task_id="t"))
    repo.add_execution(an_execution("o"))
    assert storage.writes == 3
    repo.get_task("t")
    repo.get_occurrence("o")
    repo.get_execution("o")
    repo.list_tasks()
    repo.list_occurrences()
    repo.list_occurrences("t")
    repo.list_executions()
    with repo.batch():
        repo.list_tasks()
    assert storage.writes == 3
    repo.delete_task_and_related("absent")
    assert storage.writes == 3
    repo.delete_task_and_related("t")
    assert storage.writes == 4


def test_a_batch_that_raises_writes_nothing(path: Path) -> None:
    repo, storage = counting_repo(path)
    with pytest.raises(RuntimeError), repo.batch():
        repo.add_task(a_task("t"))
        raise RuntimeError
    assert storage.writes == 0
    assert not path.exists()


# Crashes --------------------------------------------------------------------------------------------------

CHILD = """
import sys
from datetime import datetime, timezone
from tinydb import TinyDB
from planflow.executions import TaskEvent, TaskExecution
from planflow.infra.tinydb import CrashSafeJSONStorage, TinyDbExecutionRepository

repo = TinyDbExecutionRepository(TinyDB(sys.argv[1], storage=CrashSafeJSONStorage))
history = [TaskEvent("triggered", datetime.now(timezone.utc)) for _ in range(40)]
n = 0
while True:
    key = f"occ-{n}"
    repo.add_execution(TaskExecution(key, "pending", n, history))
    if n % 7 == 3:
        repo.add_execution(TaskExecution(f"occ-{n // 2}", "done", n // 2, history))
    print(key, flush=True)
    n += 1
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
@pytest.mark.parametrize("iteration", range(CRASH_ITERATIONS))
def test_a_writer_killed_at_a_random_moment_leaves_a_loadable_file_with_every_returned_add(
    tmp_path: Path, iteration: int
) -> None:
    path = tmp_path / "crash.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    first = child.stdout.readline()
    assert first, child.stderr.read().decode()
    time.sleep(random.Random(iteration).uniform(0.01, 0.6))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    rest = child.stdout.read()
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    # A line without its newline was cut by the kill; its add returned, but it proves nothing either way.
    returned = (first + rest).decode().split("\n")[:-1]
    assert returned, "the child never completed an add"
    stored = {e.occurrence_id: e for e in open_repo(path).list_executions()}
    missing = [key for key in returned if key not in stored]
    assert missing == []
    assert all(len(e.history) == 40 for e in stored.values())
