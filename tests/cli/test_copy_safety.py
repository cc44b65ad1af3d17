"""``planflow copy`` never exits 0 after leaving data behind, and a copy that stops part-way says so.

A target that cannot store some of the source's records is refused unless ``--only`` / ``--skip`` names what
to copy. While a copy runs its target carries an incomplete-copy mark in the store itself (metadata
``planflow.copy.incomplete``): ``status`` shows it, Ctrl-C prints what was copied and the command that
resumes, and that command (``copy --merge``) clears the mark.
"""

from __future__ import annotations

import json
import shlex
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from planflow import (
    ExecutionRepository,
    RetryPolicy,
    TaskDefinition,
    TaskEvent,
    TaskExecution,
    TaskOccurrence,
    WorkflowState,
    open_provider,
)
from planflow.cli.copy import INCOMPLETE_KEY
from planflow.infra.tinydb import read_store
from tests.cli.helpers import (
    add_addon_data,
    assert_fits,
    big_workflow,
    interrupted,
    planflow,
    snapshot,
    sqlite_url,
)
from tests.pg import new_postgres_url, postgres_server_url  # noqa: F401 - fixtures

tinydb_driver = pytest.importorskip("planflow.infra.tinydb.open")

MOMENT = datetime(2026, 3, 2, 8, tzinfo=UTC)
SOURCE_RECORDS = {"workflows": 1, "tasks": 60, "users": 2, "api_keys": 2}


def sqlite_mark(path: Path) -> dict[str, object] | None:
    """The mark in a SQLite store as another process sees it now (``None``: none, or no table yet)."""
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as conn:
            row = conn.execute(
                "SELECT value FROM planflow_metadata WHERE key = ?", [INCOMPLETE_KEY]
            ).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else json.loads(row[0])


def copied(mark: dict[str, object] | None, table: str) -> int:
    if mark is None:
        return 0
    tables = mark.get("tables")
    assert isinstance(tables, dict)
    return int(tables.get(table, {}).get("copied", 0))


# refusing to leave data behind ------------------------------------------------------------------------------


