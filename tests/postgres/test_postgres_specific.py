"""PostgreSQL-specific behaviour on a real server: concurrency, row locks, concurrent migrations, lost
connections, connection failures and the translation of server errors.

Measurements (conflicts, waits, timings) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import multiprocessing
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from multiprocessing.synchronize import Barrier as ProcessBarrier
from queue import Queue
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest

from planflow import (
    ConfigError,
    ConflictError,
    DuplicateError,
    PlanflowConfig,
    PlanflowError,
    Provider,
    Role,
    TaskState,
    TransientError,
    UsageEntry,
    UsageSummary,
    User,
    ValidationError,
    WorkflowState,
    open_provider,
)
from planflow.infra.sql.database import ForeignKeyViolation
from planflow.infra.sql.migrations import TABLE, load_migrations
from tests.driven import SyncConnection, database, logged_statements
from tests.pg import url_with_password, with_database, with_login, with_query

pytestmark = pytest.mark.postgres

THREADS = 16
PROCESSES = 4
ATTEMPTS_PER_WORKER = 25


def report(message: str) -> None:
    print(f"\n[postgres] {message}")


@pytest.fixture
def admin(postgres_server_url: str) -> Iterator[psycopg.Connection[Any]]:
    """A separate autocommit connection to the server, for watching and killing the provider's backends."""
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        yield conn


@pytest.fixture
def app_name() -> str:
    """A unique application_name: the backends of the test's provider, and only those, carry it."""
    return f"planflow-test-{uuid.uuid4().hex[:12]}"


def backends(admin: psycopg.Connection[Any], app_name: str, state: str | None = None) -> list[int]:
    sql = "SELECT pid FROM pg_stat_activity WHERE application_name = %s"
    params: list[str] = [app_name]
    if state is not None:
        sql += " AND state = %s"
        params.append(state)
    return sorted(row[0] for row in admin.execute(sql, params).fetchall())


def terminate(admin: psycopg.Connection[Any], pids: list[int]) -> None:
    """Kill backends and wait until they are gone (pg_terminate_backend with a timeout waits for the exit)."""
    for pid in pids:
        assert admin.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone() == (True,)


def counter_task(provider: Provider) -> TaskState:
    wf = provider.workflows.upsert_state(WorkflowState(f"wf-{uuid.uuid4().hex[:8]}", "counting"))
    return provider.tasks.upsert_state(
        TaskState(
            f"counter-{uuid.uuid4().hex[:8]}", "count", wf.workflow_exec_id, wf.workflow_id, input={"n": 0}
        )
    )


def optimistic_increments(
    provider: Provider, task_exec_id: str, start: Callable[[], object]
) -> tuple[int, int]:
    """Read, increment the JSON counter, write with the version read; return (successes, conflicts)."""
    successes = conflicts = 0
    start()
    for _ in range(ATTEMPTS_PER_WORKER):
        state = provider.tasks.get_state(task_exec_id)
        assert state.input is not None
        count = state.input["n"]
        assert isinstance(count, int)
        try:
            provider.tasks.update_state(state.evolve(input={"n": count + 1}), expected_version=state.version)
        except ConflictError as exc:
            conflict = exc
        else:
            successes += 1
            continue
        conflicts += 1
        assert conflict.expected == state.version
        assert conflict.actual is not None and conflict.actual > state.version
    return successes, conflicts


def assert_no_lost_update(
    provider: Provider, task_exec_id: str, successes: int, conflicts: int, workers: int
):
    final = provider.tasks.get_state(task_exec_id)
    assert successes + conflicts == workers * ATTEMPTS_PER_WORKER
    assert final.version == 1 + successes, "an update was lost or a conflict went unreported"
    assert final.input == {"n": successes}, "an increment was lost"
    assert conflicts > 0, "no contention happened: the test proved nothing"


# Optimistic locking --------------------------------------------------------------------------------------


