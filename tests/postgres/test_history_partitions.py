"""The run history's time partitions on PostgreSQL (schema 12): created ahead, dropped by ``purge`` without losing
the history of a workflow that survives, never failing a write.

Each test gets a fresh schema with daily partitions. History records are stamped by the database's clock, so to
have records in past partitions a test first replaces the partition that the migration made of the old table
(``before``, empty in a fresh schema) by daily partitions over the last :data:`DAYS` days, then moves a
workflow's records back in time with an UPDATE of ``recorded_at`` (PostgreSQL moves the rows between
partitions) and its ``updated_at`` with them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import planflow.infra.sql.migrations as runner
from planflow import (
    ConfigError,
    NotFoundError,
    PlanflowConfig,
    Provider,
    TaskState,
    TaskStatus,
    WorkflowState,
    open_provider,
)
from planflow.infra.postgres.partitions import Partition, period_start, plan_ahead
from planflow.infra.sql.migrations import load_migrations

pytestmark = pytest.mark.postgres

DAYS = 30


def today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def tables(url: str) -> dict[str, bool]:
    """planflow's history tables of the test's schema, and whether each is attached."""
    with psycopg.connect(url, autocommit=True) as raw:
        rows = raw.execute(
            "SELECT relname, relispartition FROM pg_class WHERE relkind = 'r' AND relname LIKE 'planflow_history_%' "
            "AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
        ).fetchall()
    return dict(rows)


def day_partition(days_ago: int) -> str:
    lo = today() - timedelta(days=days_ago)
    return Partition.of(lo, lo + timedelta(days=1)).name


@pytest.fixture
def url(postgres_url: str) -> str:
    """A migrated schema whose history has daily partitions over the last DAYS days (and ahead)."""
    with open_provider({"driver": "postgres", "url": postgres_url, "history_partition": "day"}):
        pass
    with psycopg.connect(postgres_url, autocommit=True) as raw:
        (before,) = [name for name in tables(postgres_url) if name.startswith("planflow_history_before_")]
        raw.execute(f'DROP TABLE "{before}"')  # empty: a fresh store
        first = min(p.lo for p in map(Partition.parse, tables(postgres_url)) if p is not None and p.lo)
        start = today() - timedelta(days=DAYS)
        while start < first:
            p = Partition.of(start, start + timedelta(days=1))
            raw.execute("SELECT planflow_history_add_partition(%s, %s, %s)", [p.name, p.lo, p.hi])
            start = p.hi
    return postgres_url


@pytest.fixture
def provider(url: str) -> Iterator[Provider]:
    with open_provider({"driver": "postgres", "url": url, "history_partition": "day"}) as opened:
        yield opened


def make_workflow(provider: Provider, wf: str, status: TaskStatus, tasks: int = 3) -> None:
    provider.workflows.upsert_state(WorkflowState(wf, "nightly", TaskStatus.RUNNING))
    for i in range(tasks):
        task = provider.tasks.upsert_state(TaskState(f"{wf}-t{i}", f"s{i}", wf, "nightly"))
        provider.tasks.update_state(task.evolve(status=TaskStatus.SUCCESS), expected_version=task.version)
    provider.workflows.update_status(wf, status)


def backdate(url: str, wf: str, days: int) -> None:
    """Move the workflow's history records and its last update ``days`` back."""
    with psycopg.connect(url, autocommit=True) as raw, raw.transaction():
        raw.execute(
            "UPDATE planflow_history SET recorded_at = recorded_at - make_interval(days => %s) "
            "WHERE workflow_exec_id = %s",
            [days, wf],
        )
        raw.execute(
            "UPDATE workflow_states SET updated_at = updated_at - make_interval(days => %s) "
            "WHERE workflow_exec_id = %s",
            [days, wf],
        )


