"""Smoke test of ``benchmarks.history_partitions``: both variants purge at a small size and print their figures.

No timing or WAL figure is asserted (tiny runs on a shared server mean nothing); what is proved is that both
variants purge every finished workflow and leave none of their history records (the benchmark checks that
itself), that the writer beside the purge made writes, and that the conversion migrates a populated store.
"""

from __future__ import annotations

import pytest

from benchmarks import history_partitions


@pytest.mark.postgres
def test_purge_by_rows_and_by_partitions_and_the_conversion_run(
    capsys: pytest.CaptureFixture[str], postgres_server_url: str
) -> None:
    results = history_partitions.purge(postgres_server_url, rows=3_000, days=3)
    assert [r.variant for r in results] == ["rows", "partitions"]
    assert all(r.purged == 3 and r.writes > 0 for r in results)
    history_partitions.convert(postgres_server_url, rows=2_000)
    out = capsys.readouterr().out
    assert "max write ms" in out and "migration to schema 12 of 2,000 history records" in out