def test_optimistic_locking_from_16_threads_loses_no_update_and_reports_every_conflict(
    postgres_url: str,
) -> None:
    with open_provider(with_query(postgres_url, pool_max_size=str(THREADS))) as provider:
        task = counter_task(provider)
        barrier = threading.Barrier(THREADS)
        results: Queue[tuple[int, int]] = Queue()

        def worker() -> None:
            results.put(optimistic_increments(provider, task.task_exec_id, lambda: barrier.wait(30)))

        started = time.perf_counter()
        threads = [threading.Thread(target=worker) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.perf_counter() - started
        outcomes = [results.get_nowait() for _ in range(results.qsize())]
        assert len(outcomes) == THREADS, "a worker thread failed"
        successes = sum(s for s, _ in outcomes)
        conflicts = sum(c for _, c in outcomes)
        assert_no_lost_update(provider, task.task_exec_id, successes, conflicts, THREADS)
        report(
            f"optimistic locking, {THREADS} threads x {ATTEMPTS_PER_WORKER}: {successes} writes, "
            f"{conflicts} conflicts reported, {elapsed:.2f}s"
        )


def _increment_in_process(
    url: str, task_exec_id: str, barrier: ProcessBarrier, results: multiprocessing.Queue[object]
) -> None:
    try:
        with open_provider(url) as provider:
            results.put(optimistic_increments(provider, task_exec_id, lambda: barrier.wait(60)))
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")
        raise


def test_optimistic_locking_from_4_processes_loses_no_update_and_reports_every_conflict(
    postgres_provider: Provider, postgres_url: str
) -> None:
    task = counter_task(postgres_provider)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results: multiprocessing.Queue[object] = context.Queue()
    processes = [
        context.Process(
            target=_increment_in_process, args=(postgres_url, task.task_exec_id, barrier, results)
        )
        for _ in range(PROCESSES)
    ]
    started = time.perf_counter()
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    elapsed = time.perf_counter() - started
    assert all(isinstance(o, tuple) for o in outcomes), outcomes
    pairs: list[tuple[int, int]] = outcomes  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
    successes = sum(s for s, _ in pairs)
    conflicts = sum(c for _, c in pairs)
    assert_no_lost_update(postgres_provider, task.task_exec_id, successes, conflicts, PROCESSES)
    report(
        f"optimistic locking, {PROCESSES} processes x {ATTEMPTS_PER_WORKER}: {successes} writes, "
        f"{conflicts} conflicts reported, {elapsed:.2f}s including process start-up"
    )


# Row locks ------------------------------------------------------------------------------------------------


def test_get_state_for_update_blocks_a_second_transaction_until_the_first_commits(
    postgres_url: str, admin: psycopg.Connection[Any], app_name: str
) -> None:
    with open_provider(with_query(postgres_url, application_name=app_name)) as provider:
        task = counter_task(provider)
        first_locked = threading.Event()
        released_at: list[float] = []
        second: dict[str, Any] = {}
        seen_waiting: list[int] = []

        def first() -> None:
            with provider.transaction() as tx:
                state = tx.tasks.get_state_for_update(task.task_exec_id)
                tx.tasks.upsert_state(state.evolve(input={"n": 1, "writer": "first"}))
                first_locked.set()
                # The server, not a sleep, says when the second transaction is blocked on our row lock.
                deadline = time.monotonic() + 10
                while not seen_waiting and time.monotonic() < deadline:
                    seen_waiting.extend(
                        row[0]
                        for row in admin.execute(
                            "SELECT pid FROM pg_stat_activity WHERE application_name = %s "
                            "AND wait_event_type = 'Lock' AND state = 'active'",
                            [app_name],
                        ).fetchall()
                    )
                    time.sleep(0.005)
                time.sleep(0.1)  # the second keeps waiting while we still hold the lock
                released_at.append(time.monotonic())

        def then_second() -> None:
            first_locked.wait(10)
            asked = time.monotonic()
            with provider.transaction() as tx:
                state = tx.tasks.get_state_for_update(task.task_exec_id)
                second["acquired"] = time.monotonic()
                second["asked"] = asked
                second["state"] = state

        threads = [threading.Thread(target=first), threading.Thread(target=then_second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    assert seen_waiting, "the server never showed the second transaction waiting for the row lock"
    assert second["acquired"] > released_at[0], (
        "the second transaction got the row before the first committed"
    )
    assert second["state"].input == {"n": 1, "writer": "first"}, "the second did not see the first's commit"
    assert second["state"].version == 2
    report(
        f"FOR UPDATE: second transaction waited {second['acquired'] - second['asked']:.3f}s and acquired the row "
        f"{(second['acquired'] - released_at[0]) * 1000:.1f} ms after the first began to commit"
    )


def test_deadlock_between_two_units_of_work_is_retried_and_both_commit(postgres_provider: Provider) -> None:
    provider = postgres_provider
    a, b = counter_task(provider), counter_task(provider)
    barrier = threading.Barrier(2)
    attempts: list[str] = []
    errors: list[BaseException] = []

    def unit(first: TaskState, second: TaskState) -> None:
        def work(tx: Any) -> None:
            attempts.append(first.task_exec_id)
            x = tx.tasks.get_state_for_update(first.task_exec_id)
            if attempts.count(first.task_exec_id) == 1:
                barrier.wait(10)  # both hold their first row: each now waits for the other's
            y = tx.tasks.get_state_for_update(second.task_exec_id)
            for state in (x, y):
                tx.tasks.upsert_state(state.evolve(input={"n": state.input["n"] + 1}))

        try:
            provider.run_in_transaction(work)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=unit, args=(a, b)), threading.Thread(target=unit, args=(b, a))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(attempts) == 3, (
        "exactly one of the two should have been chosen as the deadlock victim and retried"
    )
    assert provider.tasks.get_state(a.task_exec_id).input == {"n": 2}
    assert provider.tasks.get_state(b.task_exec_id).input == {"n": 2}
    report(f"deadlock: detected, victim retried, both committed in {time.perf_counter() - started:.2f}s")


# Merge usage ----------------------------------------------------------------------------------------------


def test_merge_usage_from_16_threads_loses_no_tokens(postgres_url: str) -> None:
    with open_provider(with_query(postgres_url, pool_max_size=str(THREADS))) as provider:
        task = counter_task(provider)
        barrier = threading.Barrier(THREADS)
        failures: list[BaseException] = []

        def worker(index: int) -> None:
            # Half the threads spell the provider differently: entries are keyed case-insensitively.
            entry = UsageEntry("OpenAI" if index % 2 else "openai", "gpt-4o", "task", 1, 2, 3)
            barrier.wait(30)
            try:
                for _ in range(ATTEMPTS_PER_WORKER):
                    provider.tasks.merge_usage(task.task_exec_id, UsageSummary((entry,)))
                    provider.workflows.merge_usage(task.workflow_exec_id, UsageSummary((entry,)))
            except BaseException as exc:
                failures.append(exc)

        started = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        elapsed = time.perf_counter() - started
        assert failures == []
        merges = THREADS * ATTEMPTS_PER_WORKER
        for usage in (
            provider.tasks.get_state(task.task_exec_id).usage,
            provider.workflows.get_state(task.workflow_exec_id).usage,
        ):
            assert usage is not None and len(usage.entries) == 1
            (entry,) = usage.entries
            assert (entry.prompt_tokens, entry.completion_tokens, entry.total_tokens) == (
                merges,
                2 * merges,
                3 * merges,
            )
        assert provider.tasks.get_state(task.task_exec_id).version == 1 + merges
        report(f"merge usage: {2 * merges} merges from {THREADS} threads, no token lost, {elapsed:.2f}s")


# Migrations -----------------------------------------------------------------------------------------------


def _open_in_process(url: str, barrier: ProcessBarrier, results: multiprocessing.Queue[object]) -> None:
    try:
        barrier.wait(60)
        with open_provider(url) as provider:
            statuses = provider.migration_status()
        results.put([s.version for s in statuses if s.applied_at is not None])
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_an_empty_schema_at_once_apply_each_migration_exactly_once(
    postgres_url: str, admin: psycopg.Connection[Any]
) -> None:
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES)
    results: multiprocessing.Queue[object] = context.Queue()
    processes = [
        context.Process(target=_open_in_process, args=(postgres_url, barrier, results))
        for _ in range(PROCESSES)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=120) for _ in processes]
    for process in processes:
        process.join(60)
    expected = [m.version for m in load_migrations("postgres")]
    assert outcomes == [expected] * PROCESSES, f"a process failed or saw a partial schema: {outcomes}"
    schema = dict(parse_qsl(urlsplit(postgres_url).query))["options"].split("=", 1)[1]
    rows = admin.execute(f'SELECT version FROM "{schema}".{TABLE} ORDER BY version').fetchall()
    assert [row[0] for row in rows] == expected


