"""History in time partitions (issue 31): purge by dropping partitions against purge by deleting rows.

    .venv/bin/python -m benchmarks.history_partitions purge [--rows 200000] [--days 10]   # from the checkout's root
    .venv/bin/python -m benchmarks.history_partitions convert [--rows 1000000]

Both run on a private PostgreSQL server (``tests/faults/cluster.py``: fsync on, created in a temporary directory
and removed after), so that the WAL counted is planflow's alone; ``--url URL`` runs on that server instead (its
WAL figure then includes whatever else the server did meanwhile).

``purge``: the same store twice, in a schema each: ``--rows`` history records of finished workflows spread over
``--days`` past days (1 000 records per workflow, written by plain SQL), plus 20 running workflows with recent
history. "rows" is the store at schema 11 (history not partitioned: the purge's cascade deletes every record);
"partitions" the store at schema 12 with daily partitions (the purge drops them). For each: the time of
``workflows.purge(finished_before=now - 1 day)``, the WAL it wrote (``pg_current_wal_lsn()`` before and after),
the history's size on disk after (every partition's, with indexes and TOAST), and the slowest of the writes
that a thread made meanwhile (``update_status`` of a running workflow, each of which appends a history record).

``convert``: a store at schema 11 with ``--rows`` history records, then the migration to schema 12 (what it
locks for: its duration).
"""

from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg

import planflow.infra.sql.migrations as runner
from planflow import TaskStatus, WorkflowState, open_provider
from planflow.infra.postgres.partitions import Partition
from planflow.infra.sql.migrations import load_migrations

#: The last schema without partitions.
UNPARTITIONED = 11
PER_WORKFLOW = 1_000
LIVE = 20


@dataclass(frozen=True, slots=True)
class Result:
    variant: str
    rows: int
    purged: int
    seconds: float
    wal_bytes: int
    size_after: int
    writes: int
    max_write_ms: float


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """The given server, else a private one for the run."""
    if url:
        yield url
        return
    from tests.faults.cluster import Cluster

    cluster = Cluster({"max_wal_size": "4GB", "shared_buffers": "128MB"})
    cluster.start()
    try:
        yield cluster.url()
    finally:
        cluster.destroy()


@contextmanager
def schema(base: str) -> Iterator[str]:
    """A fresh schema on ``base``, dropped after; its URL."""
    name = "pf_bench_" + uuid.uuid4().hex[:10]
    with psycopg.connect(base, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {name}")
    try:
        yield f"{base}{'&' if '?' in base else '?'}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(base, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {name} CASCADE")


@contextmanager
def schema_version(version: int | None) -> Iterator[None]:
    """Until the block ends, the migration runner knows the migrations up to ``version`` (None: all)."""
    real = runner.load_migrations
    if version is not None:
        runner.load_migrations = lambda driver: real(driver)[:version]
    try:
        yield
    finally:
        runner.load_migrations = real


def config(url: str) -> dict[str, object]:
    return {"driver": "postgres", "url": url, "history_partition": "day"}


def daily_partitions(url: str, days: int) -> None:
    """Replace the partition the migration made of the (empty) old table by daily ones over ``days`` days."""
    with psycopg.connect(url, autocommit=True) as raw:
        names = [
            str(r[0])
            for r in raw.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'planflow_history_%' "
                "AND relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = current_schema())"
            ).fetchall()
        ]
        first = min(p.lo for p in map(Partition.parse, names) if p is not None and p.lo is not None)
        for name in names:
            if name.startswith("planflow_history_before_"):
                raw.execute(f'DROP TABLE "{name}"')
        start = first - timedelta(days=days + 3)
        while start < first:
            p = Partition.of(start, start + timedelta(days=1))
            raw.execute("SELECT planflow_history_add_partition(%s, %s, %s)", [p.name, p.lo, p.hi])
            start = p.hi


