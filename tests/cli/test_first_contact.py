"""The command line as a newcomer meets it (issue 30): options anywhere, messages that name the right flag,
listings that fit 80 columns whole, a closed pipe that is no error, and Alembic's migration habits
(``migrate --sql``, ``--history``) with ``planflow config`` to show what is in effect."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from planflow import TaskFilter, TaskState, TaskStatus, WorkflowState, open_provider
from planflow.infra.sql.migrations import load_migrations
from tests.cli.helpers import assert_fits, planflow, sqlite_url

#: The schema version this planflow knows (the newest migration).
LATEST = len(load_migrations("sqlite"))

NARROW = {"COLUMNS": "80"}


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file with one demo run (60 tasks); never written by the tests."""
    folder = tmp_path_factory.mktemp("first-contact")
    run = planflow("demo", "--tasks", "60", "--db", sqlite_url(folder / "demo.db"), cwd=folder)
    assert run.code == 0, run.err
    return folder / "demo.db"


# 6. options before or after the command -------------------------------------------------------------------


def test_db_and_verbose_work_before_and_after_the_command(demo_db: Path, tmp_path: Path) -> None:
    url = sqlite_url(demo_db)
    before = planflow("--db", url, "status", "--json", cwd=tmp_path).json()
    after = planflow("status", "--db", url, "--json", cwd=tmp_path).json()
    assert before == after
    assert isinstance(before, dict) and before["location"] == str(demo_db)

    quiet = planflow("status", "--db", url, cwd=tmp_path)
    info = planflow("status", "-v", "--db", url, cwd=tmp_path)
    debug_after = planflow("status", "--db", url, "-vv", cwd=tmp_path)
    debug_split = planflow("-v", "status", "-v", "--db", url, cwd=tmp_path)
    assert all(run.code == 0 for run in (quiet, info, debug_after, debug_split))
    assert "DEBUG" not in quiet.err and "DEBUG" not in info.err
    assert "DEBUG planflow.sqlite: statement" in debug_after.err
    assert "DEBUG planflow.sqlite: statement" in debug_split.err  # the counts add up
    # The hints printed after a command name the store however it was given.
    hinted = planflow("--db", url, "purge", "--older-than", "30d", "--dry-run", cwd=tmp_path)
    assert f"  planflow purge --older-than 30d --db {url}" in hinted.out.splitlines()


@pytest.mark.parametrize("command", [None, "status", "demo"])
def test_help_shows_verbose_as_a_flag_without_a_value(tmp_path: Path, command: str | None) -> None:
    run = planflow(*([command] if command else []), "--help", cwd=tmp_path, env=NARROW)

    assert run.code == 0, run.err
    line = next(line for line in run.out.splitlines() if "--verbose" in line)
    assert re.search(r"--verbose +-v +Log to stderr", line), line
    assert "<int>" not in run.out and "INTEGER" not in line and "[default: 0]" not in run.out


def test_copy_names_its_own_flags_in_errors(tmp_path: Path) -> None:
    missing = planflow("copy", "--from", "sqlite:///missing.db", "--to", "sqlite:///t.db", cwd=tmp_path)
    given_db = planflow(
        "--db", "sqlite:///a.db", "copy", "--from", "sqlite:///a.db", "--to", "sqlite:///t.db", cwd=tmp_path
    )

    assert missing.code == 1
    assert "no sqlite store at missing.db; pass --from URL" in missing.err and "--db" not in missing.err
    assert (
        given_db.code == 2
        and "copy takes its two stores as --from URL and --to URL, not --db" in given_db.both
    )
    assert sorted(os.listdir(tmp_path)) == []


# 8. listings at 80 columns, plurals, a closed pipe ------------------------------------------------------------


def _long_ids_store(path: Path) -> str:
    url = sqlite_url(path)
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("demo-42-b5a4425e", "order-fulfilment"))
        provider.tasks.bulk_upsert(
            TaskState(f"demo-42-b5a4425e/fulfilment/notify/email-{i:04d}", "email", "demo-42-b5a4425e",
                      "order-fulfilment", status=TaskStatus.PENDING)
            for i in range(3)
        )  # fmt: skip
        only = TaskFilter(workflow_exec_id="demo-42-b5a4425e")
        provider.tasks.claim(only, worker="host-1/pid-42/worker-7", limit=1, lease=0.01)
    time.sleep(0.05)  # the one claim's lease lapses: a stuck task
    return url


