"""Smoke test of ``benchmarks.queue_compare`` (needs the ``bench-compare`` extra; skipped without it).

No timing is asserted: what is proved is that each system drains what it was given (the benchmark checks each
system's own table after every row), that every row has a figure for each system that can run it, and that
the table prints a ratio per row.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import queue_compare


@pytest.mark.postgres
def test_every_system_runs_every_row_and_the_table_prints_ratios(
    monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> None:
    pytest.importorskip("pgqueuer")
    pytest.importorskip("procrastinate")
    pytest.importorskip("asyncpg")
    monkeypatch.setenv("PLANFLOW_BENCH_POSTGRES_URL", postgres_server_url)
    rows = asyncio.run(queue_compare.run(jobs=60, trickle=5))
    assert [row.title for row in rows] == [
        "enqueue",
        "claim + complete, 8 workers, batch 1",
        "claim + complete, 8 workers, batch 20",
        "2 processes x 4 workers, batch 1",
        "trickle pick-up p50",
        "trickle pick-up p99",
    ]
    for row in rows:
        assert row.figures["planflow"] is not None and row.figures["pgqueuer"] is not None
        assert (row.figures["procrastinate"] is None) == (row.title.endswith("batch 20")), row
    table = queue_compare.report(rows, 60, 5)
    assert table.count("\n| ") == len(rows) + 1  # the header and one line per row
