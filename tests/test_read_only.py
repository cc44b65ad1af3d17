"""A provider opened ``read_only`` reads a store without changing it: no migration, no journal mode, no file
created; writes raise ``ReadOnlyError``; a store that holds data but no planflow schema raises
``ForeignStoreError`` and is left byte for byte as it was. On a real SQLite file and a real PostgreSQL schema."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from planflow import (
    ConfigError,
    ForeignStoreError,
    ReadOnlyError,
    TaskState,
    WorkflowState,
    open_async_provider,
    open_provider,
    resolve_config,
)
from planflow.config import config_from_env
from tests.support import fingerprint


def read_only(url: str) -> dict[str, object]:
    return {"url": url, "read_only": True}


def planflow_file(path: Path) -> Path:
    with open_provider(f"sqlite:///{path}") as provider:
        provider.workflows.upsert_state(WorkflowState("run-1", "checkout"))
        provider.tasks.upsert_state(TaskState("run-1/a", "a", "run-1", "checkout"))
    return path


def test_read_only_is_a_setting_of_the_mapping_the_url_and_the_environment() -> None:
    assert resolve_config({"url": "sqlite:///x.db", "read_only": True}).read_only
    assert resolve_config("sqlite:///x.db?read_only=true").read_only
    config = config_from_env({"PLANFLOW_DATABASE_URL": "sqlite:///x.db", "PLANFLOW_DB_READ_ONLY": "1"})
    assert config is not None and config.read_only
    assert not resolve_config("sqlite:///x.db").read_only
    with pytest.raises(ConfigError, match="setting 'read_only' must be bool"):
        resolve_config({"driver": "sqlite", "read_only": "perhaps"})


def test_a_wal_mode_planflow_file_is_read_and_left_unchanged_with_no_file_beside_it(tmp_path: Path) -> None:
    path = planflow_file(tmp_path / "state.db")
    before = fingerprint(path)
    assert before[0] == ["state.db"]

    with open_provider(read_only(f"sqlite:///{path}")) as provider:
        assert [w.workflow_exec_id for w in provider.workflows.list_states().items] == ["run-1"]
        assert provider.tasks.get_state("run-1/a").task_id == "a"
        assert all(m.applied_at is not None for m in provider.migration_status())

    assert fingerprint(path) == before
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_a_rollback_journal_planflow_file_keeps_its_journal_mode(tmp_path: Path) -> None:
    path = planflow_file(tmp_path / "state.db")
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA journal_mode = DELETE")
    before = fingerprint(path)

    with open_provider(read_only(f"sqlite:///{path}")) as provider:
        assert provider.workflows.get_state("run-1").tasks["a"].task_exec_id == "run-1/a"

    assert fingerprint(path) == before
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("delete",)


@pytest.mark.parametrize("how", ["sync", "async"])
def test_an_applications_own_sqlite_file_is_refused_and_left_byte_for_byte(tmp_path: Path, how: str) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        raw.execute("INSERT INTO orders (total) VALUES (9.5)")
    raw.close()
    before = fingerprint(path)

    with pytest.raises(ForeignStoreError, match=r"holds tables \(orders\) but no planflow schema") as refused:
        if how == "sync":
            open_provider(read_only(f"sqlite:///{path}"))
        else:
            asyncio.run(open_async_provider(read_only(f"sqlite:///{path}")))

    assert str(path) in str(refused.value) and "planflow migrate --force" in str(refused.value)
    assert isinstance(refused.value, ConfigError)
    assert (refused.value.location, refused.value.tables) == (str(path), ("orders",))
    assert fingerprint(path) == before


def test_a_missing_file_is_a_config_error_naming_it_and_nothing_is_created(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no SQLite file at '.*missing\.db' \(opened read-only"):
        open_provider(read_only(f"sqlite:///{tmp_path / 'missing.db'}"))
    assert os.listdir(tmp_path) == []


def test_a_file_that_is_not_a_sqlite_database_is_refused_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text('{"_default": {"1": {"note": "mine"}}}')
    before = fingerprint(path)

    with pytest.raises(ConfigError, match="is not a SQLite database"):
        open_provider(read_only(f"sqlite:///{path}"))
    assert fingerprint(path) == before


def test_an_empty_file_reads_as_a_store_without_schema_and_gets_no_table(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    before = fingerprint(path)

    with open_provider(read_only(f"sqlite:///{path}")) as provider:
        assert all(m.applied_at is None for m in provider.migration_status())

    assert fingerprint(path) == before and path.stat().st_size == 0


def test_writes_raise_read_only_error_and_the_engine_refuses_them_too(tmp_path: Path) -> None:
    path = planflow_file(tmp_path / "state.db")
    before = fingerprint(path)
    writes: list[Callable[..., object]] = []

    with open_provider(read_only(f"sqlite:///{path}")) as provider:
        writes = [
            lambda: provider.workflows.upsert_state(WorkflowState("run-2", "checkout")),
            lambda: provider.tasks.update_state(provider.tasks.get_state("run-1/a"), 1),
            lambda: provider.tasks.bulk_upsert([TaskState("run-1/b", "b", "run-1", "checkout")]),
            lambda: provider.auth.create_user("a@example.com"),
            lambda: provider.workflows.delete("run-1"),
            lambda: provider.tasks.delete_state("run-1/a"),
        ]
        for write in writes:
            with pytest.raises(ReadOnlyError, match="opened read-only"):
                write()
        with pytest.raises(ReadOnlyError), provider.transaction():
            pass
        # Below planflow's own check, the connection itself refuses to write.
        raw = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            raw.execute("DELETE FROM workflow_states")
        raw.close()

    assert fingerprint(path) == before


def test_auto_migrate_is_ignored_read_only_an_old_schema_stays_old(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as raw:
        # What migrate --sql printed and a DBA applied by hand, up to the first migration only.
        from planflow.infra.sql.migrations import load_migrations

        first = load_migrations("sqlite")[0]
        raw.executescript(first.sql)
        raw.execute(
            "CREATE TABLE planflow_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
            "checksum TEXT NOT NULL, applied_at TEXT NOT NULL) STRICT"
        )
        raw.execute(
            "INSERT INTO planflow_migrations VALUES (1, ?, ?, '2025-01-01T00:00:00.000000+00:00')",
            [first.name, first.checksum],
        )
    raw.close()
    before = fingerprint(path)

    with open_provider({"url": f"sqlite:///{path}", "read_only": True, "auto_migrate": True}) as provider:
        assert [m.version for m in provider.migration_status() if m.applied_at] == [1]
        with pytest.raises(ReadOnlyError):
            provider.migrate()

    assert fingerprint(path) == before


# PostgreSQL ---------------------------------------------------------------------------------------------------


def tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows]


@pytest.mark.postgres
@pytest.mark.parametrize("how", ["sync", "async"])
def test_a_postgres_schema_of_an_application_is_refused_and_untouched(postgres_url: str, how: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, total numeric)")
        conn.execute("INSERT INTO orders VALUES (1, 9.5)")

    with pytest.raises(ForeignStoreError, match=r"holds tables \(orders\) but no planflow schema"):
        if how == "sync":
            open_provider(read_only(postgres_url))
        else:
            asyncio.run(open_async_provider(read_only(postgres_url)))

    assert tables(postgres_url) == ["orders"]
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT id, total::text FROM orders").fetchall() == [(1, "9.5")]


@pytest.mark.postgres
def test_an_empty_postgres_schema_reads_as_a_store_without_schema_and_gets_no_table(
    postgres_url: str,
) -> None:
    with open_provider(read_only(postgres_url)) as provider:
        assert all(m.applied_at is None for m in provider.migration_status())

    assert tables(postgres_url) == []


@pytest.mark.postgres
def test_a_read_only_postgres_session_refuses_writes_in_planflow_and_on_the_server(postgres_url: str) -> None:
    with open_provider(postgres_url) as provider:
        provider.workflows.upsert_state(WorkflowState("run-1", "checkout"))

    with open_provider(read_only(postgres_url)) as provider:
        assert provider.workflows.get_state("run-1").workflow_id == "checkout"
        with pytest.raises(ReadOnlyError, match="opened read-only"):
            provider.workflows.upsert_state(WorkflowState("run-2", "checkout"))
        with pytest.raises(ReadOnlyError, match="opened read-only"), provider.transaction():
            pass
    # The session option itself: a write that went past planflow's check is refused by the server.
    from planflow.infra.drive import drive
    from planflow.infra.postgres.database import PostgresDatabase
    from planflow.infra.postgres.io import BLOCKING

    database = drive(PostgresDatabase(resolve_config(read_only(postgres_url)), BLOCKING).open())
    try:
        database.read_only = False
        with pytest.raises(ReadOnlyError, match="read-only transaction"):
            drive(database.fetch_one("DELETE FROM workflow_states RETURNING 1"))
    finally:
        drive(database.aclose())
    with open_provider(postgres_url) as provider:
        assert [w.workflow_exec_id for w in provider.workflows.list_states().items] == ["run-1"]
