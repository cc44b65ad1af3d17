"""Listeners: one event per repository call (every method of every Protocol, every driver, both APIs), per
retry, conflict and pool wait; a listener that raises never breaks a call; no listener means no wrapper."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from planflow import (
    AsyncProvider,
    ConfigError,
    ConflictError,
    ConflictEvent,
    Event,
    NotFoundError,
    OperationEvent,
    PoolWaitEvent,
    Provider,
    RetryEvent,
    TaskState,
    TransientError,
    WorkflowState,
    open_async_provider,
    open_provider,
)
from planflow.infra.sql.tasks import SqlTaskRepository
from tests.observability.calls import (
    ATTRIBUTES,
    World,
    call_async,
    call_sync,
    public_methods,
    repository_protocols,
)

DRIVERS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "tinydb"]


@pytest.fixture(params=DRIVERS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        made: str = request.getfixturevalue("postgres_url")
        return made
    if request.param == "tinydb":
        return "tinydb://memory"
    return f"sqlite:///{tmp_path / 'obs.db'}"


def _served(provider: Provider | AsyncProvider) -> dict[str, type]:
    served: dict[str, type] = {}
    for name, protocol in repository_protocols().items():
        attribute = ATTRIBUTES[name]
        if provider.driver == "tinydb" and attribute not in ("executions", "metadata"):
            continue
        served[attribute] = protocol
    return served


def test_every_repository_protocol_is_known_to_the_coverage_test() -> None:
    assert set(repository_protocols()) == set(ATTRIBUTES)


def _prepare(provider: Provider, world: World) -> None:
    if provider.driver != "tinydb":
        provider.workflows.upsert_state(WorkflowState(world.workflow, "wf"))
        provider.tasks.upsert_state(TaskState(world.task, "t", world.workflow, "wf"))


def test_every_method_of_every_repository_reports_one_event(url: str) -> None:
    events: list[Event] = []
    world = World()
    with open_provider(url, listeners=[events.append]) as provider:
        _prepare(provider, world)
        for attribute, protocol in _served(provider).items():
            repository = getattr(provider, attribute)
            for name in public_methods(protocol):
                before = len(events)
                call_sync(repository, protocol, name, world)
                reported = [e for e in events[before:] if isinstance(e, OperationEvent) and e.method == name]
                assert len(reported) == 1, f"{attribute}.{name}: {events[before:]}"
                assert reported[0].repository == attribute
                assert reported[0].driver == provider.driver
                assert reported[0].duration_s >= 0


def test_every_method_of_every_async_repository_reports_one_event(url: str) -> None:
    async def main() -> None:
        events: list[Event] = []
        world = World()
        async with await open_async_provider(url, listeners=[events.append]) as provider:
            if provider.driver != "tinydb":
                await provider.workflows.upsert_state(WorkflowState(world.workflow, "wf"))
                await provider.tasks.upsert_state(TaskState(world.task, "t", world.workflow, "wf"))
            for attribute, protocol in _served(provider).items():
                repository = getattr(provider, attribute)
                for name in public_methods(protocol):
                    before = len(events)
                    await call_async(repository, protocol, name, world)
                    reported = [
                        e for e in events[before:] if isinstance(e, OperationEvent) and e.method == name
                    ]
                    assert len(reported) == 1, f"{attribute}.{name}: {events[before:]}"
                    assert reported[0].repository == attribute

    asyncio.run(main())


def test_operation_event_carries_rows_outcome_and_error_class(sqlite_file_provider: Provider) -> None:
    events: list[Event] = []
    url = f"sqlite:///{sqlite_file_provider.config.location}"
    with open_provider(url, listeners=[events.append]) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-rows", "wf"))
        provider.tasks.bulk_upsert(TaskState(f"tx-rows-{i}", "t", "wf-rows", "wf") for i in range(3))
        provider.tasks.list_by_ids(["tx-rows-0", "tx-rows-1", "missing"])
        with pytest.raises(NotFoundError):
            provider.tasks.get_state("tx-secret-id")
    ops = [e for e in events if isinstance(e, OperationEvent)]
    assert [(e.method, e.rows, e.outcome, e.error) for e in ops] == [
        ("upsert_state", 1, "ok", None),
        ("bulk_upsert", 3, "ok", None),
        ("list_by_ids", 2, "ok", None),
        ("get_state", None, "error", "NotFoundError"),
    ]


@pytest.mark.parametrize("driver", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_stale_version_reports_a_conflict_event(driver: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("postgres_url") if driver == "postgres" else "sqlite://:memory:"
    events: list[Event] = []
    with open_provider(url, listeners=[events.append]) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-c", "wf"))
        state = provider.tasks.upsert_state(TaskState("tx-c", "t", "wf-c", "wf"))
        with pytest.raises(ConflictError):
            provider.tasks.update_state(state, state.version + 5)
    conflicts = [e for e in events if isinstance(e, ConflictEvent)]
    assert conflicts == [ConflictEvent("tasks", "update_state", provider.driver, state.version + 5, 1)]


def test_a_busy_sqlite_file_reports_each_retry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "busy.db"
    events: list[Event] = []
    config = {
        "path": str(path),
        "busy_timeout": 0.01,
        "retry": {"max_attempts": 3, "base_delay": 0.001, "max_delay": 0.002},
    }
    with open_provider(config, listeners=[events.append]) as provider:
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with caplog.at_level(logging.WARNING, logger="planflow.retry"), pytest.raises(TransientError):
                provider.workflows.upsert_state(WorkflowState("wf-busy", "wf"))
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    retries = [e for e in events if isinstance(e, RetryEvent)]
    assert [(e.driver, e.attempt, e.cause) for e in retries] == [
        ("sqlite", 1, "TransientError"),
        ("sqlite", 2, "TransientError"),
    ]
    warned = [r for r in caplog.records if r.name == "planflow.retry"]
    assert [r.levelno for r in warned] == [logging.WARNING, logging.WARNING]
    assert [getattr(r, "planflow_attempt", None) for r in warned] == [1, 2]
    assert all(getattr(r, "planflow_delay", -1) >= 0 for r in warned)
    assert [getattr(r, "planflow_cause", None) for r in warned] == ["TransientError", "TransientError"]


def test_run_in_transaction_reports_its_retries(tmp_path: Path) -> None:
    events: list[Event] = []
    attempts: list[int] = []
    with open_provider(f"sqlite:///{tmp_path / 'tx.db'}", listeners=[events.append]) as provider:

        def work(tx: object) -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise TransientError("try again")

        provider.run_in_transaction(work)
    assert [e.attempt for e in events if isinstance(e, RetryEvent)] == [1, 2]


@pytest.mark.postgres
def test_a_full_pool_reports_pool_waits(postgres_url: str) -> None:
    events: list[Event] = []
    lock = threading.Lock()

    def listener(event: Event) -> None:
        with lock:
            events.append(event)

    with open_provider(
        {"url": postgres_url, "pool_min_size": 1, "pool_max_size": 1}, listeners=[listener]
    ) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-pool", "wf"))
        with provider.transaction():  # holds the only connection
            provider.workflows.get_state("wf-pool")
            waiter = threading.Thread(target=lambda: provider.workflows.get_state("wf-pool"))
            waiter.start()
            waiter.join(0.3)
        waiter.join(5)
    waits = [e for e in events if isinstance(e, PoolWaitEvent)]
    assert len(waits) == 1
    assert waits[0].driver == "postgres"
    assert waits[0].duration >= 0.2


def _raising(event: Event) -> None:
    raise RuntimeError("listener bug")


@pytest.mark.parametrize("driver", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), "tinydb"])
def test_a_listener_that_raises_is_logged_and_the_call_succeeds(
    driver: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    url = {"sqlite": "sqlite://:memory:", "tinydb": "tinydb://memory"}.get(driver) or str(
        request.getfixturevalue("postgres_url")
    )
    heard: list[Event] = []
    with (
        caplog.at_level(logging.WARNING, logger="planflow.observe"),
        open_provider(url, listeners=[_raising, heard.append]) as provider,
    ):
        provider.metadata.set("k", "v")
        assert provider.metadata.get("k") == "v"
    assert [e.method for e in heard if isinstance(e, OperationEvent)] == ["set", "get"]
    warnings = [r for r in caplog.records if r.name == "planflow.observe"]
    assert len(warnings) == 2
    assert all(r.levelno == logging.WARNING and "RuntimeError" in r.getMessage() for r in warnings)


def test_async_listener_that_raises_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> str | None:
        async with await open_async_provider("sqlite://:memory:", listeners=[_raising]) as provider:
            await provider.metadata.set("k", "v")
            return await provider.metadata.get("k")

    with caplog.at_level(logging.WARNING, logger="planflow.observe"):
        assert asyncio.run(main()) == "v"
    assert len([r for r in caplog.records if r.name == "planflow.observe"]) == 2


def _chain(repository: object) -> list[str]:
    """The classes a call passes through, from the API's adapter down to the core."""
    names: list[str] = []
    while repository is not None:
        names.append(type(repository).__name__)
        repository = getattr(repository, "_core", None)
    return names