def test_tasks_and_workflows_fit_80_columns_with_whole_ids_and_whole_times(tmp_path: Path) -> None:
    url = _long_ids_store(tmp_path / "long.db")
    with open_provider(url) as provider:
        states = provider.tasks.list_states().items
        day = states[0].updated_at
    assert day is not None

    for command in (["tasks"], ["workflows"], ["tasks", "--stuck"]):
        run = planflow(*command, "--db", url, cwd=tmp_path, env=NARROW)
        assert run.code == 0, run.err
        assert_fits(run.out)
        words = run.out.split()
        # Times to the second, with the date (one day for every row) in the title; nothing cut, nothing wrapped.
        assert f"on {day:%Y-%m-%d})" in run.out
        assert all(re.fullmatch(r"\d\d:\d\d:\d\d", w) for w in words if re.match(r"\d\d:\d\d", w))
        for state in states if command[0] == "tasks" and len(command) == 1 else ():
            assert state.task_exec_id in words
            assert f"{state.updated_at:%H:%M:%S}" in words


def test_counts_read_as_english(tmp_path: Path) -> None:
    url = _long_ids_store(tmp_path / "long.db")

    stuck = planflow("tasks", "--stuck", "--db", url, cwd=tmp_path, env=NARROW)
    status = planflow("status", "--db", url, cwd=tmp_path, env=NARROW)
    one = planflow("workflows", "--db", url, cwd=tmp_path, env=NARROW)

    assert "1 stuck task (lease lapsed)" in stuck.out and "1 stuck tasks" not in stuck.out
    assert "1 stuck task: RUNNING with a lapsed lease" in status.out
    assert one.out.startswith("1 workflow execution (")


@pytest.mark.parametrize("command", [["status"], ["workflows"], ["tasks"], ["migrate", "--history"]])
def test_a_reader_that_closes_the_pipe_early_is_not_an_error(
    demo_db: Path, tmp_path: Path, command: list[str]
) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # as head -1 does once it has its line: every write of the command meets a closed pipe
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLANFLOW_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "planflow", *command, "--db", sqlite_url(demo_db)],
            stdout=write_end, stderr=subprocess.PIPE, cwd=tmp_path, env=environ, check=False, timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)

    assert done.returncode == 0
    assert done.stderr == b""


def test_head_of_status_exits_0(demo_db: Path, tmp_path: Path) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PLANFLOW_")}
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{sys.executable} -m planflow status --db {sqlite_url(demo_db)} | head -1"],
        capture_output=True, text=True, cwd=tmp_path, env=environ, check=False, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("driver") and done.stderr == ""


# 11. migrate --sql, migrate --history, config -----------------------------------------------------------------


def test_migrate_sql_prints_what_a_dba_can_apply_by_hand_and_migrate_then_agrees(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "by-hand.db")

    printed = planflow("migrate", "--sql", "--db", url, cwd=tmp_path)

    assert printed.code == 0, printed.err
    assert os.listdir(tmp_path) == []  # printing creates nothing
    assert printed.out.startswith("-- planflow migrations") and printed.out.rstrip().endswith("COMMIT;")
    with sqlite3.connect(tmp_path / "by-hand.db") as raw:
        raw.executescript(printed.out)
    raw.close()
    history = planflow("migrate", "--history", "--db", url, "--json", cwd=tmp_path).json()
    after = planflow("migrate", "--db", url, cwd=tmp_path)
    again = planflow("migrate", "--sql", "--db", url, cwd=tmp_path)
    assert isinstance(history, list) and all(m["applied_at"] for m in history)  # type: ignore[index]
    assert f"is up to date (schema version {LATEST}); nothing to apply" in after.out
    assert again.out.startswith("-- ") and "nothing to apply" in again.out
    with open_provider(url) as provider:
        provider.workflows.upsert_state(WorkflowState("run-1", "checkout"))