def test_purge_drops_old_partitions_and_keeps_the_history_of_surviving_workflows(
    url: str, provider: Provider
) -> None:
    make_workflow(provider, "purged-20", TaskStatus.SUCCESS)
    make_workflow(provider, "running-15", TaskStatus.RUNNING)
    make_workflow(provider, "purged-10", TaskStatus.FAILED)
    make_workflow(provider, "recent", TaskStatus.SUCCESS)
    backdate(url, "purged-20", 20)
    backdate(url, "running-15", 15)
    backdate(url, "purged-10", 10)
    survivor = provider.workflows.history("running-15", include_tasks=True)
    recent = provider.workflows.history("recent", include_tasks=True)
    assert len(survivor) == 1 + 3 * 2  # created RUNNING; each task inserted, then SUCCESS

    purged = provider.workflows.purge(finished_before=datetime.now(UTC) - timedelta(days=5))

    assert purged == 2
    names = tables(url)
    assert day_partition(20) not in names and day_partition(10) not in names
    assert names[day_partition(15)] is True  # holds the running workflow's history: kept, attached
    assert provider.workflows.history("running-15", include_tasks=True) == survivor
    assert provider.workflows.history("recent", include_tasks=True) == recent
    for gone in ("purged-20", "purged-10"):
        with pytest.raises(NotFoundError):
            provider.workflows.history(gone)
    with psycopg.connect(url, autocommit=True) as raw:
        orphans = raw.execute(
            "SELECT count(*) FROM planflow_history h WHERE NOT EXISTS "
            "(SELECT 1 FROM workflow_states w WHERE w.workflow_exec_id = h.workflow_exec_id)"
        ).fetchone()
    assert orphans == (0,)


def test_a_partition_holding_a_purged_and_a_surviving_workflow_is_kept_and_purged_by_rows(
    url: str, provider: Provider
) -> None:
    make_workflow(provider, "old-done", TaskStatus.SUCCESS)
    make_workflow(provider, "old-running", TaskStatus.RUNNING)
    backdate(url, "old-done", 12)
    backdate(url, "old-running", 12)
    survivor = provider.workflows.history("old-running", include_tasks=True)

    assert provider.workflows.purge(finished_before=datetime.now(UTC) - timedelta(days=5)) == 1

    assert tables(url)[day_partition(12)] is True
    assert provider.workflows.history("old-running", include_tasks=True) == survivor
    with psycopg.connect(url, autocommit=True) as raw:
        left = raw.execute(f'SELECT DISTINCT workflow_exec_id FROM "{day_partition(12)}"').fetchall()
    assert left == [("old-running",)]


def test_a_detached_partition_of_a_workflow_that_survived_is_attached_again_by_the_next_purge(
    url: str, provider: Provider
) -> None:
    """An interrupted purge (detached, not settled) while the workflow was reopened: nothing is lost."""
    make_workflow(provider, "reopened", TaskStatus.FAILED)
    backdate(url, "reopened", 8)
    provider.workflows.resume("reopened")
    before = provider.workflows.history("reopened", include_tasks=True)
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute("SELECT planflow_history_detach(%s)", [day_partition(8)])
    assert tables(url)[day_partition(8)] is False

    assert provider.workflows.purge(finished_before=datetime.now(UTC) - timedelta(days=5)) == 0

    assert tables(url)[day_partition(8)] is True
    assert provider.workflows.history("reopened", include_tasks=True) == before


def test_writes_with_no_partition_land_in_the_default_one_and_migrate_moves_them(url: str) -> None:
    # As if no migrate or purge had run for longer than partitions are created ahead: none from today on.
    with psycopg.connect(url, autocommit=True) as raw:
        for name in tables(url):
            partition = Partition.parse(name)
            if partition is not None and partition.lo is not None and partition.lo >= today():
                raw.execute(f'DROP TABLE "{name}"')
    with open_provider(
        {"driver": "postgres", "url": url, "history_partition": "day", "auto_migrate": False}
    ) as p:
        make_workflow(p, "today", TaskStatus.SUCCESS)
        written = p.workflows.history("today", include_tasks=True)
    with psycopg.connect(url, autocommit=True) as raw:
        assert raw.execute("SELECT count(*) FROM planflow_history_default").fetchone() == (len(written),)

    with open_provider({"driver": "postgres", "url": url, "history_partition": "day"}) as p:  # migrate
        assert p.workflows.history("today", include_tasks=True) == written
    with psycopg.connect(url, autocommit=True) as raw:
        assert raw.execute("SELECT count(*) FROM planflow_history_default").fetchone() == (0,)
        moved = raw.execute(f'SELECT count(*) FROM "{day_partition(0)}"').fetchone()
    assert moved == (len(written),)


def test_writes_during_a_purge_that_drops_partitions_never_fail(url: str, provider: Provider) -> None:
    for days in range(6, 26):
        make_workflow(provider, f"old-{days}", TaskStatus.SUCCESS, tasks=2)
        backdate(url, f"old-{days}", days)
    errors: list[BaseException] = []
    written: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        with open_provider({"driver": "postgres", "url": url, "history_partition": "day"}) as mine:
            i = 0
            while not stop.is_set() or i < 20:
                try:
                    make_workflow(mine, f"live-{i}", TaskStatus.SUCCESS, tasks=1)
                    written.append(f"live-{i}")
                except BaseException as exc:
                    errors.append(exc)
                    return
                i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        purged = provider.workflows.purge(finished_before=datetime.now(UTC) - timedelta(days=5))
    finally:
        stop.set()
        thread.join()

    assert errors == []
    assert purged == 20
    names = tables(url)
    assert all(day_partition(days) not in names for days in range(6, 26))
    for wf in written:
        assert len(provider.workflows.history(wf, include_tasks=True)) == 1 + 2 + 1


