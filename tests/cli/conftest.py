"""Fixtures of the command-line tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.helpers import add_auth_and_addon_data, planflow, sqlite_url


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    """A SQLite file holding one demo run (60 tasks), users, API keys and add-on data; never written by tests."""
    folder = tmp_path_factory.mktemp("demo")
    path = folder / "source.db"
    result = planflow(
        "demo", "--db", sqlite_url(path), "--tasks", "60", "--seed", "3", "--json", cwd=folder
    ).json()
    assert isinstance(result, dict)
    add_auth_and_addon_data(sqlite_url(path))
    return path, result
