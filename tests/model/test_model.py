"""The model-based walks (see ``tests/model/machine.py``): every driver, both APIs, one long-lived connection.

Each test walks :data:`~tests.model.harness.STEPS` steps (2 000) of the state machine on one provider opened
for the whole test with a single pooled connection; ``-m soak`` walks :data:`~tests.model.harness.SOAK_STEPS`
(200 000) on SQLite and PostgreSQL, sync and async.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from tests.faults.cluster import Bouncer, Cluster
from tests.model.drivers import Driver
from tests.model.harness import (
    SOAK_STEPS,
    STEPS,
    async_driver,
    postgres_reset,
    sqlite_reset,
    sync_driver,
    walk,
)
from tests.model.machine import TaskMachine

Opener = Callable[[dict[str, object], Callable[[], None]], AbstractContextManager[Driver]]
APIS: dict[str, Opener] = {"sync": sync_driver, "async": async_driver}


def report(walked: dict[str, int], steps: int = STEPS) -> None:
    rules = ", ".join(f"{name} {count}" for name, count in sorted(walked.items()) if name != "steps")
    print(f"\n[model] {walked['steps']} steps; rules run: {rules}")
    assert walked["steps"] >= steps, f"walked {walked['steps']} steps, not the {steps} asked for"


@pytest.fixture
def sqlite_store(tmp_path: Path) -> tuple[dict[str, object], Callable[[], None]]:
    path = str(tmp_path / "model.db")
    return {"url": f"sqlite:///{path}"}, sqlite_reset(path)


@pytest.fixture
def postgres_store(postgres_url: str) -> tuple[dict[str, object], Callable[[], None]]:
    return {"url": postgres_url}, postgres_reset(postgres_url)


@pytest.mark.parametrize("api", APIS)
def test_tasks_and_workflows_walk_on_sqlite(
    api: str, sqlite_store: tuple[dict[str, object], Callable[[], None]]
) -> None:
    config, reset = sqlite_store
    with APIS[api](config, reset) as driver:
        report(walk(TaskMachine, driver, STEPS))


@pytest.mark.postgres
@pytest.mark.parametrize("api", APIS)
def test_tasks_and_workflows_walk_on_postgres(
    api: str, postgres_store: tuple[dict[str, object], Callable[[], None]]
) -> None:
    config, reset = postgres_store
    with APIS[api](config, reset) as driver:
        report(walk(TaskMachine, driver, STEPS))


@pytest.mark.postgres
@pytest.mark.parametrize("api", APIS)
def test_tasks_and_workflows_walk_on_postgres_with_reads_through_read_url(
    api: str, postgres_store: tuple[dict[str, object], Callable[[], None]]
) -> None:
    # read_url names the same server: every read outside a transaction goes through the standby routing
    # (planflow.infra.postgres.standbys) and its second pool; lag is proven in tests/faults/test_standby_reads.py.
    # A quarter of the walk: every read pays the routing's position check, and the machine's invariant reads every
    # workflow's history after each step; the full walk runs on the primary alone just above.
    config, reset = postgres_store
    with APIS[api]({**config, "read_url": config["url"]}, reset) as driver:
        report(walk(TaskMachine, driver, STEPS // 4), STEPS // 4)


@pytest.mark.soak
@pytest.mark.timeout(0)  # a soak runs for hours by design
@pytest.mark.parametrize("api", APIS)
def test_soak_on_sqlite(api: str, sqlite_store: tuple[dict[str, object], Callable[[], None]]) -> None:
    config, reset = sqlite_store
    with APIS[api](config, reset) as driver:
        report(walk(TaskMachine, driver, SOAK_STEPS), SOAK_STEPS)


@pytest.mark.soak
@pytest.mark.timeout(0)  # a soak runs for hours by design
@pytest.mark.postgres
@pytest.mark.parametrize("api", APIS)
def test_soak_on_postgres(api: str, postgres_store: tuple[dict[str, object], Callable[[], None]]) -> None:
    config, reset = postgres_store
    with APIS[api](config, reset) as driver:
        report(walk(TaskMachine, driver, SOAK_STEPS), SOAK_STEPS)


@pytest.fixture(scope="module")
def bounced_server() -> Iterator[tuple[Cluster, Bouncer]]:
    """A private server behind a real PgBouncer in transaction-pooling mode (its own: the shared server is
    not ours to put a bouncer in front of)."""
    server = Cluster({"fsync": "off", "synchronous_commit": "off"})
    server.start()
    try:
        front = Bouncer(server.port)
        try:
            yield server, front
        finally:
            front.stop()
    finally:
        server.destroy()


@pytest.mark.postgres
@pytest.mark.parametrize("api", APIS)
def test_tasks_and_workflows_walk_through_pgbouncer(
    api: str, bounced_server: tuple[Cluster, Bouncer]
) -> None:
    server, front = bounced_server
    name = f"pf_model_{uuid.uuid4().hex[:10]}"
    server.sql(f"CREATE DATABASE {name}")
    try:
        with APIS[api]({"url": front.url(name)}, postgres_reset(server.url(name))) as driver:
            report(walk(TaskMachine, driver, STEPS))
    finally:
        server.sql(f"DROP DATABASE {name} WITH (FORCE)")