def test_history_partition_accepts_day_and_week_only() -> None:
    assert PlanflowConfig(history_partition="day").history_partition == "day"
    with pytest.raises(ConfigError, match="history_partition must be one of 'day', 'week', got 'month'"):
        PlanflowConfig(history_partition="month")  # pyright: ignore[reportArgumentType]


def test_partitions_are_planned_without_gaps_up_to_the_horizon() -> None:
    now = datetime(2026, 12, 9, 15, 30, tzinfo=UTC)  # a Wednesday
    assert period_start(now, "week") == datetime(2026, 12, 7, tzinfo=UTC)
    weeks = plan_ahead(datetime(2026, 11, 20, tzinfo=UTC), now, "week")
    assert [(p.lo, p.hi) for p in weeks] == [
        (datetime(2026, 11, 20, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC)),  # one catch-up partition
        (datetime(2026, 12, 7, tzinfo=UTC), datetime(2026, 12, 14, tzinfo=UTC)),
        (datetime(2026, 12, 14, tzinfo=UTC), datetime(2026, 12, 21, tzinfo=UTC)),
        (datetime(2026, 12, 21, tzinfo=UTC), datetime(2026, 12, 28, tzinfo=UTC)),
    ]
    days = plan_ahead(datetime(2026, 12, 10, tzinfo=UTC), now, "day")
    assert days[0].name == "planflow_history_20261210_20261211"
    assert days[-1].hi == datetime(2026, 12, 17, tzinfo=UTC)
    assert plan_ahead(datetime(2026, 12, 31, tzinfo=UTC), now, "day") == []


def test_a_populated_history_at_schema_11_is_converted_in_place(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old table becomes the first partition: every record reads back the same, ids continue after the old
    ones, the triggers write into the partitioned table, and purge still removes an old workflow's records."""
    monkeypatch.setattr(runner, "load_migrations", lambda driver: load_migrations(driver)[:11])
    settings = {"driver": "postgres", "url": postgres_url, "history_partition": "week"}
    with open_provider(settings) as old:
        make_workflow(old, "kept", TaskStatus.RUNNING)
        make_workflow(old, "finished", TaskStatus.SUCCESS)
        backdate(postgres_url, "finished", 40)
        before = {wf: old.workflows.history(wf, include_tasks=True) for wf in ("kept", "finished")}
    assert "planflow_history_default" not in tables(postgres_url)
    monkeypatch.undo()

    with open_provider(settings) as provider:
        assert {wf: provider.workflows.history(wf, include_tasks=True) for wf in before} == before
        names = tables(postgres_url)
        assert names["planflow_history_default"] is True
        assert [n for n in names if n.startswith("planflow_history_before_")] != []
        assert len(names) >= 4  # before, default, and weeks ahead
        newest = max(r.history_id for records in before.values() for r in records)
        provider.workflows.update_status("kept", TaskStatus.PAUSED)
        added = provider.workflows.history("kept")[-1]
        assert added.history_id > newest and added.to_status is TaskStatus.PAUSED

        assert provider.workflows.purge(finished_before=datetime.now(UTC) - timedelta(days=5)) == 1
        with pytest.raises(NotFoundError):
            provider.workflows.history("finished")
        assert provider.workflows.history("kept", include_tasks=True)[:-1] == before["kept"]


def test_a_purge_inside_a_transaction_deletes_rows_and_leaves_the_partitions(
    url: str, provider: Provider
) -> None:
    """Detaching needs transactions of its own: inside the caller's, the purge deletes the records by cascade."""
    make_workflow(provider, "old", TaskStatus.SUCCESS)
    backdate(url, "old", 9)
    with provider.transaction() as tx:
        assert tx.workflows.purge(finished_before=datetime.now(UTC) - timedelta(days=5)) == 1
    assert tables(url)[day_partition(9)] is True
    with psycopg.connect(url, autocommit=True) as raw:
        left = raw.execute(f'SELECT count(*) FROM "{day_partition(9)}"').fetchone()
    assert left == (0,)
    with pytest.raises(NotFoundError):
        provider.workflows.history("old")