# Lost connections -----------------------------------------------------------------------------------------


def test_next_operation_after_the_backend_is_killed_succeeds_on_a_fresh_connection(
    postgres_url: str, admin: psycopg.Connection[Any], app_name: str
) -> None:
    url = with_query(postgres_url, application_name=app_name, pool_min_size="1", pool_max_size="1")
    with open_provider(url) as provider:
        task = counter_task(provider)
        killed = backends(admin, app_name)
        assert len(killed) == 1
        terminate(admin, killed)
        # A plain read is not retried: the pool must notice the dead connection before lending it.
        assert provider.tasks.get_state(task.task_exec_id).input == {"n": 0}
        fresh = backends(admin, app_name)
        assert fresh and not set(fresh) & set(killed)


def test_unit_of_work_interrupted_by_a_killed_backend_is_retried_and_committed_once(
    postgres_url: str, admin: psycopg.Connection[Any], app_name: str
) -> None:
    url = with_query(postgres_url, application_name=app_name, pool_min_size="1", pool_max_size="1")
    with open_provider(url) as provider:
        wf = provider.workflows.upsert_state(WorkflowState("wf-killed", "w"))
        attempts: list[int] = []

        def work(tx: Any) -> int:
            attempts.append(len(attempts) + 1)
            number = attempts[-1]
            tx.tasks.upsert_state(TaskState(f"attempt-{number}", "t", wf.workflow_exec_id, wf.workflow_id))
            if number == 1:
                inside = backends(admin, app_name, state="idle in transaction")
                assert len(inside) == 1
                terminate(admin, inside)
            tx.tasks.upsert_state(TaskState(f"attempt-{number}-b", "t2", wf.workflow_exec_id, wf.workflow_id))
            return number

        assert provider.run_in_transaction(work) == 2
        assert attempts == [1, 2]
        stored = sorted(s.task_exec_id for s in provider.workflows.get_state("wf-killed").tasks.values())
        assert stored == ["attempt-2", "attempt-2-b"], "the interrupted attempt left rows, or the retry twice"