def test_copy_into_tinydb_refuses_to_leave_records_behind_and_writes_nothing(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    source, _ = demo_store
    run = planflow("copy", "--from", sqlite_url(source), "--to", "tinydb:///addon.json", cwd=tmp_path)

    assert run.code == 1
    [line] = run.err.splitlines()
    assert line == (
        "planflow: error: the tinydb target does not store workflows (1 record), tasks (60 records), "
        "users (2 records), api_keys (2 records); nothing was copied: copy only what it stores with "
        "--only executions, or leave them behind with --skip workflows --skip tasks --skip auth"
    )
    assert not (tmp_path / "addon.json").exists()


def test_copy_with_only_executions_moves_the_addon_records_and_names_what_stayed(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    source, _ = demo_store
    target = "tinydb:///addon.json"
    report = planflow(
        "copy", "--from", sqlite_url(source), "--to", target, "--only", "executions", "--json", cwd=tmp_path
    ).json()
    text = planflow(
        "copy", "--from", sqlite_url(source), "--to", target, "--merge", "--only", "executions", cwd=tmp_path
    )

    assert isinstance(report, dict) and report["verified"] is True
    assert report["skipped"] == SOURCE_RECORDS
    assert [t["name"] for t in report["tables"]] == ["exec_tasks", "exec_occurrences", "exec_executions"]
    before, after = snapshot(sqlite_url(source)), snapshot(f"tinydb:///{tmp_path / 'addon.json'}")
    for table in ("exec_tasks", "exec_occurrences", "exec_executions"):
        assert after[table] == before[table], table
    assert text.code == 0, text.err
    assert "Left behind as asked: workflows (1), tasks (60), users (2), api_keys (2)." in text.out


def test_copy_with_skip_leaves_the_named_repository_behind(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    source, _ = demo_store
    target = sqlite_url(tmp_path / "t.db")
    report = planflow(
        "copy", "--from", sqlite_url(source), "--to", target, "--skip", "auth", "--json", cwd=tmp_path
    ).json()

    assert isinstance(report, dict) and report["verified"] is True
    assert report["skipped"] == {"users": 2, "api_keys": 2}
    after, before = snapshot(target), snapshot(sqlite_url(source))
    assert after["users"] == [] and after["tasks"] == before["tasks"]
    assert after["exec_executions"] == before["exec_executions"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--only", "tasks"], "tasks belong to their workflows: copy the workflows with them, or skip both"),
        (["--skip", "workflows"], "tasks belong to their workflows"),
        (
            ["--skip", "workflows", "--skip", "tasks", "--skip", "auth", "--skip", "executions"],
            "no repository is left to copy",
        ),
    ],
)
def test_a_selection_that_cannot_be_copied_is_refused_before_anything_is_written(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path, args: list[str], says: str
) -> None:
    source, _ = demo_store
    run = planflow(
        "copy", "--from", sqlite_url(source), "--to", sqlite_url(tmp_path / "t.db"), *args, cwd=tmp_path
    )

    assert run.code == 1
    assert run.err.startswith("planflow: error: ") and says in run.err
    assert snapshot(sqlite_url(tmp_path / "t.db"))["tasks"] == []


def test_only_a_repository_the_source_does_not_serve_is_refused(tmp_path: Path) -> None:
    addon = "tinydb:///addon.json"
    with open_provider(f"tinydb:///{tmp_path / 'addon.json'}") as provider:
        add_addon_data(provider.executions)

    run = planflow(
        "copy", "--from", addon, "--to", sqlite_url(tmp_path / "t.db"), "--only", "auth", cwd=tmp_path
    )

    assert run.code == 1
    assert "the tinydb source does not serve auth; it serves executions" in run.err


@pytest.mark.parametrize(
    "args", [["--only", "executions", "--skip", "auth"], ["--only", "everything"], ["--skip", "tasks,auth"]]
)
def test_bad_selections_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    run = planflow("copy", "--from", "sqlite:///a.db", "--to", "sqlite:///b.db", *args, cwd=tmp_path)

    assert run.code == 2, run.both
    assert "Traceback" not in run.both


# the incomplete mark ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def large_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with one workflow of 4 000 tasks: long enough a copy to be interrupted in the middle."""
    path = tmp_path_factory.mktemp("large") / "large.db"
    big_workflow(sqlite_url(path), 4000)
    return path


def test_ctrl_c_says_what_was_copied_marks_the_target_and_the_printed_command_resumes_and_clears_it(
    large_source: Path, tmp_path: Path
) -> None:
    source, target = sqlite_url(large_source), sqlite_url(tmp_path / "target.db")
    run = interrupted(
        "copy", "--from", source, "--to", target, "--batch-size", "20",
        cwd=tmp_path,
        ready=lambda: copied(sqlite_mark(tmp_path / "target.db"), "tasks") >= 400,
    )  # fmt: skip

    assert run.code == 130, run.both
    lines = run.err.splitlines()
    assert lines[0] == "planflow: interrupted: the target holds part of the copy, marked incomplete:"
    assert "1 of 1 copied" in run.err and " of 4,000 copied" in run.err
    assert "Resume it with ('planflow status' shows the mark until then):" in run.err
    resume = lines[-1].strip()
    assert resume == (
        f"planflow copy --from sqlite:///{large_source} --to sqlite:///{tmp_path / 'target.db'} --merge"
    )
    assert_fits(run.err.replace(lines[-1], ""))

    status = planflow("status", "--db", target, "--json", cwd=tmp_path).json()
    text = planflow("status", "--db", target, cwd=tmp_path, env={"COLUMNS": "80"})
    listing = planflow("workflows", "--db", target, cwd=tmp_path)
    again = planflow("copy", "--from", source, "--to", target, cwd=tmp_path)

    assert isinstance(status, dict)
    mark = status["incomplete_copy"]
    assert mark["source"] == f"sqlite {large_source}" and mark["resume"] == resume
    assert 400 <= mark["tables"]["tasks"]["copied"] < 4000 == mark["tables"]["tasks"]["source"]
    assert mark["tables"]["tasks"]["copied"] == status["counts"]["tasks"]
    assert "Incomplete copy: this store holds part of a copy from sqlite" in text.out
    assert f"  {resume}" in text.out.splitlines()
    assert "planflow: warning: this store holds an incomplete copy" in listing.err
    assert again.code == 1 and "holds an incomplete copy from this source" in again.err

    resumed = subprocess.run(
        [sys.executable, "-m", "planflow", *shlex.split(resume)[1:], "--json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["verified"] is True
    assert sqlite_mark(tmp_path / "target.db") is None
    after = planflow("status", "--db", target, "--json", cwd=tmp_path).json()
    assert isinstance(after, dict) and after["incomplete_copy"] is None
    assert snapshot(target) == snapshot(source)


def test_a_killed_copy_leaves_the_mark_with_the_pages_written_so_far(
    large_source: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target.db"
    child = subprocess.Popen(
        [sys.executable, "-m", "planflow", "copy", "--from", sqlite_url(large_source), "--to", sqlite_url(target),
         "--batch-size", "20", "--json"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        while copied(sqlite_mark(target), "tasks") < 200:
            assert child.poll() is None, "the copy ended before it could be killed"
            time.sleep(0.01)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait()

    status = planflow("status", "--db", sqlite_url(target), "--json", cwd=tmp_path).json()
    assert isinstance(status, dict)
    mark = status["incomplete_copy"]
    # The mark is written after each page: the store holds at least what it says, at most a page more.
    assert (
        mark["tables"]["tasks"]["copied"]
        <= status["counts"]["tasks"]
        <= mark["tables"]["tasks"]["copied"] + 20
    )


def test_a_marked_target_is_not_merged_from_another_source(
    demo_store: tuple[Path, dict[str, object]], tmp_path: Path
) -> None:
    target = sqlite_url(tmp_path / "t.db")
    with open_provider(target) as provider:
        provider.metadata.set(
            INCOMPLETE_KEY, json.dumps({"source": "sqlite /elsewhere.db", "resume": "planflow copy --from x"})
        )
    run = planflow("copy", "--from", sqlite_url(demo_store[0]), "--to", target, "--merge", cwd=tmp_path)

    assert run.code == 1
    assert (
        "holds an incomplete copy from sqlite /elsewhere.db; finish that one first: planflow copy --from x"
        in (run.err)
    )
    assert snapshot(target)["tasks"] == []


def test_an_interrupted_copy_into_tinydb_is_marked_in_the_file_and_resumed(tmp_path: Path) -> None:
    source = sqlite_url(tmp_path / "addon.db")
    with open_provider(source) as provider:
        add_many_addon_records(provider.executions, 100)
    target = tmp_path / "addon.json"

    def tinydb_mark() -> dict[str, object] | None:
        # The copy holds the store open (and locked): read what its files hold, journal included.
        entries = read_store(target).get("planflow_metadata", {}).values()
        return next((json.loads(e["value"]) for e in entries if e["key"] == INCOMPLETE_KEY), None)

    run = interrupted(
        "copy", "--from", source, "--to", f"tinydb:///{target}", "--only", "executions", "--batch-size", "5",
        cwd=tmp_path,
        ready=lambda: copied(tinydb_mark(), "exec_occurrences") >= 20,
    )  # fmt: skip

    assert run.code == 130, run.both
    resume = run.err.splitlines()[-1].strip()
    assert resume.endswith("--only executions --merge")
    status = planflow("status", "--db", f"tinydb:///{target}", "--json", cwd=tmp_path).json()
    assert isinstance(status, dict) and status["incomplete_copy"]["resume"] == resume
    done = planflow(*shlex.split(resume)[1:], "--json", cwd=tmp_path).json()
    assert isinstance(done, dict) and done["verified"] is True
    assert tinydb_mark() is None
    assert snapshot(f"tinydb:///{target}")["exec_executions"] == snapshot(source)["exec_executions"]


def add_many_addon_records(repo: ExecutionRepository, tasks: int) -> None:
    """``tasks`` task definitions with three occurrences and executions each, in one batch."""
    with repo.batch():
        for n in range(tasks):
            repo.add_task(
                TaskDefinition(
                    f"t{n}", f"Task {n}", None, None, MOMENT, None, "low", ["morning"], RetryPolicy(1)
                )
            )
            for j in range(3):
                repo.add_occurrence(TaskOccurrence(f"o{n}-{j}", f"t{n}", MOMENT, "morning", None))
                repo.add_execution(TaskExecution(f"o{n}-{j}", "pending", 1, [TaskEvent("triggered", MOMENT)]))


@pytest.mark.postgres
def test_an_interrupted_copy_into_postgres_is_marked_in_the_store_and_resumed(
    large_source: Path,
    new_postgres_url: Callable[[], str],  # noqa: F811
    tmp_path: Path,
) -> None:
    target = new_postgres_url()

    def postgres_mark() -> dict[str, object] | None:
        try:
            with psycopg.connect(target, connect_timeout=2) as conn:
                row = conn.execute(
                    "SELECT value FROM planflow_metadata WHERE key = %s", [INCOMPLETE_KEY]
                ).fetchone()
        except psycopg.Error:
            return None
        return None if row is None else json.loads(row[0])

    run = interrupted(
        "copy", "--from", sqlite_url(large_source), "--to", target, "--batch-size", "20",
        cwd=tmp_path,
        ready=lambda: copied(postgres_mark(), "tasks") >= 200,
    )  # fmt: skip

    assert run.code == 130, run.both
    status = planflow("status", "--db", target, "--json", cwd=tmp_path).json()
    assert isinstance(status, dict) and status["incomplete_copy"]["source"] == f"sqlite {large_source}"
    resumed = planflow(
        "copy", "--from", sqlite_url(large_source), "--to", target, "--merge", "--json", cwd=tmp_path
    )
    report = resumed.json()
    assert isinstance(report, dict) and report["verified"] is True
    assert postgres_mark() is None


def test_a_store_whose_schema_predates_the_mark_is_still_read_and_reports_no_mark(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_provider(sqlite_url(path)) as provider:
        provider.workflows.upsert_state(WorkflowState("w1", "old"))
    with sqlite3.connect(path) as conn:  # back to schema 3: as a store written before migration 0004
        conn.execute("DROP TABLE planflow_metadata")
        conn.execute("DELETE FROM planflow_migrations WHERE version = 4")

    listing = planflow("workflows", "--db", f"sqlite:///{path}?auto_migrate=false", "--json", cwd=tmp_path)
    status = planflow("status", "--db", sqlite_url(path), "--json", cwd=tmp_path).json()

    assert listing.code == 0, listing.err
    assert [w["workflow_exec_id"] for w in json.loads(listing.out)] == ["w1"]
    assert listing.err == ""
    assert isinstance(status, dict)
    assert status["pending_migrations"][0] == "0004_store_metadata" and status["incomplete_copy"] is None
