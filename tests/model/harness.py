"""Opening the long-lived providers the state machines walk, and emptying their stores between examples."""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import RuleBasedStateMachine, run_state_machine_as_test

from planflow import open_async_provider, open_provider
from tests.model.drivers import AsyncDriver, Driver, SyncDriver

#: Steps per driver in an ordinary run (CI: ``.ci/run``), and in a soak (``-m soak``; the figure can be changed
#: with ``PLANFLOW_MODEL_SOAK_STEPS``).
STEPS = 2000
SOAK_STEPS = int(os.environ.get("PLANFLOW_MODEL_SOAK_STEPS", "200000"))
#: Steps of one example: hypothesis starts each example from an empty store (on the same provider).
STEPS_PER_EXAMPLE = 50

#: Every planflow table with rows (not the migration records); emptied between examples.
TABLES = (
    "task_states",
    "workflow_states",
    "api_keys",
    "users",
    "planflow_metadata",
    "exec_executions",
    "exec_occurrences",
    "exec_tasks",
    "planflow_idempotency",
    "planflow_limit_claims",
    "planflow_limits",
    "planflow_history",
    "planflow_commits",
)

#: What the provider is opened with: one connection, so that every call of the test reuses it.
ONE_CONNECTION = {"pool_max_size": 1, "pool_min_size": 1}


def walk(machine: type[RuleBasedStateMachine], driver: Driver, steps: int) -> dict[str, int]:
    """Run ``machine`` on ``driver`` for ``steps`` steps in all (examples of at most :data:`STEPS_PER_EXAMPLE`,
    as many as it takes); how many steps were walked, and how often each rule ran."""
    walked: dict[str, int] = {}
    runner = type(
        f"{machine.__name__}On{driver.name.title()}", (machine,), {"driver": driver, "walked": walked}
    )
    run_state_machine_as_test(
        runner,
        settings=settings(
            # Examples run 35 to 45 steps on average (hypothesis stops some early; how many depends on the
            # machine and on where cancelled calls land): half as many examples again as an exact count would
            # need, and the test checks the steps it walked.
            max_examples=max(1, steps * 3 // (2 * STEPS_PER_EXAMPLE)),
            stateful_step_count=STEPS_PER_EXAMPLE,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            # Reproducible in CI (a failure is the same failure on the next run); a soak explores afresh.
            derandomize=steps < SOAK_STEPS,
            database=None,
            print_blob=True,
            # PLANFLOW_MODEL_SHRINK=0 reports a failure as found, without minimising it (quicker while debugging).
            phases=[
                p for p in Phase if p is not Phase.shrink or os.environ.get("PLANFLOW_MODEL_SHRINK") != "0"
            ],
        ),
    )
    return walked


def sqlite_reset(path: str) -> Callable[[], None]:
    def reset() -> None:
        with sqlite3.connect(path, timeout=30) as admin:
            admin.execute("PRAGMA foreign_keys = OFF")
            for table in TABLES:
                if table != "planflow_commits":  # PostgreSQL's only
                    admin.execute(f"DELETE FROM {table}")
        admin.close()

    return reset


#: How long emptying the store may wait for a lock before the walk fails, naming the sessions that hold it.
RESET_LOCK_TIMEOUT = "30s"


def postgres_reset(url: str) -> Callable[[], None]:
    """Empty the store's tables. Nothing may hold a lock on them between two examples: every call of the last
    one has returned, so a transaction still open is one the provider leaked, and the walk fails naming it."""

    def reset() -> None:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f"SET lock_timeout = '{RESET_LOCK_TIMEOUT}'")
            try:
                admin.execute(f"TRUNCATE {', '.join(TABLES)}")
            except psycopg.errors.LockNotAvailable:
                blockers = admin.execute(
                    "SELECT pid, state, xact_start, application_name, query FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL"
                ).fetchall()
                raise AssertionError(
                    f"a session holds the store's tables between examples: {blockers}"
                ) from None

    return reset


@contextmanager
def sync_driver(config: dict[str, object], reset: Callable[[], None]) -> Iterator[Driver]:
    provider = open_provider({**config, **ONE_CONNECTION})
    try:
        yield SyncDriver(provider, reset)
    finally:
        provider.close()


@contextmanager
def async_driver(config: dict[str, object], reset: Callable[[], None]) -> Iterator[Driver]:
    loop = asyncio.new_event_loop()
    provider = loop.run_until_complete(open_async_provider({**config, **ONE_CONNECTION}))
    driver = AsyncDriver(loop, provider, reset)
    try:
        yield driver
    finally:
        driver.close()