def test_waiting_longer_than_pool_timeout_for_a_connection_is_a_transient_error(postgres_url: str) -> None:
    url = with_query(postgres_url, pool_min_size="1", pool_max_size="1", pool_timeout="0.3")
    with open_provider(url) as provider:
        task = counter_task(provider)
        outcome: list[BaseException] = []

        def reader() -> None:
            try:
                provider.tasks.get_state(task.task_exec_id)
            except BaseException as exc:
                outcome.append(exc)

        with provider.transaction():  # holds the only connection
            started = time.monotonic()
            thread = threading.Thread(target=reader)
            thread.start()
            thread.join(10)
            waited = time.monotonic() - started
        assert len(outcome) == 1 and isinstance(outcome[0], TransientError)
        assert "pool_timeout=0.3" in str(outcome[0])
        assert waited >= 0.25  # it waited pool_timeout, then gave up (the thread ended within join's 10 s)


# Connection failures --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def assert_password_absent(error: BaseException, password: str) -> None:
    """Neither the error nor anything chained to it (printed with its traceback) shows the password."""
    seen: BaseException | None = error
    while seen is not None:
        assert password not in str(seen) and password not in repr(seen), type(seen).__name__
        seen = seen.__cause__ or seen.__context__


def open_failing(url: str, connect_timeout: float) -> tuple[PlanflowError, float]:
    started = time.monotonic()
    with pytest.raises(PlanflowError) as caught:
        open_provider({"url": url, "connect_timeout": connect_timeout})
    return caught.value, time.monotonic() - started


