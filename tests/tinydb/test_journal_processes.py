"""The journaled store against real processes: one writer per store, stale temporary files, SIGKILL at random.

Every child is a real Python process on real files; kills are real ``SIGKILL``s. ``PLANFLOW_KILL_ITERATIONS``
sets how many random kills the crash test makes (10 by default; the issue's proof ran 100).
"""

from __future__ import annotations

import gc
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tinydb import TinyDB

from planflow import StoreLockedError, open_provider
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository
from tests.contract.helpers import a_task, an_execution

REPO_ROOT = Path(__file__).resolve().parents[2]
KILL_ITERATIONS = int(os.environ.get("PLANFLOW_KILL_ITERATIONS", "10"))
needs_sigkill = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "store.json"


def child_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}


def spawn(script: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=child_env(),
    )


# One writer ----------------------------------------------------------------------------------------------


def test_a_second_open_in_this_process_is_refused_until_the_first_closes(path: Path) -> None:
    first = TinyDB(path, storage=JournaledStorage)
    TinyDbExecutionRepository(first).add_task(a_task("t1"))
    with pytest.raises(StoreLockedError, match=r"store\.json is already open in this process"):
        TinyDB(path, storage=JournaledStorage)
    first.close()
    with TinyDB(path, storage=JournaledStorage) as second:
        assert [t.id for t in TinyDbExecutionRepository(second).list_tasks()] == ["t1"]


