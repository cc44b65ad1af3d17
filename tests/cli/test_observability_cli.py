"""``planflow status --pool`` and ``-v`` / ``-vv`` (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import planflow, sqlite_url


@pytest.mark.postgres
def test_status_pool_shows_size_in_use_and_waiting(postgres_url: str, tmp_path: Path) -> None:
    planflow("migrate", "--db", postgres_url, cwd=tmp_path)
    text = planflow("status", "--pool", "--db", postgres_url, cwd=tmp_path)
    assert text.code == 0, text.err
    for label in ("pool size", "pool in use", "pool idle", "pool waiting", "pool max size"):
        assert label in text.out
    shown = planflow("status", "--pool", "--json", "--db", postgres_url, cwd=tmp_path).json()
    assert isinstance(shown, dict)
    assert shown["driver"] == "postgres"
    pool = shown["pool"]
    assert isinstance(pool, dict)
    assert pool["pool_max"] == 10
    assert pool["pool_size"] >= 1
    assert pool["in_use"] == pool["pool_size"] - pool["pool_available"]
    assert pool["requests_waiting"] == 0


def test_status_pool_on_a_driver_without_a_pool_says_so(tmp_path: Path) -> None:
    db = sqlite_url(tmp_path / "s.db")
    planflow("migrate", "--db", db, cwd=tmp_path)
    text = planflow("status", "--pool", "--db", db, cwd=tmp_path)
    assert text.code == 0
    assert "the sqlite driver has no connection pool" in text.out
    shown = planflow("status", "--pool", "--json", "--db", db, cwd=tmp_path).json()
    assert shown == {"driver": "sqlite", "location": str(tmp_path / "s.db"), "pool": None}


def test_v_logs_migrations_and_vv_every_statement_to_stderr(tmp_path: Path) -> None:
    quiet = planflow("migrate", "--db", sqlite_url(tmp_path / "q.db"), cwd=tmp_path)
    assert "planflow.migrations" not in quiet.err
    info = planflow("-v", "migrate", "--db", sqlite_url(tmp_path / "i.db"), cwd=tmp_path)
    assert info.code == 0, info.err
    assert "INFO planflow.migrations: applied migration 0001_initial" in info.err
    assert "planflow.sqlite" not in info.err
    debug = planflow("-vv", "status", "--db", sqlite_url(tmp_path / "i.db"), cwd=tmp_path)
    assert debug.code == 0, debug.err
    assert "DEBUG planflow.sqlite: statement:" in debug.err
    assert "DEBUG planflow.sqlite" not in debug.out
