"""Smoke test of ``benchmarks.retention_bench``: each measurement runs at a small size and prints its line.

No timing is asserted (tiny runs on a shared machine mean nothing); what is proved is that every variant
returns a full page, that the purge variants delete what they should, and that the report is printed.
"""

from __future__ import annotations

import pytest

from benchmarks import retention_bench


def test_sqlite_listing_and_purge_print_their_ratios(capsys: pytest.CaptureFixture[str]) -> None:
    retention_bench.sqlite_listing([500, 1_000], calls=3)
    retention_bench.sqlite_purge(workflows=2, rounds=1)
    out = capsys.readouterr().out
    assert "planflow/raw" in out and "target <= 2" in out and "rows/s" in out


@pytest.mark.postgres
def test_postgres_listing_and_purge_print_their_ratios(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, postgres_server_url: str
) -> None:
    monkeypatch.setenv("PLANFLOW_BENCH_POSTGRES_URL", postgres_server_url)
    retention_bench.postgres_listing([500, 1_000], calls=3)
    retention_bench.postgres_purge(workflows=2, rounds=1)
    out = capsys.readouterr().out
    assert "planflow/raw" in out and "target <= 2" in out and "rows/s" in out
