"""Fixtures of the fault tests: private clusters that the tests stop, restart and kill (never the shared one).

The PgBouncer fixtures are in tests/faults/bouncer.py, a plugin: the contract suites use them too.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.cluster import Cluster


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A private server for one test module, with durable commits (fsync on)."""
    server = Cluster()
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def slow_commit_cluster() -> Iterator[Cluster]:
    """A private server whose every COMMIT waits 20 ms inside its critical section (``commit_delay``).

    A backend terminated during that wait commits first and dies after: the client loses the reply of a
    COMMIT that did commit, the case a retry would apply twice.
    """
    server = Cluster({"commit_delay": "20000", "commit_siblings": "0"})
    server.start()
    yield server
    server.destroy()