def test_without_listeners_the_repositories_are_not_wrapped() -> None:
    with open_provider("sqlite://:memory:") as plain:
        assert _chain(plain.tasks) == ["SyncTasks", "CheckedTasks", SqlTaskRepository.__name__]
    with open_provider("sqlite://:memory:", listeners=[lambda event: None]) as observed:
        assert _chain(observed.tasks) == ["SyncTasks", "ObservedTasks", "CheckedTasks", "SqlTaskRepository"]
    with open_provider("tinydb://memory") as tiny:
        assert _chain(tiny.executions) == ["SyncExecutions", "CheckedExecutions", "TinyDbExecutions"]


def test_without_listeners_the_async_repositories_are_not_wrapped() -> None:
    async def main() -> tuple[str, str]:
        async with await open_async_provider("sqlite://:memory:") as plain:
            bare = type(plain.tasks).__name__
        async with await open_async_provider("sqlite://:memory:", listeners=[print]) as observed:
            wrapped = type(observed.tasks).__name__
        return bare, wrapped

    assert asyncio.run(main()) == ("ThreadedTasks", "ObservedTasks")


@pytest.mark.parametrize("listeners", [[1], "print", print])
def test_listeners_that_are_not_callables_are_a_config_error(listeners: object) -> None:
    with pytest.raises(ConfigError, match="listener"):
        open_provider("sqlite://:memory:", listeners=listeners)  # type: ignore[arg-type]


def test_listeners_do_not_import_opentelemetry() -> None:
    code = (
        "import sys; from planflow import open_provider\n"
        "with open_provider('sqlite://:memory:', listeners=[lambda e: None]) as p: p.metadata.items()\n"
        "assert not any(m.startswith('opentelemetry') for m in sys.modules), 'opentelemetry imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_early_stop_of_an_iterator_reports_what_was_taken(sqlite_memory_provider: Provider) -> None:
    events: list[Event] = []
    with open_provider("sqlite://:memory:", listeners=[events.append]) as provider:
        provider.workflows.upsert_state(WorkflowState("wf-it", "wf"))
        provider.tasks.bulk_upsert(TaskState(f"tx-it-{i}", "t", "wf-it", "wf") for i in range(5))
        items = provider.tasks.iter_states(batch_size=2)
        taken = [next(items), next(items)]
        items.close()  # type: ignore[attr-defined]
    assert len(taken) == 2
    (event,) = [e for e in events if isinstance(e, OperationEvent) and e.method == "iter_states"]
    assert (event.rows, event.outcome) == (2, "ok")
