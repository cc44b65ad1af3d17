"""Small interleaved comparisons for the focused benchmarks (hot paths, async, claims, listing, observability).

Each variant is a callable doing one round of work; :func:`interleave` runs the variants in rotated order,
round after round, so that drift of a shared machine spreads over all of them, and reports medians (and p99s of
per-call latencies where a variant records them). Ratios of medians from one run are what to read.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psycopg
from psycopg import sql

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


def postgres_base_url() -> str:
    """The server the benchmarks use (``PLANFLOW_BENCH_POSTGRES_URL``, else the test server's URL)."""
    return (
        os.environ.get("PLANFLOW_BENCH_POSTGRES_URL")
        or os.environ.get("PLANFLOW_TEST_POSTGRES_URL")
        or DEFAULT_POSTGRES_URL
    )


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL selecting a fresh schema of the benchmark server, dropped afterwards."""
    base = postgres_base_url()
    schema = f"pfbench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def sqlite_file() -> Iterator[str]:
    """A path for a fresh SQLite file, its folder removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="pfbench-") as folder:
        yield os.path.join(folder, "bench.db")


@dataclass
class Result:
    """Seconds per round of every variant, and per-call latencies where recorded."""

    rounds: dict[str, list[float]] = field(default_factory=dict[str, list[float]])
    latencies: dict[str, list[float]] = field(default_factory=dict[str, list[float]])

    def median(self, variant: str) -> float:
        """Median seconds per round."""
        return statistics.median(self.rounds[variant])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Ratio of the two variants' medians."""
        return self.median(numerator) / self.median(denominator)

    def percentile(self, variant: str, fraction: float) -> float:
        """A percentile (0..1) of the per-call latencies recorded for ``variant``."""
        values = sorted(self.latencies[variant])
        return values[min(len(values) - 1, int(fraction * len(values)))]


def interleave(
    variants: dict[str, Callable[[], object]],
    *,
    rounds: int = 7,
    warmup: int = 1,
    before: Callable[[], None] | None = None,
) -> Result:
    """Run every variant ``rounds`` times in rotated order (after ``warmup`` untimed rounds)."""
    result = Result({name: [] for name in variants})
    names = list(variants)
    for turn in range(warmup + rounds):
        order = names[turn % len(names) :] + names[: turn % len(names)]
        for name in order:
            if before is not None:
                before()
            started = time.perf_counter()
            variants[name]()
            elapsed = time.perf_counter() - started
            if turn >= warmup:
                result.rounds[name].append(elapsed)
    return result


def ms(seconds: float) -> str:
    """Seconds as milliseconds, three significant figures."""
    return f"{seconds * 1000:.3g} ms"


def us(seconds: float) -> str:
    """Seconds as microseconds."""
    return f"{seconds * 1e6:.1f} µs"
