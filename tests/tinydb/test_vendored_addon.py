"""The add-on's situation, reproduced: planflow and TinyDB vendored as plain folders into a bare Python.

The PlanFlow add-on ships planflow's source and TinyDB's beside its own code and runs them on an embedded
Python 3.11 (older releases) or 3.13 (from 2026) that has no compiled packages and, very likely, no ``sqlite3``.
Each case copies the two packages into a folder, starts an isolated interpreter (``-I``: no site-packages,
no PYTHON* variables) with warnings as errors, blocks ``sqlite3``, ``psycopg`` and the command line's libraries,
and drives the add-on's store through a journaled file (a file left open shows as a ResourceWarning on stderr): every model and
field, batches, a second writer refused, closing to a plain TinyDB file, a store of the older crash-safe storage,
reopening, the cascade delete, the type checks, a corrupt file and the provider factory.

It runs on this interpreter and on every Python 3.13 it can find (``python3.13`` on PATH, pyenv's versions,
or the paths in ``PLANFLOW_TEST_PYTHONS``); with no 3.13 here that case is skipped saying how to enable it.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tinydb

import planflow

ADDON_SCRIPT = textwrap.dedent(
    """
    import sys
    from importlib.abc import MetaPathFinder

    BLOCKED = {"sqlite3", "_sqlite3", "psycopg", "psycopg_pool", "typer", "rich", "click"}

    class Blocker(MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"No module named {name!r} (the add-on's Python has none)", name=name)
            return None

    sys.meta_path.insert(0, Blocker())
    vendor, workdir = sys.argv[1], sys.argv[2]
    sys.path.insert(0, vendor)

    import os
    from datetime import datetime, timedelta, timezone

    from tinydb import TinyDB

    import planflow
    from planflow import (
        RetryPolicy, StoreLockedError, TaskDefinition, TaskEvent, TaskExecution, TaskOccurrence, UnsupportedError,
        open_provider,
    )
    from planflow.infra.tinydb import (
        CorruptStoreError, CrashSafeJSONStorage, JournaledStorage, TinyDbExecutionRepository,
    )

    assert planflow.__file__.startswith(vendor), planflow.__file__
    path = os.path.join(workdir, "planflow.json")
    aware = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=timezone(timedelta(hours=5, minutes=30)))
    naive = datetime(2026, 3, 29, 9, 0)
    tasks = [
        TaskDefinition("t1", "Arroser les plantes \u00e9\u00e8", "d\u00e9tails", "https://example.org/x",
                       aware, timedelta(days=1, seconds=7, microseconds=5), "high", ["morning", "evening"],
                       RetryPolicy(3), pinned_time=naive),
        TaskDefinition("t2", "\u0627\u0644\u0639\u0631\u0628\u064a\u0629 title", None, None, naive, None,
                       "low", [], RetryPolicy(0)),
    ]
    occurrences = [TaskOccurrence(f"o{i}", "t1" if i % 2 else "t2", naive + timedelta(hours=i),
                                  "morning" if i % 3 else None, aware if i == 1 else None) for i in range(6)]
    history = [TaskEvent("triggered", naive), TaskEvent("rescheduled", aware), TaskEvent("missed", naive)]
    executions = [TaskExecution(o.id, "missed" if i % 2 else "pending", 2, history if i % 2 else [])
                  for i, o in enumerate(occurrences)]

    db = TinyDB(path, storage=JournaledStorage)
    repo = TinyDbExecutionRepository(db)
    for task in tasks:
        repo.add_task(task)
    with repo.batch():
        for occurrence in occurrences:
            repo.add_occurrence(occurrence)
        for execution in executions:
            repo.add_execution(execution)
    for wrong in ({"id": "t9"}, occurrences[0]):
        try:
            repo.add_task(wrong)
        except TypeError:
            pass
        else:
            raise AssertionError(f"add_task accepted {wrong!r}")
    try:
        TinyDB(path, storage=JournaledStorage)
    except StoreLockedError:
        pass
    else:
        raise AssertionError("a second writer opened the store")
    db.close()
    import json
    with open(path, encoding="utf-8") as plain:
        assert len(json.load(plain)["executions"]) == len(executions), "the file is not a plain TinyDB document"

    old_store = os.path.join(workdir, "old.json")
    TinyDbExecutionRepository(TinyDB(old_store, storage=CrashSafeJSONStorage)).add_task(tasks[1])
    with TinyDB(old_store, storage=JournaledStorage) as old:
        assert TinyDbExecutionRepository(old).list_tasks() == [tasks[1]]

    db = TinyDB(path, storage=JournaledStorage)
    reopened = TinyDbExecutionRepository(db)
    assert reopened.list_tasks() == tasks
    assert reopened.list_occurrences() == occurrences
    assert reopened.list_executions() == executions
    assert reopened.get_task("t1").pinned_time.tzinfo is None
    assert reopened.get_task("t1").created_at.utcoffset() == timedelta(hours=5, minutes=30)
    assert reopened.get_execution("o1").retry_count == 1 and reopened.get_execution("o1").is_reschedulable
    reopened.delete_task_and_related("t1")
    assert [t.id for t in reopened.list_tasks()] == ["t2"]
    assert {o.task_id for o in reopened.list_occurrences()} == {"t2"}
    assert [e.occurrence_id for e in reopened.list_executions()] == ["o0", "o2", "o4"]
    db.close()

    with open_provider("tinydb:///" + path) as provider:
        assert provider.executions.get_task("t2") == tasks[1]
        try:
            provider.tasks
        except UnsupportedError:
            pass
        else:
            raise AssertionError("the tinydb provider served tasks")

    with open(path, "w", encoding="utf-8") as broken:
        broken.write('{"tasks": {"1": ')
    try:
        TinyDB(path, storage=JournaledStorage)
    except CorruptStoreError as exc:
        assert "planflow.json" in str(exc), exc
    else:
        raise AssertionError("a corrupt file was read")
    with open(path, encoding="utf-8") as kept:
        assert kept.read() == '{"tasks": {"1": ', "the corrupt file was overwritten"

    leaked = sorted(BLOCKED & set(sys.modules))
    assert not leaked, leaked
    print(f"add-on store ok on Python {sys.version_info.major}.{sys.version_info.minor}")
    """
)


def _python_313() -> str | None:
    """A Python 3.13 interpreter found on this machine, or None."""
    listed = [p for p in os.environ.get("PLANFLOW_TEST_PYTHONS", "").split(os.pathsep) if p]
    pyenv = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates = [
        *listed,
        shutil.which("python3.13"),
        *sorted(glob.glob(os.path.join(pyenv, "versions", "3.13*", "bin", "python3.13")), reverse=True),
    ]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [candidate, "-I", "-c", "import sys; print(sys.version_info[:2] == (3, 13))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.stdout.strip() == "True":
            return candidate
    return None


def _vendor(folder: Path) -> Path:
    """Copy planflow's and TinyDB's source (no caches) into ``folder``, as the add-on ships them."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in (planflow, tinydb):
        source = Path(package.__file__ or "").parent
        shutil.copytree(source, folder / source.name, ignore=ignore)
    return folder


@pytest.mark.parametrize("version", ["this", "3.13"])
def test_the_vendored_add_on_store_works_on_a_bare_python(version: str, tmp_path: Path) -> None:
    python = sys.executable if version == "this" else _python_313()
    if python is None:
        pytest.skip(
            "no Python 3.13 here: put python3.13 on PATH or list interpreters in PLANFLOW_TEST_PYTHONS"
        )
    vendor = _vendor(tmp_path / "vendor")
    workdir = tmp_path / "work"
    workdir.mkdir()
    result = subprocess.run(
        [python, "-I", "-W", "error", "-c", ADDON_SCRIPT, str(vendor), str(workdir)],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # Warnings are errors, and one ignored in a finaliser (a file left open) still reaches stderr.
    assert result.stderr == ""
    assert "add-on store ok on Python" in result.stdout
    if version == "3.13":
        assert "Python 3.13" in result.stdout
