"""Commit tokens stay bounded: every process deletes old ones, a bounded, indexed batch at a time (issue 24.6).

Tokens used to be deleted only every 1 000th multi-statement unit of one process, with no index on their time:
short-lived processes never deleted any, and 3 001 tokens older than an hour stayed. Now a process deletes up
to 1 000 expired tokens with its first write, and again every 128 writes, through an index on ``created_at``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import psycopg
import pytest

from planflow import WorkflowState, open_provider
from planflow.infra.postgres.commits import DELETE_OLD_TOKENS, TOKEN_CLEANUP_BATCH
from planflow.infra.postgres.connection import to_pyformat

pytestmark = pytest.mark.postgres

ONE_WRITE = textwrap.dedent(
    """
    import sys
    from planflow import WorkflowState, open_provider
    with open_provider(sys.argv[1]) as provider:
        provider.workflows.update_status("wf", "RUNNING")
    """
)


def tokens(url: str) -> tuple[int, int]:
    """(tokens older than an hour, younger ones)."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE created_at < now() - interval '1 hour'), "
            "count(*) FILTER (WHERE created_at >= now() - interval '1 hour') FROM planflow_commits"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def test_short_lived_processes_delete_old_tokens_in_bounded_batches_and_keep_young_ones(
    postgres_url: str,
) -> None:
    with open_provider(postgres_url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "w"))
    old = 3 * TOKEN_CLEANUP_BATCH + 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO planflow_commits (created_at) SELECT now() - interval '2 hours' FROM generate_series(1, %s)",
            [old],
        )
        conn.execute("INSERT INTO planflow_commits (created_at) SELECT now() FROM generate_series(1, 50)")
    before_old, before_young = tokens(postgres_url)
    assert before_old == old

    removed: list[int] = []
    for _ in range(4):  # each a process of its own, writing once and exiting
        done = subprocess.run(
            [sys.executable, "-c", ONE_WRITE, postgres_url], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        now_old, _ = tokens(postgres_url)
        removed.append(before_old - now_old)
        before_old = now_old

    # One bounded batch per process: never more than TOKEN_CLEANUP_BATCH at once, and all gone after four.
    assert removed == [TOKEN_CLEANUP_BATCH, TOKEN_CLEANUP_BATCH, TOKEN_CLEANUP_BATCH, 1]
    after_old, after_young = tokens(postgres_url)
    assert after_old == 0
    assert after_young >= before_young  # young tokens (and the four writes' own) stay


def test_the_cleanup_reads_the_created_at_index(postgres_url: str) -> None:
    with open_provider(postgres_url) as provider:
        provider.workflows.upsert_state(WorkflowState("wf", "w"))
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO planflow_commits (created_at) SELECT now() - (n || ' seconds')::interval "
            "FROM generate_series(1, 20000) n"
        )
        conn.execute("ANALYZE planflow_commits")
        plan = "\n".join(
            row[0] for row in conn.execute(b"EXPLAIN " + to_pyformat(DELETE_OLD_TOKENS)).fetchall()
        )
    assert "planflow_commits_created" in plan, plan
