"""The contract grid: every ``Test*`` class of tests/contract runs once per store of drivers.STORES serving its
``suite``, through the fixtures below (``store``: the row; ``provider`` or ``executions``: what it opened)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import pytest

from planflow import Provider
from planflow.protocols import ExecutionRepository
from tests.aio.adapter import LoopThread
from tests.contract.drivers import Store, StoreSpec, stores_serving


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize each test that uses a store with the rows serving its class's suite (never an empty set:
    a suite no row serves is refused by ``stores_serving``)."""
    if "store" not in metafunc.fixturenames:
        return
    suite = getattr(metafunc.cls, "suite", None)
    if not isinstance(suite, str):
        raise TypeError(f"{metafunc.definition.nodeid}: a contract test's class names its ``suite``")
    metafunc.parametrize("store", [spec.param() for spec in stores_serving(suite)], indirect=True)


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    """The event loop the asynchronous API's stores of a module are awaited on; closed with the module (a loop
    left for the garbage collector warns of itself in whichever test collects it)."""
    thread = LoopThread()
    yield thread
    thread.stop()
    if not thread.loop.is_running():
        thread.loop.close()


@pytest.fixture
def store(request: pytest.FixtureRequest) -> StoreSpec:
    """The row of drivers.STORES this test runs on."""
    spec: StoreSpec = request.param
    return spec


@pytest.fixture
def opened(store: StoreSpec, request: pytest.FixtureRequest) -> Iterator[Store]:
    """The store, open and empty; closed after the test."""
    with store.open(request) as opened:
        yield opened


@pytest.fixture
def provider(store: StoreSpec, opened: Store) -> Provider:
    """The store's provider (``SyncOverAsync`` on the asynchronous API)."""
    assert not store.repository_only, f"{store.id} opens an ExecutionRepository only"
    return cast(Provider, opened)


@pytest.fixture
def executions(store: StoreSpec, opened: Store) -> ExecutionRepository:
    """The store's ExecutionRepository: its provider's, or the repository it opened."""
    if store.repository_only:
        return cast(ExecutionRepository, opened)
    return cast(Provider, opened).executions