@pytest.mark.postgres
def test_migrate_sql_applied_by_psql_or_a_driver_gives_postgres_the_same_schema(
    postgres_url: str, new_postgres_url: object, tmp_path: Path
) -> None:
    printed = planflow("migrate", "--sql", "--db", postgres_url, cwd=tmp_path)
    assert printed.code == 0, printed.err
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        assert conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchone() == (0,)
        conn.execute(printed.out.encode())  # pyright: ignore[reportArgumentType]
    status = planflow("status", "--db", postgres_url, "--json", cwd=tmp_path).json()
    assert (
        isinstance(status, dict) and status["schema_version"] == LATEST and status["pending_migrations"] == []
    )
    with open_provider(postgres_url) as provider:
        provider.workflows.upsert_state(WorkflowState("run-1", "checkout"))
        assert provider.migrate() == []


def test_migrate_history_lists_checksums_and_times_applied_and_pending(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with open_provider(sqlite_url(path)):
        pass
    with sqlite3.connect(path) as raw:  # as a store written before the newest migration
        raw.execute("DELETE FROM planflow_migrations WHERE version = ?", [LATEST])
    raw.close()
    files = load_migrations("sqlite")

    text = planflow("migrate", "--history", "--db", sqlite_url(path), cwd=tmp_path, env=NARROW)
    shown = planflow("migrate", "--history", "--db", sqlite_url(path), "--json", cwd=tmp_path).json()

    assert text.code == 0, text.err
    assert_fits(text.out)
    for migration in files:
        line = next(
            line for line in text.out.splitlines() if f" {migration.version:04d} {migration.name} " in line
        )
        assert migration.checksum[:16] in line
        assert ("pending" in line) == (migration.version == LATEST)
    assert isinstance(shown, list)
    assert [(m["version"], m["checksum"]) for m in shown] == [(m.version, m.checksum) for m in files]  # type: ignore[index]
    assert [m["applied_at"] is None for m in shown] == [False] * (LATEST - 1) + [True]  # type: ignore[index]


def test_config_shows_each_setting_and_where_it_came_from_without_the_password(tmp_path: Path) -> None:
    env = {
        "PLANFLOW_DB_HOST": "db.internal",
        "PLANFLOW_DB_PASSWORD": "hunter2",
        "PLANFLOW_DB_POOL_MAX_SIZE": "4",
        "PLANFLOW_DB_READ_URL": "postgresql://app:hunter2@standby/db",
    }
    from_env = planflow("config", "--json", cwd=tmp_path, env=env).json()
    given = planflow(
        "config",
        "--db",
        "postgresql://app:hunter2@h/db?sslmode=require&busy_timeout=3",
        "--json",
        cwd=tmp_path,
        env=env,
    ).json()
    default = planflow("config", cwd=tmp_path, env=NARROW)

    assert isinstance(from_env, dict) and isinstance(given, dict)
    assert from_env["pool_max_size"] == {"value": 4, "source": "PLANFLOW_DB_POOL_MAX_SIZE"}
    assert from_env["url"]["source"] == "PLANFLOW_DB_HOST, PLANFLOW_DB_PASSWORD"  # type: ignore[index]
    assert from_env["busy_timeout"] == {"value": 5.0, "source": "default"}
    assert from_env["read_url"] == {
        "value": "postgresql://app:***@standby/db",
        "source": "PLANFLOW_DB_READ_URL",
    }
    assert given["url"] == {"value": "postgresql://app:***@h/db?sslmode=require", "source": "--db URL"}
    assert given["busy_timeout"] == {"value": 3.0, "source": "--db URL (?busy_timeout=)"}
    assert given["pool_max_size"]["source"] == "default"  # type: ignore[index]
    assert default.code == 0 and "default (planflow.db in the current directory)" in default.out
    assert "hunter2" not in str(from_env) + str(given) + default.out
    assert_fits(default.out)
    assert os.listdir(tmp_path) == []  # nothing opened, nothing created
