"""Fixtures shared by every test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from planflow import Provider, open_provider

# The PostgreSQL server, its fixtures (postgres_server_url, new_postgres_url, postgres_url, postgres_provider),
# the --postgres-image option and the summary line naming the server used; PgBouncer's private server and
# bounced_provider (tests/faults/bouncer.py), for tests/faults and the contract suites' pgbouncer row.
pytest_plugins = ("tests.pg", "tests.faults.bouncer")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Leave the soaks (hours each) out of every run whose ``-m`` does not name them.

    The default ``-m 'not soak'`` of pyproject.toml is replaced, not extended, by any other ``-m``: CI's
    ``-m postgres`` once selected the 200 000-step soaks and ran until the job was killed.
    """
    if "soak" in (config.option.markexpr or ""):
        return
    kept = [item for item in items if item.get_closest_marker("soak") is None]
    if len(kept) < len(items):
        config.hook.pytest_deselected(items=[item for item in items if item.get_closest_marker("soak")])
        items[:] = kept


@pytest.fixture
def sqlite_file_provider(tmp_path: Path) -> Iterator[Provider]:
    """A Provider on a fresh SQLite file."""
    with open_provider(f"sqlite:///{tmp_path / 'planflow.db'}") as provider:
        yield provider


@pytest.fixture
def sqlite_memory_provider() -> Iterator[Provider]:
    """A Provider on a fresh in-memory SQLite database."""
    with open_provider("sqlite://:memory:") as provider:
        yield provider
