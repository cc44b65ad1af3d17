"""PgBouncer in transaction-pooling mode in front of a private server, and a provider reached only through it.

A plugin (tests/conftest.py names it in ``pytest_plugins``), not fixtures of tests/faults/conftest.py: the
contract suites of tests/contract run on ``bounced_provider`` too (the ``pgbouncer`` row of
tests/contract/drivers.py), as does tests/faults/test_pgbouncer.py. The cluster and the bouncer start at the
first test that asks, once per pytest process, and stop when the session ends.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from planflow import Provider, open_provider
from tests.faults.cluster import Bouncer, Cluster


@pytest.fixture(scope="session")
def bouncer_cluster() -> Iterator[Cluster]:
    """A private server for the PgBouncer tests (no crash there: commits need not be durable)."""
    server = Cluster({"fsync": "off", "synchronous_commit": "off"})
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="session")
def bouncer(bouncer_cluster: Cluster) -> Iterator[Bouncer]:
    """PgBouncer in transaction-pooling mode in front of ``bouncer_cluster``."""
    front = Bouncer(bouncer_cluster.port)
    yield front
    front.stop()


@pytest.fixture(scope="session")
def bouncer_template(bouncer_cluster: Cluster) -> str:
    """A database migrated once (directly: tests/faults/test_pgbouncer.py migrates through the bouncer), which
    each test's database copies."""
    name = f"pf_template_{uuid.uuid4().hex[:8]}"
    bouncer_cluster.sql(f"CREATE DATABASE {name}")
    open_provider(bouncer_cluster.url(name)).close()
    return name


@pytest.fixture(scope="session")
def background() -> Iterator[ThreadPoolExecutor]:
    """A thread for clean-ups that no test waits for (dropping a used database); joined at the session's end."""
    with ThreadPoolExecutor(1, thread_name_prefix="test-cleanup") as executor:
        yield executor


@pytest.fixture
def bounced_provider(
    bouncer_cluster: Cluster, bouncer: Bouncer, bouncer_template: str, background: ThreadPoolExecutor
) -> Iterator[Provider]:
    """A provider on a database of its own (PgBouncer passes startup options such as ``search_path`` on to no
    one, so schemas cannot isolate tests here), a copy of the migrated template, reached only through the
    bouncer; dropped after the test, in the background."""
    name = f"pf_{uuid.uuid4().hex[:12]}"
    bouncer_cluster.sql(f"CREATE DATABASE {name} TEMPLATE {bouncer_template}")
    with open_provider(bouncer.url(name)) as provider:
        yield provider
    background.submit(bouncer_cluster.sql, f"DROP DATABASE {name} WITH (FORCE)")
