"""Interleaved timing: every implementation of a workload runs in the same process, taking turns.

Repetition ``r`` runs the implementations in an order rotated by ``r``, so slow drift of a noisy machine
(other processes, thermal state, the database's background work) spreads over all of them instead of
landing on whichever ran last. Only medians are reported.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from benchmarks.databases import BenchDatabase, DatabaseFactory
from benchmarks.stores.base import TaskStore
from benchmarks.workloads import Workload, WorkloadSpec

Progress = Callable[[str], None]


@dataclass(slots=True)
class Measurement:
    """The timings of one workload at one size on one driver, per implementation (variant)."""

    number: int
    key: str
    title: str
    driver: str
    size: int
    group: str
    samples: dict[str, list[float]] = field(default_factory=dict[str, list[float]])
    operations: dict[str, int] = field(default_factory=dict[str, int])
    counts: dict[str, dict[str, list[int]]] = field(default_factory=dict[str, dict[str, list[int]]])

    def median(self, variant: str) -> float:
        """Median seconds of ``variant``."""
        return statistics.median(self.samples[variant])

    def ratio(self, numerator: str, denominator: str) -> float:
        """Median of ``numerator`` over median of ``denominator``."""
        return self.median(numerator) / self.median(denominator)

    def paired_ratio(self, numerator: str, denominator: str) -> float:
        """Median of the per-repetition ratios (each pair ran back to back)."""
        pairs = zip(self.samples[numerator], self.samples[denominator], strict=True)
        return statistics.median(a / b for a, b in pairs)

    def to_json(self) -> dict[str, object]:
        """A JSON-ready summary with the raw samples."""
        return {
            "number": self.number,
            "key": self.key,
            "title": self.title,
            "driver": self.driver,
            "size": self.size,
            "group": self.group,
            "median_seconds": {v: self.median(v) for v in self.samples},
            "samples_seconds": self.samples,
            "operations": self.operations,
            "counts": self.counts,
        }


def rotated(items: Sequence[str], turn: int) -> list[str]:
    """``items`` rotated left by ``turn``."""
    shift = turn % len(items)
    return [*items[shift:], *items[:shift]]


def timed(call: Callable[[], object]) -> float:
    """Seconds ``call`` took, after a full collection so garbage of earlier runs is not billed to it."""
    gc.collect()
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@dataclass(frozen=True, slots=True)
class Extra:
    """More rounds for cheap workloads: medians of more samples resist a noisy machine better.

    Rounds continue past the minimum while the timed rounds so far took less than ``budget`` seconds, up to
    ``most`` rounds in all.
    """

    most: int
    budget: float


def _another_round(done: int, warmup: int, least: int, extra: Extra | None, spent: float) -> bool:
    timed_rounds = done - warmup
    if timed_rounds < least:
        return True
    return extra is not None and timed_rounds < extra.most and spent < extra.budget


def run_sql_workload(
    factory: DatabaseFactory,
    spec: WorkloadSpec,
    *,
    implementations: Sequence[str],
    repetitions: int,
    warmup: int,
    extra: Extra | None = None,
    progress: Progress | None = None,
) -> Measurement:
    """Time ``spec`` for each implementation, each on its own fresh database, interleaved.

    At least ``repetitions`` timed rounds run; ``extra`` adds rounds while the workload is cheap.
    """
    measurement = Measurement(spec.number, spec.key, spec.title, factory.driver, spec.size, spec.group)
    databases: dict[str, BenchDatabase] = {}
    stores: dict[str, TaskStore] = {}
    workloads: dict[str, Workload] = {}
    try:
        for implementation in implementations:
            database = databases[implementation] = factory.create(f"w{spec.number}-{implementation}")
            workload = workloads[implementation] = spec.make()
            with database.open_provider() as provider:
                workload.seed(provider)
            database.maintain()
            stores[implementation] = database.open_store(implementation)
            measurement.samples[implementation] = []
            measurement.counts[implementation] = {}
        repetition, timed_since = 0, time.perf_counter()
        while _another_round(repetition, warmup, repetitions, extra, time.perf_counter() - timed_since):
            if repetition == warmup:
                timed_since = time.perf_counter()
            for implementation in rotated(implementations, repetition):
                workload, store = workloads[implementation], stores[implementation]
                workload.before(databases[implementation])
                outcome = None

                def once(workload: Workload = workload, store: TaskStore = store) -> None:
                    nonlocal outcome
                    outcome = workload.run(store)

                seconds = timed(once)
                assert outcome is not None
                if repetition >= warmup:
                    measurement.samples[implementation].append(seconds)
                    measurement.operations[implementation] = outcome.operations
                    for name, value in outcome.counts.items():
                        measurement.counts[implementation].setdefault(name, []).append(value)
            if progress is not None:
                label = "warm-up" if repetition < warmup else f"rep {repetition - warmup + 1}"
                progress(f"{factory.driver} w{spec.number} {spec.title}: {label}")
            repetition += 1
    finally:
        for store in stores.values():
            store.close()
        for workload in workloads.values():
            workload.close()
        for database in databases.values():
            database.drop()
    return measurement