#: A connect_timeout no open that fails at once comes near, even on a loaded machine: the tests below assert
#: which failures are final (never retried until the timeout), not how fast they are.
WAITED_OUT = 60


def test_rejected_login_is_a_config_error_without_the_password(postgres_server_url: str) -> None:
    # A server that trusts its clients (pg_hba "trust") accepts any password for an existing role, so a wrong
    # password cannot be rejected everywhere; a role that does not exist is rejected by every server (one with
    # password authentication rejects it as a failed password).
    password = f"pw-{uuid.uuid4().hex}"
    role = f"planflow_nobody_{uuid.uuid4().hex[:8]}"
    url = with_login(postgres_server_url, user=role, password=password)
    error, elapsed = open_failing(url, connect_timeout=WAITED_OUT)
    assert isinstance(error, ConfigError), repr(error)
    assert role in str(error) and "***" in str(error)
    assert elapsed < WAITED_OUT, "a refused login is final: not tried again until connect_timeout"
    assert_password_absent(error, password)


def test_missing_database_is_a_config_error_without_the_password(postgres_server_url: str) -> None:
    # The server's own password (or, where it asks for none, a made-up one): the login succeeds, the database
    # is what is missing.
    login, password = url_with_password(postgres_server_url)
    name = f"planflow_missing_{uuid.uuid4().hex[:8]}"
    url = with_database(login, name)
    error, elapsed = open_failing(url, connect_timeout=WAITED_OUT)
    assert isinstance(error, ConfigError), repr(error)
    assert f'database "{name}" does not exist' in str(error)
    assert elapsed < WAITED_OUT, "a missing database is final: not tried again until connect_timeout"
    assert_password_absent(error, password)


def test_a_port_where_nothing_listens_fails_without_waiting_out_connect_timeout_or_the_password() -> None:
    password = f"pw-{uuid.uuid4().hex}"
    url = f"postgresql://someone:{password}@127.0.0.1:{free_port()}/db"
    error, elapsed = open_failing(url, connect_timeout=WAITED_OUT)
    assert isinstance(error, TransientError), repr(error)
    assert "refused" in str(error).lower() and "nothing accepts connections" in str(error)
    assert elapsed < WAITED_OUT, f"a refused port was retried until connect_timeout ({elapsed:.1f}s)"
    assert_password_absent(error, password)


def test_a_server_that_never_answers_is_waited_for_until_connect_timeout() -> None:
    # A socket that completes the TCP handshake (the kernel's backlog) but never speaks: a hung host.
    password = f"pw-{uuid.uuid4().hex}"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"postgresql://someone:{password}@127.0.0.1:{silent.getsockname()[1]}/db"
        error, elapsed = open_failing(url, connect_timeout=2)
    assert isinstance(error, TransientError), repr(error)
    assert "connect_timeout=2" in str(error)
    assert elapsed >= 1.5, "a silent server is waited for until connect_timeout (2 s)"
    assert elapsed < WAITED_OUT, "and then given up on, not waited for again and again"
    assert_password_absent(error, password)


