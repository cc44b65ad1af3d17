"""The migration runner, on real SQLite files (Postgres runs the same runner in tests/postgres)."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from planflow import MigrationError, PlanflowConfig, SchemaTooNewError, open_provider
from planflow.infra.sql.migrations import load_migrations


def test_every_driver_has_the_same_numbered_migrations() -> None:
    sqlite = [(m.version, m.name) for m in load_migrations("sqlite")]
    postgres = [(m.version, m.name) for m in load_migrations("postgres")]
    assert sqlite == postgres
    assert [v for v, _ in sqlite] == list(range(1, len(sqlite) + 1))


def test_migrate_twice_is_a_no_op(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'm.db'}"
    with open_provider(url) as provider:
        assert provider.migrate() == []
        statuses = provider.migration_status()
        assert all(s.applied_at is not None for s in statuses)
    with open_provider(url) as provider:
        assert provider.migrate() == []
    raw = sqlite3.connect(tmp_path / "m.db")
    assert raw.execute("SELECT count(*) FROM planflow_migrations").fetchone()[0] == len(
        load_migrations("sqlite")
    )


def test_without_auto_migrate_migrations_stay_pending_until_asked(tmp_path: Path) -> None:
    config = PlanflowConfig(driver="sqlite", path=str(tmp_path / "p.db"), auto_migrate=False)
    with open_provider(config) as provider:
        assert all(s.applied_at is None for s in provider.migration_status())
        applied = provider.migrate()
        assert [m.version for m in applied] == [m.version for m in load_migrations("sqlite")]
        assert all(s.applied_at is not None for s in provider.migration_status())


def test_an_edited_applied_migration_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "edited.db"
    with open_provider(f"sqlite:///{path}"):
        pass
    raw = sqlite3.connect(path)
    # The same as editing 0001 after it was applied: the recorded checksum no longer matches the file.
    raw.execute("UPDATE planflow_migrations SET checksum = ? WHERE version = 1", ["0" * 64])
    raw.commit()
    raw.close()
    with pytest.raises(MigrationError, match=r"0001_initial\.sql was edited"):
        open_provider(f"sqlite:///{path}")


def test_a_schema_newer_than_the_code_is_refused_naming_both_versions(tmp_path: Path) -> None:
    path = tmp_path / "newer.db"
    with open_provider(f"sqlite:///{path}"):
        pass
    raw = sqlite3.connect(path)
    raw.execute(
        "INSERT INTO planflow_migrations (version, name, checksum, applied_at) VALUES (99, 'future', 'x', '2030-01-01T00:00:00.000000+00:00')"
    )
    raw.commit()
    raw.close()
    code = len(load_migrations("sqlite"))
    with pytest.raises(
        SchemaTooNewError, match=f"version 99 is newer than this planflow's version {code}"
    ) as info:
        open_provider(f"sqlite:///{path}")
    assert (info.value.database_version, info.value.code_version) == (99, code)


def test_a_failing_migration_keeps_nothing(tmp_path: Path) -> None:
    path = tmp_path / "broken.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE workflow_states (x INTEGER)")  # makes 0001 fail half-way
    raw.commit()
    raw.close()
    with pytest.raises(MigrationError, match=r"0001_initial\.sql failed"):
        open_provider(f"sqlite:///{path}")
    raw = sqlite3.connect(path)
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    raw.close()
    assert "task_states" not in tables


def _open(url: str) -> None:
    with open_provider(url):
        pass


def test_processes_opening_an_empty_file_at_once_apply_each_migration_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_open, args=(url,)) for _ in range(4)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    raw = sqlite3.connect(tmp_path / "race.db")
    versions = [r[0] for r in raw.execute("SELECT version FROM planflow_migrations ORDER BY version")]
    raw.close()
    assert versions == [m.version for m in load_migrations("sqlite")]