def fill(url: str, rows: int, days: int) -> None:
    """``rows`` history records of finished workflows over the last ``days`` days, and the live workflows."""
    workflows = max(1, rows // PER_WORKFLOW)
    with psycopg.connect(url, autocommit=True) as raw:
        raw.execute(
            "INSERT INTO workflow_states (workflow_exec_id, workflow_id, status, version, created_at, updated_at) "
            "SELECT 'old-' || i, 'bench', 'SUCCESS', 1, now() - make_interval(days => 2 + i %% %s), "
            "now() - make_interval(days => 2 + i %% %s) FROM generate_series(0, %s) i",
            [days, days, workflows - 1],
        )
        # The trigger wrote one record per workflow, now: moved back to the workflow's day.
        raw.execute(
            "UPDATE planflow_history h SET recorded_at = w.updated_at FROM workflow_states w "
            "WHERE w.workflow_exec_id = h.workflow_exec_id"
        )
        raw.execute(
            "INSERT INTO planflow_history (recorded_at, entity, entity_id, workflow_exec_id, from_status, "
            "to_status, version) SELECT now() - make_interval(days => 2 + (i / %s) %% %s, secs => i %% 3600), "
            "'task', 'task-' || i, 'old-' || (i / %s), 'RUNNING', 'SUCCESS', 2 "
            "FROM generate_series(0, %s) i",
            [PER_WORKFLOW, days, PER_WORKFLOW, rows - workflows - 1],
        )
        raw.execute("ANALYZE")
    with open_provider(config(url)) as provider:
        for i in range(LIVE):
            provider.workflows.upsert_state(WorkflowState(f"live-{i}", "bench", TaskStatus.RUNNING))


def history_size(raw: psycopg.Connection) -> int:
    row = raw.execute(
        "SELECT CASE WHEN relkind = 'p' THEN (SELECT sum(pg_total_relation_size(relid)) "
        "FROM pg_partition_tree('planflow_history')) ELSE pg_total_relation_size(oid) END "
        "FROM pg_class WHERE oid = 'planflow_history'::regclass"
    ).fetchone()
    assert row is not None
    return int(row[0])


def wal(raw: psycopg.Connection) -> int:
    row = raw.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def measure(url: str, variant: str, rows: int) -> Result:
    """Purge with a writer beside it; the figures of :class:`Result`."""
    stop = threading.Event()
    latencies: list[float] = []

    def writer() -> None:
        with open_provider(config(url)) as mine:
            statuses = (TaskStatus.PAUSED, TaskStatus.RUNNING)
            i = 0
            while not stop.is_set():
                started = time.perf_counter()
                mine.workflows.update_status(f"live-{i % LIVE}", statuses[(i // LIVE) % 2])
                latencies.append(time.perf_counter() - started)
                i += 1

    with open_provider(config(url)) as provider, psycopg.connect(url, autocommit=True) as raw:
        thread = threading.Thread(target=writer)
        thread.start()
        time.sleep(0.5)  # the writer is running before the purge starts
        before = wal(raw)
        started = time.perf_counter()
        purged = provider.workflows.purge(finished_before=datetime.now(UTC) - timedelta(days=1))
        seconds = time.perf_counter() - started
        written = wal(raw) - before
        stop.set()
        thread.join()
        size = history_size(raw)
        left = raw.execute(
            "SELECT count(*) FROM planflow_history WHERE workflow_exec_id LIKE 'old-%'"
        ).fetchone()
    assert left == (0,), f"{variant}: {left} records of purged workflows left"
    return Result(variant, rows, purged, seconds, written, size, len(latencies), max(latencies) * 1000)


def purge(base: str, rows: int, days: int) -> list[Result]:
    results: list[Result] = []
    for variant in ("rows", "partitions"):
        with schema(base) as url:
            with schema_version(UNPARTITIONED if variant == "rows" else None), open_provider(config(url)):
                pass
            if variant == "partitions":
                daily_partitions(url, days)
            with schema_version(UNPARTITIONED if variant == "rows" else None):
                fill(url, rows, days)
                results.append(measure(url, variant, rows))
    print(
        f"purge of {rows:,} history records over {days} days (machine shared and loaded: compare within the run)"
    )
    print(f"{'variant':<12}{'purged wf':>10}{'seconds':>10}{'WAL MB':>10}{'size after MB':>15}{'writes':>8}"
          f"{'max write ms':>14}")  # fmt: skip
    for r in results:
        print(
            f"{r.variant:<12}{r.purged:>10}{r.seconds:>10.2f}{r.wal_bytes / 2**20:>10.1f}"
            f"{r.size_after / 2**20:>15.1f}{r.writes:>8}{r.max_write_ms:>14.1f}"
        )
    return results


def convert(base: str, rows: int) -> float:
    """Seconds the migration of a store of ``rows`` history records to schema 12 took (and locked)."""
    with schema(base) as url:
        with schema_version(UNPARTITIONED):
            with open_provider(config(url)):
                pass  # migrated to schema 11
            fill(url, rows, 10)
        started = time.perf_counter()
        with open_provider(config(url)) as provider:
            seconds = time.perf_counter() - started
            assert len(provider.migration_status()) == len(load_migrations("postgres"))
    print(f"migration to schema 12 of {rows:,} history records: {seconds:.2f} s (open and migrate)")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["purge", "convert"])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--url", default=None, help="a server to use instead of a private one")
    args = parser.parse_args()
    with server(args.url) as base:
        if args.command == "purge":
            purge(base, args.rows, args.days)
        else:
            convert(base, args.rows)


if __name__ == "__main__":
    main()