def test_another_spelling_of_the_same_file_is_the_same_store(path: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(tmp_path, target_is_directory=True)
    with TinyDB(path, storage=JournaledStorage):
        for other in (link / "store.json", tmp_path / "." / "store.json"):
            with pytest.raises(StoreLockedError):
                TinyDB(other, storage=JournaledStorage)


def test_two_providers_on_one_file_are_refused_instead_of_losing_writes(path: Path) -> None:
    with open_provider(f"tinydb:///{path}") as provider:
        with pytest.raises(StoreLockedError):
            open_provider(f"tinydb:///{path}")
        provider.executions.add_task(a_task("t1"))
    with open_provider(f"tinydb:///{path}") as provider:
        assert provider.executions.get_task("t1") == a_task("t1")


def test_a_storage_dropped_unclosed_releases_its_lock_and_its_journal_is_replayed(path: Path) -> None:
    db = TinyDB(path, storage=JournaledStorage)
    TinyDbExecutionRepository(db).add_task(a_task("t1"))
    del db
    gc.collect()
    with TinyDB(path, storage=JournaledStorage) as reopened:
        assert TinyDbExecutionRepository(reopened).get_task("t1") == a_task("t1")


HOLDER = """
import sys, time
from tinydb import TinyDB
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository
db = TinyDB(sys.argv[1], storage=JournaledStorage)
print("open", flush=True)
time.sleep(60)
"""

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


@needs_sigkill
def test_another_process_is_refused_while_a_process_holds_the_store_and_not_after_it_was_killed(
    path: Path,
) -> None:
    holder = spawn(HOLDER, str(path))
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"open\n"
        refused = subprocess.run(
            [sys.executable, "-c", OPENER, str(path)],
            capture_output=True,
            text=True,
            env=child_env(),
            check=True,
        )
        assert refused.stdout.startswith("refused:")
        assert "open in another process" in refused.stdout
        with pytest.raises(StoreLockedError, match="another process"):
            TinyDB(path, storage=JournaledStorage)
    finally:
        holder.kill()
        holder.wait(timeout=30)
        holder.stdout.close()  # pyright: ignore[reportOptionalMemberAccess]
        holder.stderr.close()  # pyright: ignore[reportOptionalMemberAccess]
    # The OS released the dead process's lock: no stale lock ever blocks the user.
    opened = subprocess.run(
        [sys.executable, "-c", OPENER, str(path)], capture_output=True, text=True, env=child_env(), check=True
    )
    assert opened.stdout == "opened\n"


# Stale temporary files -----------------------------------------------------------------------------------


def test_stale_temporary_files_of_the_store_are_removed_at_open_and_nothing_else(path: Path) -> None:
    folder = path.parent
    stale = [folder / ".store.json.abc123.tmp", folder / ".store.json.x.tmp"]
    others = [folder / ".other.json.abc.tmp", folder / "store.json.tmp", folder / "notes.txt"]
    for file in stale + others:
        file.write_bytes(b"{}" * 1000)
    with TinyDB(path, storage=JournaledStorage):
        pass
    assert [p for p in stale if p.exists()] == []
    assert all(p.exists() for p in others)


# SIGKILL at random moments -------------------------------------------------------------------------------

WRITER = """
import sys
from datetime import datetime, timezone
from tinydb import TinyDB
from planflow.executions import TaskEvent, TaskExecution
from planflow.infra.tinydb import JournaledStorage, TinyDbExecutionRepository

db = TinyDB(sys.argv[1], storage=JournaledStorage, compact_after=int(sys.argv[2]))
repo = TinyDbExecutionRepository(db)
storage = db.storage
history = [TaskEvent("triggered", datetime.now(timezone.utc)) for _ in range(20)]
print("ready", flush=True)
n = 0
while True:
    if n % 5 == 4:
        # A batch: one journal record, all of it or none of it.
        print(f"B {n}", flush=True)
        with repo.batch():
            for part in range(4):
                repo.add_execution(TaskExecution(f"b{n}-{part}", "pending", part, history))
        print(f"b {n}", flush=True)
    elif n % 7 == 6:
        print("C", flush=True)
        storage.compact()
        print("c", flush=True)
    else:
        repo.add_execution(TaskExecution(f"o{n}", "pending", n, history))
        if n % 3 == 0:
            repo.add_execution(TaskExecution(f"o{n // 2}", "done", n // 2, history))
        print(f"o {n}", flush=True)
    n += 1
"""


class KillReport:
    """What the kills hit, summed over the run (printed with -s)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.kills = 0
        self.during: dict[str, int] = {"compaction": 0, "batch": 0, "single write": 0}
        self.acknowledged = 0


@pytest.fixture(scope="module")
def kill_report() -> Iterator[KillReport]:
    report = KillReport()
    yield report
    print(
        f"\nkills: {report.kills}; step in progress when killed (the last begun): {report.during}; "
        f"acknowledged writes checked: {report.acknowledged}"
    )


@needs_sigkill
@pytest.mark.parametrize("iteration", range(KILL_ITERATIONS))
def test_a_writer_killed_at_a_random_moment_loses_no_acknowledged_write_and_shows_no_half_batch(
    tmp_path: Path, iteration: int, kill_report: KillReport
) -> None:
    rng = random.Random(iteration)
    path = tmp_path / "crash.json"
    # Half the runs compact often (so kills land inside compactions), half only past 64 KiB.
    compact_after = 0 if iteration % 2 else 64 * 1024
    child = spawn(WRITER, str(path), str(compact_after))
    assert child.stdout is not None and child.stderr is not None
    ready = child.stdout.readline()
    assert ready == b"ready\n", child.stderr.read().decode()
    time.sleep(rng.uniform(0.02, 0.8))
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    out = child.stdout.read()
    child.stdout.close()
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    # A line without its newline was cut by the kill: its step returned, but proves nothing either way.
    lines = out.decode().split("\n")[:-1]
    acknowledged: set[str] = set()
    batches_done: set[int] = set()
    for line in lines:
        kind, _, number = line.partition(" ")
        if kind == "o":
            acknowledged.add(f"o{number}")
            if int(number) % 3 == 0:
                acknowledged.add(f"o{int(number) // 2}")
        elif kind == "b":
            batches_done.add(int(number))
    last = lines[-1].split(" ")[0] if lines else ""
    with TinyDB(path, storage=JournaledStorage) as db:
        stored = {e.occurrence_id: e for e in TinyDbExecutionRepository(db).list_executions()}
    assert sorted(acknowledged - stored.keys()) == []
    for n in batches_done:
        assert {f"b{n}-{part}" for part in range(4)} <= stored.keys()
    batch_numbers = {int(key[1:].split("-")[0]) for key in stored if key.startswith("b")}
    for n in batch_numbers:
        assert {f"b{n}-{part}" for part in range(4)} <= stored.keys(), f"half of batch {n} is visible"
    assert all(len(e.history) == 20 for e in stored.values())
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "crash.json",
        "crash.json.journal",
        "crash.json.lock",
    ]
    with kill_report.lock:
        kill_report.kills += 1
        kill_report.acknowledged += len(acknowledged) + 4 * len(batches_done)
        step = {"C": "compaction", "B": "batch"}.get(last, "single write")
        kill_report.during[step] += 1


# Threads -------------------------------------------------------------------------------------------------


def test_eight_threads_adding_while_another_lists_lose_nothing_and_every_list_is_consistent(
    path: Path,
) -> None:
    writers, per_writer = 8, 150
    stop = threading.Event()
    failures: list[BaseException] = []
    lists_seen = 0
    with TinyDB(path, storage=JournaledStorage) as db:
        repo = TinyDbExecutionRepository(db)

        def write(worker: int) -> None:
            try:
                for n in range(per_writer):
                    # Pairs in one batch: a reader sees both or neither.
                    with repo.batch():
                        repo.add_execution(an_execution(f"w{worker}-{n}-a", retries_remaining=n))
                        repo.add_execution(an_execution(f"w{worker}-{n}-b", retries_remaining=n))
            except BaseException as exc:  # collected and re-raised in the main thread
                failures.append(exc)

        def read() -> None:
            nonlocal lists_seen
            try:
                while not stop.is_set():
                    ids = [e.occurrence_id for e in repo.list_executions()]
                    assert len(ids) == len(set(ids))
                    for worker in range(writers):
                        mine = [i for i in ids if i.startswith(f"w{worker}-")]
                        # A prefix of what this worker added, in its order, whole pairs only.
                        expected = [f"w{worker}-{n}-{half}" for n in range(len(mine) // 2) for half in "ab"]
                        assert mine == expected
                    lists_seen += 1
            except BaseException as exc:
                failures.append(exc)

        reader = threading.Thread(target=read)
        reader.start()
        threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        stop.set()
        reader.join(timeout=120)
        assert failures == []
        assert lists_seen > 0
        assert len(repo.list_executions()) == writers * per_writer * 2
    with TinyDB(path, storage=JournaledStorage) as db:
        assert len(TinyDbExecutionRepository(db).list_executions()) == writers * per_writer * 2
