"""Smoke test of ``benchmarks.observability_bench``: every variant runs both workloads at a tiny size.

No timing is asserted (tiny runs on a shared machine mean nothing); what is proved is that each variant and
workload yields a median, on each driver, and that the report prints the ratios.
"""

from __future__ import annotations

import pytest

from benchmarks import observability_bench

VARIANTS = ["raw", "floor", "planflow", "listener", "otel"]


@pytest.mark.parametrize("driver", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_every_variant_measures_both_workloads(
    driver: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if driver == "postgres":
        monkeypatch.setenv("PLANFLOW_BENCH_POSTGRES_URL", request.getfixturevalue("postgres_server_url"))
    monkeypatch.setattr(observability_bench, "TASKS", 20)
    medians = observability_bench.measure(driver, 30, 1, VARIANTS)
    assert set(medians) == {"get_state", "update_state"}
    assert all(set(times) == set(VARIANTS) and min(times.values()) > 0 for times in medians.values())
    observability_bench.OPERATIONS[0] = 30
    observability_bench.report(driver, medians, medians)
    printed = capsys.readouterr().out
    assert "planflow/raw" in printed and "listener/planflow" in printed and "otel/planflow" in printed
    assert "otel/floor" in printed
