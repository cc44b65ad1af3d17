"""The model-based walks of the auth, metadata and execution repositories (``tests/model/accounts.py``,
``tests/model/addon.py``): on every driver that serves them, both APIs, one long-lived connection.

The account machine (users, API keys, metadata) walks SQLite and PostgreSQL; the execution machine (the
add-on's records, metadata beside them) walks SQLite, PostgreSQL and a TinyDB file. Each test walks at least
:data:`~tests.model.harness.STEPS` steps (2 000); ``-m soak`` walks :data:`~tests.model.harness.SOAK_STEPS`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis.stateful import RuleBasedStateMachine

from planflow import open_async_provider, open_provider
from tests.model.accounts import AccountMachine
from tests.model.addon import ExecutionMachine, empty_through_the_api
from tests.model.drivers import AsyncDriver, Driver
from tests.model.harness import ONE_CONNECTION, SOAK_STEPS, STEPS, postgres_reset, sqlite_reset, walk
from tests.model.test_model import APIS, report

Store = tuple[dict[str, object], Callable[[], None]]
MACHINES: dict[str, type[RuleBasedStateMachine]] = {
    "accounts": AccountMachine,
    "executions": ExecutionMachine,
}


def walked(machine: type[RuleBasedStateMachine], driver: Driver, steps: int) -> None:
    """Walk ``machine`` on ``driver`` and assert that it walked ``steps`` steps: hypothesis is asked for a
    quarter more, since it ends some examples early (how many depends on the machine's rules)."""
    report(walk(machine, driver, steps * 5 // 4), steps)


class Reopen:
    """Closes the provider of a driver and opens the store of ``config`` again in its place (for
    ``ExecutionMachine.reopen``); the test closes the last one it opened."""

    def __init__(self, config: dict[str, object]) -> None:
        self.config = {**config, **ONE_CONNECTION}

    def __call__(self, driver: Driver) -> None:
        if isinstance(driver, AsyncDriver):
            driver.loop.run_until_complete(driver.provider.aclose())
            driver.provider = driver.loop.run_until_complete(open_async_provider(self.config))
        else:
            driver.provider.close()
            driver.provider = open_provider(self.config)


def reopening(config: dict[str, object]) -> type[RuleBasedStateMachine]:
    """The execution machine with its ``reopen_the_store`` rule, on the store of ``config``."""
    return type("ReopenedExecutionMachine", (ExecutionMachine,), {"reopen": Reopen(config)})


class TinyDbReset:
    """Empties a TinyDB store through the provider of the test's driver (set once the driver is open): the
    store keeps its data parsed in memory, so it cannot be emptied from outside."""

    driver: Driver | None = None

    def __call__(self) -> None:
        assert self.driver is not None
        empty_through_the_api(self.driver)


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Store:
    path = str(tmp_path / "model.db")
    return {"url": f"sqlite:///{path}"}, sqlite_reset(path)


@pytest.fixture
def postgres_store(postgres_url: str) -> Store:
    return {"url": postgres_url}, postgres_reset(postgres_url)


@pytest.fixture
def tinydb_store(tmp_path: Path) -> tuple[dict[str, object], TinyDbReset]:
    return {"url": f"tinydb:///{tmp_path / 'model.json'}"}, TinyDbReset()


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("machine", MACHINES)
def test_repositories_walk_on_sqlite(machine: str, api: str, sqlite_store: Store) -> None:
    config, reset = sqlite_store
    with APIS[api](config, reset) as driver:
        walked(MACHINES[machine], driver, STEPS)


@pytest.mark.postgres
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("machine", MACHINES)
def test_repositories_walk_on_postgres(machine: str, api: str, postgres_store: Store) -> None:
    config, reset = postgres_store
    with APIS[api](config, reset) as driver:
        walked(MACHINES[machine], driver, STEPS)


@pytest.mark.parametrize("api", APIS)
def test_executions_and_metadata_walk_on_tinydb(
    api: str, tinydb_store: tuple[dict[str, object], TinyDbReset]
) -> None:
    config, reset = tinydb_store
    with APIS[api](config, reset) as driver:
        reset.driver = driver
        try:
            walked(reopening(config), driver, STEPS)
        finally:
            if (
                api == "sync"
            ):  # the provider last reopened (the async driver closes its own; twice is harmless)
                driver.provider.close()


@pytest.mark.soak
@pytest.mark.timeout(0)  # a soak runs for hours by design
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("machine", MACHINES)
def test_soak_repositories_on_sqlite(machine: str, api: str, sqlite_store: Store) -> None:
    config, reset = sqlite_store
    with APIS[api](config, reset) as driver:
        walked(MACHINES[machine], driver, SOAK_STEPS)


@pytest.mark.soak
@pytest.mark.timeout(0)  # a soak runs for hours by design
@pytest.mark.postgres
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("machine", MACHINES)
def test_soak_repositories_on_postgres(machine: str, api: str, postgres_store: Store) -> None:
    config, reset = postgres_store
    with APIS[api](config, reset) as driver:
        walked(MACHINES[machine], driver, SOAK_STEPS)


@pytest.mark.soak
@pytest.mark.timeout(0)  # a soak runs for hours by design
@pytest.mark.parametrize("api", APIS)
def test_soak_executions_and_metadata_on_tinydb(
    api: str, tinydb_store: tuple[dict[str, object], TinyDbReset]
) -> None:
    config, reset = tinydb_store
    with APIS[api](config, reset) as driver:
        reset.driver = driver
        try:
            walked(reopening(config), driver, SOAK_STEPS)
        finally:
            if api == "sync":
                driver.provider.close()
