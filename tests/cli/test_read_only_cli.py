"""Every command opens the store for what it does ("Correct on every path", item 5): read commands never
migrate, never change a journal mode, never create a file; a database or file that holds data but no planflow
schema is refused by every command and left byte for byte as it was; ``migrate --force`` adopts it.

Real SQLite files and real PostgreSQL schemas; a file is compared by its SHA-256, its modification time and the
files beside it."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import psycopg
import pytest

from planflow import TaskState, WorkflowState, open_provider
from planflow.infra.sql.migrations import load_migrations
from tests.cli.helpers import planflow, sqlite_url
from tests.support import fingerprint

#: The schema version this planflow knows (the newest migration).
LATEST = len(load_migrations("sqlite"))

#: Every command that only reads, with what it needs after ``--db URL``.
READ_COMMANDS: list[list[str]] = [
    ["status"],
    ["status", "--json"],
    ["status", "--pool"],
    ["workflows"],
    ["workflows", "--json"],
    ["tasks"],
    ["tasks", "--stuck"],
    ["show", "run-1"],
    ["tree", "run-1"],
    ["purge", "--older-than", "1d", "--dry-run"],
    ["migrate", "--status"],
    ["migrate", "--history"],
    ["migrate", "--sql"],
]
#: Commands that write, refused on a foreign store.
WRITE_COMMANDS: list[list[str]] = [
    ["demo", "--tasks", "20"],
    ["migrate"],
    ["purge", "--older-than", "1d", "--yes"],
]


def run(command: list[str], url: str, cwd: Path) -> tuple[int, str]:
    done = planflow(*command[:1], "--db", url, *command[1:], cwd=cwd)
    return done.code, done.both


def foreign_sqlite(path: Path) -> Path:
    """An application's own database: its tables and rows, in rollback-journal mode."""
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        raw.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
        raw.execute("INSERT INTO orders (total) VALUES (9.5)")
    raw.close()
    return path


def planflow_sqlite(path: Path) -> Path:
    with open_provider(sqlite_url(path)) as provider:
        provider.workflows.upsert_state(WorkflowState("run-1", "checkout"))
        provider.tasks.upsert_state(TaskState("run-1/a", "a", "run-1", "checkout"))
    return path


@pytest.mark.parametrize("command", READ_COMMANDS + WRITE_COMMANDS, ids=" ".join)
def test_an_applications_sqlite_file_is_refused_by_every_command_and_left_byte_for_byte(
    tmp_path: Path, command: list[str]
) -> None:
    path = foreign_sqlite(tmp_path / "app.db")
    before = fingerprint(path)

    code, said = run(command, sqlite_url(path), tmp_path)

    assert code == 1, said
    assert "holds tables (customers, orders) but no planflow schema" in said
    assert "planflow migrate --force --db sqlite:///" in said and "Traceback" not in said
    assert fingerprint(path) == before


def test_copy_neither_reads_from_nor_writes_into_an_applications_sqlite_file(tmp_path: Path) -> None:
    app = foreign_sqlite(tmp_path / "app.db")
    mine = planflow_sqlite(tmp_path / "mine.db")
    before = fingerprint(app)

    into = planflow("copy", "--from", sqlite_url(mine), "--to", sqlite_url(app), cwd=tmp_path)
    out_of = planflow(
        "copy", "--from", sqlite_url(app), "--to", sqlite_url(tmp_path / "new.db"), cwd=tmp_path
    )

    assert into.code == 1 and "holds tables (customers, orders)" in into.err
    assert out_of.code == 1 and "holds tables (customers, orders)" in out_of.err
    assert fingerprint(app)[1:] == before[1:] and not (tmp_path / "new.db").exists()


def test_migrate_force_adopts_an_applications_file_keeping_its_tables_and_rows(tmp_path: Path) -> None:
    path = foreign_sqlite(tmp_path / "app.db")

    adopted = planflow("migrate", "--force", "--db", sqlite_url(path), cwd=tmp_path)
    listed = planflow("workflows", "--db", sqlite_url(path), "--json", cwd=tmp_path)

    assert adopted.code == 0, adopted.err
    assert f"Applied {LATEST} migrations" in adopted.out
    assert listed.code == 0 and json.loads(listed.out) == []
    with sqlite3.connect(path) as raw:
        assert raw.execute("SELECT total FROM orders").fetchall() == [(9.5,)]
    raw.close()