def test_password_echoed_by_a_malformed_conninfo_is_scrubbed() -> None:
    password = f"pw-{uuid.uuid4().hex}"
    url = f"postgresql://someone:{password}@127.0.0.1:5432/db?sslmode=bogus-{password}"
    error, _ = open_failing(url, connect_timeout=2)
    assert isinstance(error, ConfigError), repr(error)
    assert_password_absent(error, password)


# Driver details -------------------------------------------------------------------------------------------


def test_50000_ids_are_listed_in_one_statement(postgres_provider: Provider) -> None:
    provider = postgres_provider
    wf = provider.workflows.upsert_state(WorkflowState("wf-many", "w"))
    ids = [f"t{i:05d}" for i in range(50_000)]
    started = time.perf_counter()
    provider.tasks.bulk_upsert(TaskState(i, "t", wf.workflow_exec_id, wf.workflow_id) for i in ids)
    written = time.perf_counter() - started
    started = time.perf_counter()
    with logged_statements() as logged:
        found = provider.tasks.list_by_ids([*ids, "missing-1", "missing-2"])
    listed = time.perf_counter() - started
    assert len(logged) == 1
    assert sorted(s.task_exec_id for s in found) == ids
    report(f"50 000 states: bulk_upsert {written:.2f}s, list_by_ids in one statement {listed:.2f}s")


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("INSERT INTO users VALUES ('u', 'a@b', 'a@b', 'root', now(), now())", ValidationError),
        ("INSERT INTO users (id) VALUES ('u')", ValidationError),
        ("SELECT 'x'::int", ValidationError),
        (
            "INSERT INTO api_keys VALUES ('k', 'ghost', repeat('a', 64), 'pf_', now(), NULL)",
            ForeignKeyViolation,
        ),
        ("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'serialization_failure'; END $$", TransientError),
        ("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'deadlock_detected'; END $$", TransientError),
        ("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'admin_shutdown'; END $$", TransientError),
        ("SELEC 1", PlanflowError),
    ],
)
def test_server_errors_become_the_matching_planflow_error(
    postgres_provider: Provider, sql: str, expected: type[PlanflowError]
) -> None:
    db = database(postgres_provider)
    with pytest.raises(expected) as caught, db.transaction() as conn:
        conn.execute(sql)
    assert isinstance(caught.value.__cause__, psycopg.Error)
    if expected is PlanflowError:
        assert not isinstance(caught.value, ValidationError | TransientError | DuplicateError)


def test_duplicate_key_is_a_duplicate_error(postgres_provider: Provider) -> None:
    db = database(postgres_provider)
    db.run(lambda conn: conn.execute("INSERT INTO users VALUES ('u', 'a@b', 'a@b', 'user', now(), now())"))
    # The same id with another email: only the primary key is violated (PostgreSQL names the first unique
    # index it checks, and which one that is changes when an index is rebuilt).
    with pytest.raises(DuplicateError, match="users_pkey"):
        db.run(
            lambda conn: conn.execute("INSERT INTO users VALUES ('u', 'c@d', 'c@d', 'user', now(), now())")
        )


def test_serialization_failure_retries_the_whole_unit_of_work(postgres_provider: Provider) -> None:
    db = database(postgres_provider)
    attempts: list[int] = []

    def work(conn: SyncConnection) -> int:
        attempts.append(1)
        conn.execute(
            "INSERT INTO users VALUES (?, 'a@b', 'a@b', 'user', now(), now())", [f"u{len(attempts)}"]
        )
        if len(attempts) == 1:
            conn.execute("DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = 'serialization_failure'; END $$")
        return len(attempts)

    assert db.run(work) == 2
    assert [u.id for u in postgres_provider.auth.list_users()] == ["u2"]


def test_placeholders_and_literal_percent_signs_in_sql(postgres_provider: Provider) -> None:
    db = database(postgres_provider)
    assert db.fetch_one("SELECT '100%' || ?, ? || '%s'", ["?", "%"]) == ("100%?", "%%s")
    assert db.fetch_one("SELECT '100%', '?'") == ("100%", "?")


