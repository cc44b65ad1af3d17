"""Smoke test of ``benchmarks.cli_tree_bench``: it runs the command and reports one timing per run (none is
asserted: the timing of a run on a shared machine is the benchmark's business, not a test's)."""

from __future__ import annotations

from benchmarks import cli_tree_bench


def test_the_tree_benchmark_times_each_run_of_the_command() -> None:
    timings = cli_tree_bench.time_tree(200, 2)

    assert len(timings) == 2 and all(t > 0 for t in timings)