def test_migrate_sql_force_prints_what_adopting_an_applications_file_would_run_and_changes_nothing(
    tmp_path: Path,
) -> None:
    path = foreign_sqlite(tmp_path / "app.db")
    before = fingerprint(path)

    printed = planflow("migrate", "--sql", "--force", "--db", sqlite_url(path), cwd=tmp_path)

    assert printed.code == 0, printed.err
    assert "CREATE TABLE IF NOT EXISTS planflow_migrations" in printed.out
    assert fingerprint(path) == before


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_read_commands_leave_a_planflow_file_byte_for_byte_in_either_journal_mode(
    tmp_path: Path, journal: str
) -> None:
    path = planflow_sqlite(tmp_path / "state.db")
    if journal == "delete":
        with sqlite3.connect(path) as raw:
            raw.execute("PRAGMA journal_mode = DELETE")
        raw.close()
    before = fingerprint(path)
    assert before[0] == ["state.db"]

    for command in READ_COMMANDS:
        code, said = run(command, sqlite_url(path), tmp_path)
        assert code == 0, (command, said)
        assert fingerprint(path) == before, command

    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == (journal,)
    raw.close()


def test_a_missing_file_stays_missing_after_every_read_command(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "nothing.db")
    for command in READ_COMMANDS:
        code, said = run(command, url, tmp_path)
        if command[:2] in (["migrate", "--status"], ["migrate", "--history"], ["migrate", "--sql"]):
            assert code == 0, (command, said)  # every migration pending: nothing to read
        else:
            assert code == 1 and "no sqlite store at" in said, (command, said)
    assert os.listdir(tmp_path) == []


def test_an_empty_file_lists_as_an_empty_store_and_stays_empty(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    before = fingerprint(path)

    workflows = planflow("workflows", "--db", sqlite_url(path), "--json", cwd=tmp_path)
    tasks = planflow("tasks", "--db", sqlite_url(path), "--json", cwd=tmp_path)
    status = planflow("status", "--db", sqlite_url(path), "--json", cwd=tmp_path)
    dry_run = planflow(
        "purge", "--older-than", "1d", "--dry-run", "--db", sqlite_url(path), "--json", cwd=tmp_path
    )

    assert json.loads(workflows.out) == [] and json.loads(tasks.out) == []
    assert json.loads(status.out)["schema_version"] == 0
    assert json.loads(dry_run.out)["workflows"] == 0
    assert fingerprint(path) == before


# PostgreSQL ---------------------------------------------------------------------------------------------------


def pg_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.postgres
def test_an_applications_postgres_schema_is_refused_by_every_command_and_untouched(
    postgres_url: str, tmp_path: Path
) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO orders VALUES (1, 9.5)")

    for command in READ_COMMANDS + WRITE_COMMANDS:
        code, said = run(command, postgres_url, tmp_path)
        assert code == 1, (command, said)
        assert "holds tables (orders) but no planflow schema" in said, command

    assert pg_tables(postgres_url) == ["orders"]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT id, total::text FROM orders").fetchall() == [(1, "9.5")]
    adopted = planflow("migrate", "--force", "--db", postgres_url, cwd=tmp_path)
    assert adopted.code == 0, adopted.err
    assert "orders" in pg_tables(postgres_url) and "task_states" in pg_tables(postgres_url)


@pytest.mark.postgres
def test_an_empty_postgres_schema_gets_no_table_from_any_read_command(
    postgres_url: str, tmp_path: Path
) -> None:
    for command in READ_COMMANDS:
        code, said = run(command, postgres_url, tmp_path)
        if command[0] in ("show", "tree"):
            assert code == 1 and "no workflow or task with exec id 'run-1'" in said, (command, said)
        else:
            assert code == 0, (command, said)
    listed = planflow("workflows", "--db", postgres_url, "--json", cwd=tmp_path)

    assert json.loads(listed.out) == []
    assert pg_tables(postgres_url) == []


# TinyDB -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [c for c in READ_COMMANDS if c[0] not in ("migrate",)], ids=" ".join)
def test_a_foreign_json_file_is_refused_by_every_read_command_with_no_file_beside_it(
    tmp_path: Path, command: list[str]
) -> None:
    path = tmp_path / "settings.json"
    path.write_text('{"theme": "dark", "recent": ["a.txt", "b.txt"]}')
    before = fingerprint(path)

    code, said = run(command, f"tinydb:///{path}", tmp_path)

    assert code == 1, said
    assert "planflow schema" in said or "not a TinyDB" in said
    assert fingerprint(path) == before