def test_json_loads_as_text_on_planflow_connections_only(
    postgres_provider: Provider, postgres_url: str
) -> None:
    assert database(postgres_provider).fetch_one("SELECT '{\"a\": 1}'::jsonb, '[1]'::json") == (
        '{"a": 1}',
        "[1]",
    )
    # psycopg's global adapters are untouched: other code in the process still gets parsed JSON.
    with psycopg.connect(postgres_url) as other:
        assert other.execute("SELECT '{\"a\": 1}'::jsonb").fetchone() == ({"a": 1},)


def test_timestamps_are_utc_whatever_the_session_time_zone_in_the_url(postgres_url: str) -> None:
    url = with_query(postgres_url, options="-cTimeZone=Asia/Kolkata")
    # PlanflowConfig directly: the URL reaches the driver exactly as written (its options hold a space).
    with open_provider(PlanflowConfig(driver="postgres", url=url)) as provider:
        before = datetime.now(UTC)
        task = counter_task(provider)
        stored = provider.tasks.get_state(task.task_exec_id)
        db = database(provider)
        assert db.fetch_one("SHOW TimeZone") == ("UTC",)
        assert db.fetch_one("SHOW search_path") == (
            dict(parse_qsl(urlsplit(postgres_url).query))["options"][len("-csearch_path=") :],
        )
    assert stored.created_at is not None and stored.created_at.tzinfo is UTC
    assert before <= stored.created_at <= datetime.now(UTC)


@pytest.fixture
def linguistic_database_url(postgres_server_url: str, admin: psycopg.Connection[Any]) -> Iterator[str]:
    """A fresh database whose default collation is linguistic (ICU's en-US, as the official images' en_US.utf8):
    upper and lower case and punctuation sort together there, not by code point."""
    name = f"pf_collate_{uuid.uuid4().hex[:12]}"
    admin.execute(
        f"CREATE DATABASE {name} TEMPLATE template0 ENCODING 'UTF8' LOCALE 'C.UTF-8'"
        " LOCALE_PROVIDER icu ICU_LOCALE 'en-US'"
    )
    try:
        yield with_database(postgres_server_url, name)
    finally:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def test_listings_are_in_code_point_order_under_a_linguistic_database_collation(
    linguistic_database_url: str,
) -> None:
    # Found by the model-based walk in a container of the official-style image (en_US.utf8): users created at the
    # same moment were listed b8fb..., IMP-A there, and IMP-A, b8fb... on SQLite and in Python.
    ids = ["b8fb", "IMP-A", "imp-b", "Zeta", "_x", "émile", "a-1", "a1"]
    moment = datetime(2030, 1, 1, tzinfo=UTC)
    with psycopg.connect(linguistic_database_url) as raw:
        assert raw.execute("SELECT 'b8fb' < 'IMP-A'").fetchone() == (True,)  # the database's own order
    with open_provider(linguistic_database_url) as provider:
        provider.workflows.import_states(
            [WorkflowState("wf", "w", version=1, created_at=moment, updated_at=moment)]
        )
        provider.tasks.import_states(
            TaskState(i, "t", "wf", "w", version=1, created_at=moment, updated_at=moment) for i in ids
        )
        listed = [state.task_exec_id for state in provider.tasks.list_states().items]
        assert listed == sorted(ids)
        first = provider.tasks.list_states(limit=3)
        rest = provider.tasks.list_states(limit=100, cursor=first.next_cursor)
        assert [s.task_exec_id for s in [*first.items, *rest.items]] == sorted(ids)
        newest_first = provider.tasks.list_states(order="desc").items
        assert [s.task_exec_id for s in newest_first] == sorted(ids, reverse=True)
        users = [User(i, f"{i}@x.org", Role.USER, moment, moment) for i in ids]
        provider.auth.import_users(users)
        assert [user.id for user in provider.auth.list_users()] == sorted(ids)
